"""Arrow arrays built from buffers, never through ``pa.array``.

Why: ``pa.array`` (whatever its input: list or numpy array) first asks pyarrow's pandas shim whether the
input is a pandas object, and that imports pandas, about 0.3 s per process. Conversion never needs pandas,
yet every run and every forked worker would pay for it. The builders here hand Arrow its buffers
(``pa.Array.from_buffers``, ``pa.py_buffer``, ``pa.nulls``), which do not touch the shim.

Each builder gives an array equal (``Array.equals``) to ``pa.array(values, type)``. Inputs outside the
simple cases they are made for (values of unexpected Python types, integers out of the type's range,
strings or bytes past the 2**31 - 1 bytes int32 offsets can address) go to ``pa.array`` itself: it knows
every conversion rule and raises the errors callers expect, so the result (or the error) is the same,
and only those rare inputs pay for the pandas import. Correctness over speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from operator import is_not
from typing import Any

import numpy as np
import pyarrow as pa

# The largest offset an int32-offset array (string, binary, list) can hold: past it, pa.array decides.
OFFSET_LIMIT = 2**31 - 1

_NONE = type(None)
_FLOAT_EXACT = 2**53  # integers beyond this are not exactly representable as float64: pa.array raises
_INT_RANGE = {pa.int32(): (np.int32, -(2**31), 2**31 - 1), pa.int64(): (np.int64, -(2**63), 2**63 - 1)}


def _fallback(values: Any, type_: pa.DataType) -> pa.Array:
    """``pa.array``: for the inputs the builders leave to it (see the module docstring)."""
    return pa.array(values, type_)


def _as_list(values: Sequence[Any]) -> list[Any]:
    return values if isinstance(values, list) else list(values)


def _all_none(values: list[Any]) -> bool:
    """Whether every value is None (a column a reference-mode run leaves empty); quick to say no."""
    try:
        if any(values):
            return False
    except ValueError:  # a numpy array has no truth value: not None either
        return False
    return values.count(None) == len(values)  # (all falsy: none is an array that == answers elementwise)


def _validity(values: list[Any], nulls: int) -> pa.Buffer | None:
    """The validity bitmap (bit set = value present) of ``values``, or None when nothing is null."""
    if not nulls:
        return None
    present = np.fromiter(map(is_not, values, [None] * len(values)), bool, len(values))
    return pa.py_buffer(np.packbits(present, bitorder="little"))


def _offset_buffer(lengths: Any) -> pa.Buffer:
    """int32 offsets (n + 1 values, from 0) of items of the given lengths; the caller checks the total."""
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=out[1:])
    return pa.py_buffer(out)


def offsets(lengths: Sequence[int] | np.ndarray) -> pa.Array:
    """The int32 offsets array of items of the given lengths (what ``ListArray.from_arrays`` takes)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if int(lengths.sum()) > OFFSET_LIMIT:
        raise OverflowError(f"{int(lengths.sum())} items do not fit int32 offsets")
    return pa.Array.from_buffers(pa.int32(), len(lengths) + 1, [None, _offset_buffer(lengths)])


