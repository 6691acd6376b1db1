"""Parquet shards: deterministic writing, the manifest, verification and a small reader API.

Why this shape: shards are the hand-off between ``d2c``, ``mmsar`` and ``sarclip_train``, so a shard on
disk is either complete or absent (written to a hidden temporary name, renamed when closed), identical
inputs give byte-identical files (fixed compression, no timestamps, rows in input order), and shard
boundaries depend only on the ordered rows (row count and byte budget), which is what ``--resume`` needs.
The layout is documented in ``docs/shard-schema.md``.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from d2c.errors import D2CError
from d2c.schema import HF_METADATA_KEY, METADATA_KEY, SCHEMA, SCHEMA_VERSION, hf_metadata

log = logging.getLogger(__name__)

# Side files beside the shards. The leading underscore is the Hadoop / Spark / pyarrow convention for files
# that are not data: pandas, pyarrow and DuckDB given the folder skip them, polars when told
# (hidden_file_prefix="_"), Hugging Face datasets through load_dataset(folder) or on_bad_files="skip"
# (docs/shard-schema.md#loading). With "manifest.json" beside the shards every one of them failed.
MANIFEST = "_manifest.json"
STATS = "_stats.json"
REJECTS = "_rejects.jsonl"
OLD_SIDE_FILES = ("manifest.json", "stats.json", "rejects.jsonl")  # shard schema 1.0
SHARD_KEY = METADATA_KEY + b".shard"  # per-shard facts (index, input span), added when the shard closes
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
STORED_AS_IS = ("image.bytes",)  # PNG and JPEG bytes: compressed already, zstd would only spend CPU on them
ROW_GROUP_ROWS = 1024  # rows per row group: few enough to stream, enough to compress well and write fast
ROW_GROUP_BYTES = 32 << 20  # ... or fewer rows when the images are large
QUEUED_TASKS = 6  # row groups (<= ROW_GROUP_BYTES each) and shard closes waiting for the writer thread
DICT_COLUMNS = ("source", "split", "image_format", "orig_dtype", "image_source", "label")

_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Reliability hook: ``D2C_CRASH_AT=<point>:<n>`` kills the process (exit 137) the n-th time ``name``
    is reached, so tests can check that an interrupted run leaves nothing half-written."""
    spec = os.environ.get("D2C_CRASH_AT")
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == int(count or 1):
        log.error("D2C_CRASH_AT=%s reached: exiting with 137", spec)
        os._exit(137)


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}.parquet"


def _tmp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """A closed shard: its file, row count, size, checksum and the span of input items it covers."""

    path: Path
    rows: int
    bytes: int
    sha256: str
    first_item: int | None = None
    next_item: int | None = None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def row_bytes(row: dict[str, Any]) -> int:
    """A cheap size estimate of a row (image bytes dominate); used for the byte budget."""
    image = row.get("image") or {}
    data = image.get("bytes") if isinstance(image, dict) else None
    return row_bytes_of(len(data) if data else 0, len(row.get("objects") or ()))


def row_bytes_of(image_bytes: int, objects: int) -> int:
    """:func:`row_bytes` from the two numbers it reads (for callers that hold no row dict)."""
    return image_bytes + 256 + 96 * objects


