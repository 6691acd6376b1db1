"""The numbers a reader accepts, checked where an annotation gives them: what the shard schema can hold
(int32 image sizes, finite float64 coordinates) and what the geometry code can process in bounded time and
memory (vertices and parts per object). A value past a limit is a Reject of its record, never an exception
three stages later (pyarrow's int32 cast, ``int(inf)`` in a caption, shapely's ``bad_alloc``).

See docs/reliability.md ("Limits") for every limit and what happens past it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

INT32_MAX = 2**31 - 1  # the schema's width / height columns are int32
COORD_MAX = 2.0**53  # |coordinate| beyond this is no pixel position; products of two such stay finite
GSD_MAX = 1e6  # metres per pixel: a larger ground sample distance is unusable (as NaN is): gsd=None
DEFAULT_MAX_VERTICES = 1_000  # vertices of one object, all its parts together (shapely cost grows as its square)
DEFAULT_MAX_PARTS = 100  # polygon parts of one object


@dataclass(frozen=True, slots=True)
class GeometryLimits:
    """The geometry budget of one object, checked on the parsed numbers before shapely sees them."""

    max_vertices: int = DEFAULT_MAX_VERTICES
    max_parts: int = DEFAULT_MAX_PARTS

    def check(self, parts: int, vertices: int) -> str | None:
        """Why an object of ``parts`` parts and ``vertices`` vertices in all is over the budget, or None."""
        if parts > self.max_parts:
            return f"{parts} polygon parts, more than the cap of {self.max_parts} (max_parts, --max-parts)"
        if vertices > self.max_vertices:
            return (f"{vertices} vertices, more than the cap of {self.max_vertices} "
                    f"(max_vertices, --max-vertices)")
        return None

    def check_lists(self, parts: list[Any]) -> str | None:
        """:meth:`check` of polygon parts as parsed lists (flat ``x, y, ...`` numbers or ``[x, y]`` pairs),
        from their lengths alone: nothing is converted or allocated first."""
        if len(parts) > self.max_parts:
            return self.check(len(parts), 0)
        vertices = sum(len(p) if p and isinstance(p[0], list) else len(p) // 2 for p in parts if isinstance(p, list))
        return self.check(len(parts), vertices)


DEFAULT_LIMITS = GeometryLimits()


def check_limits(max_vertices: Any, max_parts: Any) -> GeometryLimits:
    """The limits, or ValueError naming the option when one is not a positive int."""
    for name, value in (("max_vertices", max_vertices), ("max_parts", max_parts)):
        if type(value) is not int or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if max_vertices < 4:
        raise ValueError(f"max_vertices must be at least 4 (a box has 4), got {max_vertices!r}")
    return GeometryLimits(max_vertices, max_parts)


def short(value: Any) -> str:
    """``value`` for a one-line message: a huge int by its digit count, a long string cut."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        if value.bit_length() <= 1000:
            return f"{float(value):.6g}"
        return f"an integer of about {int(abs(value).bit_length() * 0.30103) + 1} digits"  # str() of a huge int raises
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def annotated_size(width: Any, height: Any) -> tuple[int, int] | str | None:
    """An image size as an annotation gives it: ``(width, height)`` when both are whole numbers in
    1 .. :data:`INT32_MAX` (an int or an integral float: ``100.0``), None when the annotation gives none
    (missing, null or 0, as LabelImg writes for an unknown size: the image header decides), else the
    reason it cannot be used (negative, too large, a fraction, a bool, a string, NaN)."""
    if _unknown(width) or _unknown(height):
        return None
    out = []
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if type(v) is not int and not isinstance(v, np.integer):
            return f"image {name} {short(v)} is not a whole number of pixels"
        if not 0 < v <= INT32_MAX:
            return f"image {name} {short(int(v))} is outside 1..{INT32_MAX} pixels"
        out.append(int(v))
    return out[0], out[1]


def _unknown(v: Any) -> bool:
    return v is None or (type(v) in (int, float) and v == 0)


def usable_gsd(value: float | None) -> float | None:
    """A ground sample distance that captions can use: finite, positive, at most :data:`GSD_MAX`."""
    return value if value is not None and math.isfinite(value) and 0 < value <= GSD_MAX else None