def _numpy_numbers(arr: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A number array from a 1-d numpy array (no nulls), cast as ``pa.array`` casts it (safely)."""
    if arr.ndim != 1:
        return _fallback(arr, type_)
    if type_ == pa.float64() and arr.dtype.kind == "f" and arr.dtype.itemsize <= 8:
        data = arr.astype(np.float64, copy=False)  # float16/32 widen exactly
    elif type_ in _INT_RANGE and arr.dtype.kind in "iu":
        np_type, low, high = _INT_RANGE[type_]
        if arr.size and (int(arr.min()) < low or int(arr.max()) > high):
            return _fallback(arr, type_)  # raises ArrowInvalid, as pa.array does
        data = arr.astype(np_type, copy=False)
    else:
        return _fallback(arr, type_)
    return pa.Array.from_buffers(type_, len(data), [None, pa.py_buffer(np.ascontiguousarray(data))])


def numbers(values: Sequence[int | float | None] | np.ndarray, type_: pa.DataType) -> pa.Array:
    """An int32, int64 or float64 array from a numpy array or a list that may hold None (null).

    Lists must hold Python ints (and, for float64, floats); anything else (bools, numpy scalars, strings)
    goes to ``pa.array``. NaN stays a value, as in ``pa.array``, not a null."""
    if isinstance(values, np.ndarray):
        return _numpy_numbers(values, type_)
    values = _as_list(values)
    n = len(values)
    if _all_none(values):
        return pa.nulls(n, type_)
    kinds = set(map(type, values))
    has_none = _NONE in kinds
    kinds.discard(_NONE)
    is_float = type_ == pa.float64()
    if not (kinds <= ({float, int} if is_float else {int}) and (is_float or type_ in _INT_RANGE)):
        return _fallback(values, type_)
    nulls = values.count(None) if has_none else 0
    filled = [0 if v is None else v for v in values] if nulls else values
    if is_float and int in kinds and any(type(v) is int and abs(v) > _FLOAT_EXACT for v in filled):
        return _fallback(values, type_)  # raises: not exactly representable
    try:
        data = np.fromiter(filled, np.float64 if is_float else np.int64, n)
    except OverflowError:
        return _fallback(values, type_)  # beyond int64: pa.array raises ArrowInvalid
    if not is_float:
        np_type, low, high = _INT_RANGE[type_]
        if n and (int(data.min()) < low or int(data.max()) > high):
            return _fallback(values, type_)
        data = data.astype(np_type, copy=False)
    return pa.Array.from_buffers(type_, n, [_validity(values, nulls), pa.py_buffer(data)], null_count=nulls)


def indices(rows: Sequence[int] | np.ndarray) -> pa.Array:
    """An int64 array of row numbers, for ``Table.take`` (which given a list would call ``pa.array``)."""
    return numbers(rows, pa.int64())


def bools(values: Sequence[bool | None] | np.ndarray) -> pa.Array:
    """A bool array from a numpy bool array or a list of bools that may hold None (null)."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype != np.bool_:
            return _fallback(values, pa.bool_())
        return pa.Array.from_buffers(pa.bool_(), len(values),
                                     [None, pa.py_buffer(np.packbits(values, bitorder="little"))])
    checked = _of_one_type(values, bool, pa.bool_())
    if isinstance(checked, pa.Array):
        return checked
    values, nulls = checked
    bits = np.array([v is True for v in values], dtype=bool)
    return pa.Array.from_buffers(pa.bool_(), len(values), [_validity(values, nulls),
                                                           pa.py_buffer(np.packbits(bits, bitorder="little"))],
                                 null_count=nulls)


def _of_one_type(values: Sequence[Any], kind: type, type_: pa.DataType) -> tuple[list[Any], int] | pa.Array:
    """``values`` as a list and how many are None, when every other one is exactly a ``kind``; else the
    array itself: all nulls, or what ``pa.array`` makes of values of other types (its rules, its errors)."""
    values = _as_list(values)
    if _all_none(values):
        return pa.nulls(len(values), type_)
    kinds = set(map(type, values))
    if not kinds - {_NONE} <= {kind}:
        return _fallback(values, type_)
    return values, values.count(None) if _NONE in kinds else 0


def _variable(type_: pa.DataType, values: list[Any], nulls: int, data: bytes, lengths: Any) -> pa.Array:
    """A string or binary array from its concatenated bytes and each value's length in bytes."""
    if len(data) > OFFSET_LIMIT:
        return _fallback(values, type_)
    buffers = [_validity(values, nulls), _offset_buffer(lengths), pa.py_buffer(data)]
    return pa.Array.from_buffers(type_, len(values), buffers, null_count=nulls)


def strings(values: Sequence[str | None]) -> pa.Array:
    """A string array (None = null). All ASCII (the usual case): one join and one encode, lengths from
    ``len``; otherwise each string is encoded to UTF-8, and a lone surrogate raises UnicodeEncodeError
    as in ``pa.array``. Values that are not str go to ``pa.array``."""
    values = _as_list(values)
    n = len(values)
    if _all_none(values):
        return pa.nulls(n, pa.string())
    nulls = 0
    try:  # no None (the usual case): no need to look for one
        joined = "".join(values)
        filled = values
    except TypeError:  # None, or values pa.array converts by its own rules (bytes) or refuses
        if not all(v is None or isinstance(v, str) for v in values):
            return _fallback(values, pa.string())
        nulls = values.count(None)
        filled = ["" if v is None else v for v in values]
        joined = "".join(filled)
    if joined.isascii():
        lengths = np.fromiter(map(len, filled), np.int64, n)
        if int(lengths.sum()) != len(joined):  # a str subclass whose len() is not its length
            return _fallback(values, pa.string())
        return _variable(pa.string(), values, nulls, joined.encode("ascii"), lengths)
    encoded = [s.encode("utf-8") for s in filled]
    return _variable(pa.string(), values, nulls, b"".join(encoded), np.fromiter(map(len, encoded), np.int64, n))


def binaries(values: Sequence[bytes | None]) -> pa.Array:
    """A binary array from bytes (None = null); other types (str, bytearray, buffers) go to ``pa.array``."""
    checked = _of_one_type(values, bytes, pa.binary())
    if isinstance(checked, pa.Array):
        return checked
    values, nulls = checked
    filled = [b"" if v is None else v for v in values] if nulls else values
    return _variable(pa.binary(), values, nulls, b"".join(filled),
                     np.fromiter(map(len, filled), np.int64, len(values)))


def list_array(list_type: pa.ListType, lengths: Sequence[int] | np.ndarray, values: pa.Array,
               validity: pa.Buffer | None = None, nulls: int = 0) -> pa.Array:
    """A ``list_type`` array whose item k holds the next ``lengths[k]`` of ``values`` (null where the
    ``validity`` bitmap says so; a null item has length 0)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total > OFFSET_LIMIT:
        raise OverflowError(f"{total} list items do not fit int32 offsets")
    if total != len(values):
        raise ValueError(f"list lengths add up to {total}, but there are {len(values)} values")
    return pa.Array.from_buffers(list_type, len(lengths), [validity, _offset_buffer(lengths)],
                                 null_count=nulls, children=[values])


def float_lists(values: np.ndarray, lengths: Sequence[int] | np.ndarray) -> pa.Array:
    """A list<float64> array from flat float64 ``values`` and each list's length."""
    return list_array(pa.list_(pa.float64()), lengths, numbers(np.ravel(values), pa.float64()))


_ITEM_BUILDERS = {pa.string(): strings, pa.binary(): binaries, pa.bool_(): bools}


def lists(values: Sequence[Sequence[Any] | None], list_type: pa.ListType) -> pa.Array:
    """A list array (list<string>, list<int32>, ...) from a list of lists or tuples (None = null list;
    items may be None). Other item types, or other containers, go to ``pa.array``."""
    values = _as_list(values)
    n = len(values)
    if _all_none(values):
        return pa.nulls(n, list_type)
    kinds = set(map(type, values))
    item_type = list_type.value_type
    build = _ITEM_BUILDERS.get(item_type)
    if build is None and (item_type == pa.float64() or item_type in _INT_RANGE):
        def build(items: list[Any]) -> pa.Array:
            return numbers(items, item_type)
    if build is None or not kinds - {_NONE} <= {list, tuple}:
        return _fallback(values, list_type)
    nulls = values.count(None) if _NONE in kinds else 0
    filled = [() if v is None else v for v in values] if nulls else values
    lengths = np.fromiter(map(len, filled), np.int64, n)
    if int(lengths.sum()) > OFFSET_LIMIT:
        return _fallback(values, list_type)
    items = build(list(chain.from_iterable(filled)))
    if not isinstance(items, pa.Array):  # pa.array split an oversized item column into chunks
        return _fallback(values, list_type)
    return list_array(list_type, lengths, items, _validity(values, nulls), nulls)