class ShardWriter:
    """Write rows into ``out_dir/{prefix}-{index:05d}.parquet`` shards.

    A shard closes after ``shard_rows`` rows, or before a row that would take its estimated bytes past
    ``max_bytes``.
    ``metadata`` (JSON-serialisable) is stored under :data:`d2c.schema.METADATA_KEY` in the Arrow schema of
    every shard; the shard's own ``shard_index``, ``first_item`` and ``next_item`` (input positions, given
    to :meth:`write`) go under ``d2c.shard`` so a resumed run knows where each shard starts and ends.
    """

    def __init__(
        self,
        out_dir: Path,
        prefix: str,
        *,
        shard_rows: int = 2000,
        max_bytes: int = 512 << 20,
        metadata: dict[str, Any],
        schema: pa.Schema = SCHEMA,
        start_index: int = 0,
    ) -> None:
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.shard_rows = shard_rows
        self.max_bytes = max_bytes
        self.metadata = dict(metadata)
        self.schema = schema
        self.index = start_index
        self._thread: ThreadPoolExecutor | None = None  # writes row groups (see _in_background)
        self._queued: collections.deque[Future] = collections.deque()
        self._failed: BaseException | None = None  # the first error on the writer thread
        self.closed: list[ShardInfo] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._dicts: list[dict[str, Any]] = []  # rows given as dicts, not yet converted
        self._pieces: list[pa.Table] = []  # the current row group, in order
        self._group_rows = 0
        self._group_bytes = 0
        self._rows = 0
        self._bytes = 0
        self._first_item: int | None = None
        self._next_item: int | None = None

    def write(self, row: dict[str, Any], item: int | None = None) -> None:
        """Append one row; ``item`` is its position in the input stream (recorded for resume)."""
        size = row_bytes(row)
        if self._needs_cut_before(size):
            self._finish()
        self._dicts.append(row)
        self._count(size, item)
        self._cut_after()
        crash_point("after_rows")

    def write_table(self, table: pa.Table, items: list[int | None], sizes: list[int] | None = None) -> None:
        """Append the rows of ``table`` (in :attr:`schema`), with their input positions and byte estimates:
        what workers hand back, cheaper than one dict per row. Shard and row-group boundaries are the
        same as writing the rows one by one; rows are taken a run at a time up to the next boundary."""
        if sizes is None:
            sizes = [row_bytes(r) for r in table.select(["image", "objects"]).to_pylist()]
        if len(sizes) != len(items):
            raise ValueError(f"{len(items)} items but {len(sizes)} sizes")
        if os.environ.get("D2C_CRASH_AT"):  # row by row, so a crash test can stop after any row
            for i in range(len(items)):
                self._write_run(table, items, sizes, i, i + 1)
                crash_point("after_rows")
            return
        start = 0
        while start < len(items):
            start = self._write_run(table, items, sizes, start, len(items))

    def _write_run(self, table: pa.Table, items: list[int | None], sizes: list[int], start: int, stop: int) -> int:
        """Add rows ``start`` .. at most ``stop`` up to the first boundary: a shard cut before a row that
        would pass the byte budget, or a row group / shard filled after one. Returns the next row."""
        if self._needs_cut_before(sizes[start]):
            self._finish()
        if self._writer is None:
            self._open()
        room = min(stop - start, ROW_GROUP_ROWS - self._group_rows, self.shard_rows - self._rows)
        cum = np.cumsum(np.asarray(sizes[start : start + room], dtype=np.int64))
        over = np.flatnonzero(self._bytes + cum[1:] > self.max_bytes)  # row start+1+k would pass the budget
        if over.size:
            room = min(room, int(over[0]) + 1)
        full = np.flatnonzero(self._group_bytes + cum >= ROW_GROUP_BYTES)  # the group fills at row start+k
        if full.size:
            room = min(room, int(full[0]) + 1)
        end = start + room
        if self._first_item is None:
            self._first_item = next((x for x in items[start:end] if x is not None), None)
        last = items[end - 1]
        self._next_item = None if last is None else last + 1
        added = int(cum[room - 1])
        self._rows += room
        self._bytes += added
        self._group_rows += room
        self._group_bytes += added
        self._take(table, start, end)
        self._cut_after()
        return end

    def close(self) -> list[ShardInfo]:
        """Close the open shard, if any, and return every shard this writer completed."""
        if self._writer is not None:
            self._finish()
        self._wait()
        self.abort()  # nothing is queued any more: this only stops the thread
        return list(self.closed)

    def abort(self) -> None:
        """Stop after a failure elsewhere: the writes and closes already queued finish (complete shards
        reach their final names), the open shard stays under its temporary name."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    def _needs_cut_before(self, size: int) -> bool:
        """The byte budget is a ceiling: close before a row that would pass it (unless the shard is empty)."""
        return self._writer is not None and self._rows > 0 and self._bytes + size > self.max_bytes

    def _count(self, size: int, item: int | None) -> None:
        if self._writer is None:
            self._open()
        if self._first_item is None:
            self._first_item = item
        self._next_item = None if item is None else item + 1
        self._rows += 1
        self._bytes += size
        self._group_rows += 1
        self._group_bytes += size

    def _cut_after(self) -> None:
        if self._group_rows >= ROW_GROUP_ROWS or self._group_bytes >= ROW_GROUP_BYTES:
            self._flush_group()
        if self._rows >= self.shard_rows:
            self._finish()

    def _take(self, table: pa.Table, start: int, end: int) -> None:
        if end > start:
            self._materialise()
            self._pieces.append(table.slice(start, end - start))

    def _materialise(self) -> None:
        if self._dicts:
            self._pieces.append(pa.Table.from_pylist(self._dicts, schema=self.schema))
            self._dicts = []

    def _open(self) -> None:
        final = self.out_dir / shard_name(self.prefix, self.index)
        self._tmp = _tmp_path(final)
        self._writer = pq.ParquetWriter(
            self._tmp,
            self.schema.with_metadata({METADATA_KEY: _dumps(self.metadata), HF_METADATA_KEY: hf_metadata(self.schema)}),
            **_compression(self.schema),
            use_dictionary=[n for n in DICT_COLUMNS if n in self.schema.names],
            write_statistics=True,
        )
        self._rows = self._bytes = 0
        self._first_item = self._next_item = None

    def _flush_group(self) -> None:
        self._materialise()
        if not self._pieces:
            return
        assert self._writer is not None
        table = self._pieces[0] if len(self._pieces) == 1 else pa.concat_tables(self._pieces)
        self._in_background(_write_group, self._writer, table)
        self._pieces, self._group_rows, self._group_bytes = [], 0, 0
        crash_point("mid_shard")

    def _in_background(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the writer thread, in order, with at most :data:`QUEUED_TASKS` waiting: Arrow encodes
        and compresses without holding the GIL, and fsync waits for the disk, so a shard is written while
        the next rows are built (on another core). Inline when a crash test needs each write done at its
        crash point."""
        if os.environ.get("D2C_CRASH_AT"):
            fn(*args)
            return
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="d2c-shard-writer")
        self._queued.append(self._thread.submit(self._unless_failed, fn, *args))
        while len(self._queued) > QUEUED_TASKS:
            self._queued.popleft().result()

    def _unless_failed(self, fn: Any, *args: Any) -> None:
        """``fn(*args)``, unless a task before it failed: after a failed write (a full disk) the shard must
        not be closed and renamed to its final name, nor anything after it written."""
        if self._failed is not None:
            raise self._failed
        try:
            fn(*args)
        except BaseException as exc:
            self._failed = exc
            raise

    def _wait(self) -> None:
        """Until every group handed to the writer thread is written (its error, if any, raised here)."""
        while self._queued:
            self._queued.popleft().result()

    def _finish(self) -> None:
        """Close the open shard: its last row group, then (on the writer thread) its footer, fsync, rename
        to the final name and checksum; the next rows go to a new shard meanwhile."""
        assert self._writer is not None and self._tmp is not None
        self._flush_group()
        span = {"shard_index": self.index, "first_item": self._first_item, "next_item": self._next_item}
        final = self.out_dir / shard_name(self.prefix, self.index)
        self._in_background(self._close_shard, self._writer, self._tmp, final, self._rows, span)
        self._writer, self._tmp = None, None
        self.index += 1

    def _close_shard(self, writer: pq.ParquetWriter, tmp: Path, final: Path, rows: int, span: dict[str, Any]) -> None:
        writer.add_key_value_metadata({SHARD_KEY: _dumps(span)})
        writer.close()
        _fsync(tmp)
        crash_point("before_rename")
        os.replace(tmp, final)
        self.closed.append(ShardInfo(final, rows, final.stat().st_size, file_sha256(final), span["first_item"],
                                     span["next_item"]))
        log.debug("wrote %s (%d rows)", final.name, rows)


