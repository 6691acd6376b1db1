"""Evaluation data: MMSAR build folders (test shards, chips, SARCount) and ImageFolder sets.

Every set is an :class:`ImageSource`: a stable list of ids plus a way to decode them in batches, and a
fingerprint (sha256 over its files' checksums) that keys the feature cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmsar.build import INDEX as SARCOUNT_INDEX  # a SARCount folder's item list (mmsar build)

log = logging.getLogger(__name__)

MAX_PIXELS = 1 << 28
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_CHECKSUM_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime) within the process."""
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _CHECKSUM_MEMO:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _CHECKSUM_MEMO[memo_key] = h.hexdigest()
    return _CHECKSUM_MEMO[memo_key]


def files_fingerprint(root: Path, files: list[Path]) -> str:
    """sha256 over (relative path, content sha256) of each file, in sorted order."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f"{f.relative_to(root).as_posix()}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def decode_bytes(data: bytes, where: str) -> np.ndarray:
    """Decode stored PNG/JPEG/TIFF bytes to (H, W, 3) uint8 (d2c's decoder, with the pixel cap)."""
    from d2c.imageio import decode_image

    try:
        return decode_image(data, MAX_PIXELS)
    except Exception as exc:
        raise ValueError(f"{where}: {exc}") from None


@dataclass
class ImageSource:
    """A named set of images: ``ids`` in order, ``load(i)`` decodes one, ``fingerprint`` keys the cache."""

    name: str
    ids: list[str]
    load: Callable[[int], np.ndarray]
    fingerprint: str
    meta: dict = field(default_factory=dict)

    def batches(self, batch_size: int) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        """(indices, images) batches; an image that fails to decode is logged and left out."""
        idx: list[int] = []
        imgs: list[np.ndarray] = []
        for i in range(len(self.ids)):
            try:
                imgs.append(self.load(i))
                idx.append(i)
            except Exception as exc:  # noqa: BLE001 - one bad image must not stop the evaluation
                log.error("%s: %s: cannot decode image: %s", self.name, self.ids[i], exc)
                continue
            if len(imgs) == batch_size:
                yield idx, imgs
                idx, imgs = [], []
        if imgs:
            yield idx, imgs


def shard_files(folder: Path) -> list[Path]:
    """The Parquet shards of a shard folder, sorted by name (d2c's rule: dot-files are temporaries)."""
    from d2c.shards import shard_paths

    return shard_paths(folder) if Path(folder).is_dir() else []


def read_shards(folder: Path, columns: list[str]) -> list[dict]:
    """All rows of a shard folder (only ``columns``, never the image bytes), each with ``_file``,
    ``_group`` and ``_row`` locating it for the lazy image loader."""
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for f in shard_files(folder):
        pf = pq.ParquetFile(f)
        for g in range(pf.num_row_groups):
            for j, r in enumerate(pf.read_row_group(g, columns=columns).to_pylist()):
                r.update(_file=f.name, _group=g, _row=j)
                rows.append(r)
    return rows


class _RowImages:
    """Loads row i's image, reading one Parquet row group at a time: sequential access (the batches)
    reads each group once, and only one group's image bytes are held in memory."""

    def __init__(self, folder: Path, rows: list[dict]):
        self.folder, self.rows = folder, rows
        self._at: tuple[str, int] | None = None
        self._images: list[dict] = []

    def _image(self, row: dict) -> dict:
        import pyarrow.parquet as pq

        at = (row["_file"], row["_group"])
        if at != self._at:
            pf = pq.ParquetFile(self.folder / row["_file"])
            self._images = pf.read_row_group(row["_group"], columns=["image"]).column("image").to_pylist()
            self._at = at
        return self._images[row["_row"]] or {}

    def __call__(self, i: int) -> np.ndarray:
        from d2c.images import safe_join

        row = self.rows[i]
        where = f"{self.folder / row['_file']}: {row['key']}"
        image = self._image(row)
        if image.get("bytes"):
            return decode_bytes(image["bytes"], where)
        path = image.get("path")
        if not path:
            raise ValueError(f"{where}: row has neither image bytes nor a path")
        # Reference-mode rows name a path relative to their dataset root; only paths below the shard
        # folder are followed (mmsar builds embed their images).
        return decode_bytes(safe_join(self.folder, path).read_bytes(), where)


def shard_source(folder: Path, name: str, extra: list[str] = ()) -> tuple[ImageSource, list[dict]]:
    """An ImageSource over a shard folder and its rows (``key`` plus the ``extra`` columns)."""
    folder = Path(folder)
    files = shard_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no .parquet shards")
    rows = read_shards(folder, ["key", *extra])
    src = ImageSource(name, [r["key"] for r in rows], _RowImages(folder, rows),
                      files_fingerprint(folder, files), {"dir": str(folder), "shards": len(files)})
    return src, rows


def load_index(folder: Path) -> list[dict]:
    """A SARCount folder's ``_index.json`` items."""
    path = Path(folder) / SARCOUNT_INDEX
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"{path}: cannot read SARCount index: {exc}") from exc
    need = {"key", "count", "template", "singular", "plural"}
    for i, it in enumerate(items):
        missing = need - set(it)
        if missing:
            raise ValueError(f"{path}: item {i} lacks {sorted(missing)}")
    return items


def imagefolder_source(root: Path, name: str) -> tuple[ImageSource, list[str], list[str]]:
    """An ImageFolder set (one folder per class): the source, each image's class, and the class names."""
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths: list[Path] = []
    labels: list[str] = []
    for c in classes:
        for p in sorted((root / c).rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(c)
    if not paths:
        raise FileNotFoundError(f"{root}: no images in class folders")

    def load(i: int) -> np.ndarray:
        return read_image_file(paths[i])

    ids = [p.relative_to(root).as_posix() for p in paths]
    return ImageSource(name, ids, load, files_fingerprint(root, paths), {"dir": str(root)}), labels, classes


def read_image_file(path: Path) -> np.ndarray:
    """PNG/JPEG/BMP through Pillow; TIFF/GeoTIFF through rasterio with a 2-98 percentile stretch."""
    path = Path(path)
    if path.suffix.lower() in {".tif", ".tiff"}:
        return read_geotiff(path)
    return decode_bytes(path.read_bytes(), str(path))


def read_geotiff(path: Path) -> np.ndarray:
    """A (Geo)TIFF of any dtype as (H, W, 3) uint8 through d2c's stretch (percentiles per band)."""
    import rasterio

    from d2c.imageio import stretch_to_rgb

    with rasterio.open(path) as ds:
        if ds.width * ds.height > MAX_PIXELS:
            raise ValueError(f"{path}: image of {ds.width}x{ds.height} exceeds {MAX_PIXELS} pixels")
        data = ds.read(indexes=list(range(1, min(ds.count, 3) + 1)))
    return stretch_to_rgb(data)[0]