def _compression(schema: pa.Schema) -> dict[str, Any]:
    """ParquetWriter's per-column codec and level: :data:`COMPRESSION` for every leaf column but
    :data:`STORED_AS_IS` (a column left out of the dict would be uncompressed)."""
    leaves = [path for f in schema for path in _leaf_paths(f.name, f.type)]
    return {"compression": {p: "none" if p in STORED_AS_IS else COMPRESSION for p in leaves},
            "compression_level": {p: COMPRESSION_LEVEL for p in leaves if p not in STORED_AS_IS}}


def _leaf_paths(name: str, typ: pa.DataType) -> list[str]:
    """The Parquet leaf column paths of an Arrow field (lists as ``name.list.element``, structs by child)."""
    if pa.types.is_struct(typ):
        return [p for child in typ for p in _leaf_paths(f"{name}.{child.name}", child.type)]
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return _leaf_paths(f"{name}.list.element", typ.value_type)
    return [name]


def _write_group(writer: pq.ParquetWriter, table: pa.Table) -> None:
    """One row group: its rows in one chunk per column, so the bytes are the same however they arrived."""
    table = table.combine_chunks()
    writer.write_table(table, row_group_size=table.num_rows)


def _dumps(obj: Any) -> bytes:
    """Canonical JSON (sorted keys, no whitespace): the same metadata gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _fsync(path: Path) -> None:
    """Flush a file to disk before it is renamed, so a final name never points at missing data."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path`` and rename it into place."""
    tmp = _tmp_path(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def shard_paths(path_or_dir: Path | str) -> list[Path]:
    """The shard files of a folder (sorted by name), or ``[path]`` for one file."""
    p = Path(path_or_dir)
    if p.is_dir():
        check_not_old(p)
        return sorted(q for q in p.glob("*.parquet") if not q.name.startswith((".", "_")))
    if p.is_file():
        return [p]
    raise FileNotFoundError(f"{p}: no such shard file or folder")


class OldFolderError(D2CError):
    """A shard folder written by an older d2c (side files without the leading underscore)."""


def check_not_old(folder: Path | str) -> None:
    """Raise :class:`OldFolderError` for a folder written before shard schema 2.0 (``manifest.json`` and no
    ``_manifest.json``), saying what to do."""
    d = Path(folder)
    if (d / "manifest.json").is_file() and not (d / MANIFEST).is_file():
        raise OldFolderError(
            f"{d}: written by an older d2c (manifest.json, stats.json, rejects.jsonl: shard schema 1.0); "
            f"convert the input again into a new folder (side files are now {MANIFEST}, {STATS}, {REJECTS})")


class ShardReadError(D2CError, ValueError):
    """A file with a shard's name that is not readable Parquet (truncated copy, disk fault, not a shard)."""


def _parquet(path: Path | str) -> pq.ParquetFile:
    """Open a shard, naming it in the error when it is not readable Parquet (Arrow's message does not)."""
    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise ShardReadError(f"{path}: not a readable Parquet shard ({exc})") from None


def read_metadata(shard_path: Path | str) -> dict[str, Any]:
    """The d2c key-value metadata of one shard (schema version, seed, class map, ...) with its own
    ``shard_index``, ``first_item`` and ``next_item``."""
    kv = _parquet(shard_path).metadata.metadata or {}
    out: dict[str, Any] = {}
    for key in (METADATA_KEY, SHARD_KEY):
        if kv.get(key):
            out.update(json.loads(kv[key]))
    return out


def write_manifest(out_dir: Path | str, known: list[ShardInfo] | None = None) -> dict[str, Any]:
    """(Re)write ``_manifest.json`` from the shards present: rows, bytes and sha256 of each. ``known``:
    shards whose figures a writer has just worked out (they are not read again when unchanged on disk)."""
    out = Path(out_dir)
    by_name = {info.path.name: info for info in known or []}
    shards = []
    for p in shard_paths(out):
        info = by_name.get(p.name)
        if info is not None and info.path.resolve() == p.resolve() and info.bytes == p.stat().st_size:
            shards.append({"file": p.name, "rows": info.rows, "bytes": info.bytes, "sha256": info.sha256})
            continue
        shards.append({
            "file": p.name,
            "rows": pq.ParquetFile(p).metadata.num_rows,
            "bytes": p.stat().st_size,
            "sha256": file_sha256(p),
        })
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "shards": shards,
        "rows": sum(s["rows"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
    }
    atomic_write_bytes(out / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return manifest


def read_manifest(out_dir: Path | str) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST
    check_not_old(out_dir)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no manifest (not a shard folder, or the run did not finish)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None


def verify(out_dir: Path | str) -> list[str]:
    """Recompute every shard's checksum, size and row count against the manifest; return the problems."""
    out = Path(out_dir)
    try:
        manifest = read_manifest(out)
    except (FileNotFoundError, ValueError, OldFolderError) as exc:
        return [str(exc)]
    problems: list[str] = []
    listed = {s["file"] for s in manifest.get("shards", [])}
    for s in manifest.get("shards", []):
        p = out / s["file"]
        if not p.is_file():
            problems.append(f"{p}: listed in the manifest but missing")
            continue
        if p.stat().st_size != s["bytes"]:
            problems.append(f"{p}: {p.stat().st_size} bytes, manifest says {s['bytes']}")
        if file_sha256(p) != s["sha256"]:
            problems.append(f"{p}: sha256 differs from the manifest")
        try:
            rows = pq.ParquetFile(p).metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            problems.append(f"{p}: unreadable Parquet ({exc})")
            continue
        if rows != s["rows"]:
            problems.append(f"{p}: {rows} rows, manifest says {s['rows']}")
    for p in shard_paths(out):
        if p.name not in listed:
            problems.append(f"{p}: shard not listed in the manifest")
    total = sum(s["rows"] for s in manifest.get("shards", []))
    if manifest.get("rows") != total:
        problems.append(f"{out / MANIFEST}: total rows {manifest.get('rows')} != sum of shards {total}")
    return problems


def shard_folders(path: Path | str) -> list[Path]:
    """The shard folders of ``path``: ``[path]`` when it holds shards or a shard manifest itself, else every
    folder below it that does (a dataset root: an ``mmsar build`` output's train/, val/, test/, chips/...;
    the folders its own manifest lists, when it has one), sorted. Raises :class:`FileNotFoundError` when
    there is none, :class:`OldFolderError` for a folder written before schema 2.0."""
    root = Path(path)
    check_not_old(root)
    own = (root / MANIFEST).is_file() and "shards" in _manifest_keys(root)
    if own or any(q for q in root.glob("*.parquet") if not q.name.startswith((".", "_"))):
        return [root]
    listed = _listed_folders(root)
    if listed is not None:  # a dataset root whose manifest names its folders (mmsar build): those alone
        found = [root / name for name in sorted(listed)]
    else:
        manifests = [*root.rglob(MANIFEST), *root.rglob(OLD_SIDE_FILES[0])]  # old ones: to be refused below
        found = sorted({m.parent for m in manifests if m.parent != root})
    if not found:
        raise FileNotFoundError(f"{root}: no shard files (*.parquet) and no shard folder below it")
    for folder in found:
        check_not_old(folder)
    return found


def _listed_folders(root: Path) -> list[str] | None:
    """The ``folders`` a dataset root's own manifest lists (``mmsar build``), else None."""
    try:
        folders = json.loads((root / MANIFEST).read_text(encoding="utf-8")).get("folders")
    except (OSError, ValueError, AttributeError):
        return None
    return list(folders) if isinstance(folders, dict) else None


def _manifest_keys(folder: Path) -> set[str]:
    try:
        return set(json.loads((folder / MANIFEST).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {"shards"}  # unreadable: let verify report it as the folder's own manifest


def verify_tree(path: Path | str) -> tuple[list[str], list[tuple[Path, dict[str, Any]]]]:
    """:func:`verify` of every shard folder of ``path`` (see :func:`shard_folders`), and of a dataset root's
    own manifest (``folders``: rows per folder, as ``mmsar build`` writes it) against them: the problems,
    and each folder with its manifest."""
    root = Path(path)
    try:
        folders = shard_folders(root)
    except (FileNotFoundError, OldFolderError) as exc:
        return [str(exc)], []
    problems: list[str] = []
    checked: list[tuple[Path, dict[str, Any]]] = []
    for folder in folders:
        found = verify(folder)
        problems += found
        if not found:
            checked.append((folder, read_manifest(folder)))
    if folders != [root] and (root / MANIFEST).is_file():
        try:
            listed = read_manifest(root).get("folders") or {}
        except ValueError as exc:
            return [*problems, str(exc)], checked
        rows = {f.relative_to(root).as_posix(): m["rows"] for f, m in checked}
        for name, entry in sorted(listed.items()):
            if name not in rows and not any(f.relative_to(root).as_posix() == name for f in folders):
                problems.append(f"{root / name}: listed in {root / MANIFEST} but missing")
            elif name in rows and rows[name] != entry.get("rows"):
                problems.append(f"{root / name}: {rows[name]} rows, {root / MANIFEST} says {entry.get('rows')}")
    return problems, checked


def iter_rows(path_or_dir: Path | str, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Stream rows as dicts, one row group at a time (never the whole folder in memory)."""
    for p in shard_paths(path_or_dir):
        pf = _parquet(p)
        for i in range(pf.num_row_groups):
            yield from pf.read_row_group(i, columns=columns).to_pylist()


def to_pandas(path_or_dir: Path | str, columns: list[str] | None = None):
    """All rows as one pandas DataFrame (small folders; use :func:`iter_rows` to stream)."""
    tables = [pq.read_table(p, columns=columns) for p in shard_paths(path_or_dir)]
    if not tables:
        return SCHEMA.empty_table().to_pandas()
    return pa.concat_tables(tables).to_pandas()
