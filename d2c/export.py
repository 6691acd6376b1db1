"""Shards back out: detection annotations (COCO, DOTA, VOC) or files open_clip trains on directly.

Why: shards are the canonical store, but users keep tools that read detection formats, and open_clip's
own trainer reads a CSV (``--dataset-type csv``) or WebDataset tars. Every export streams rows.

- ``coco|dota|voc|yolo|yolo-obb``: the writers in :mod:`d2c.writers`; embedded images are written beside
  them (``images/`` for COCO, DOTA and YOLO, ``JPEGImages/`` for VOC); reference-mode rows keep naming the
  original image files (not copied), except for YOLO, whose label files name no image: there the
  referenced files are copied into ``images/``. YOLO writes ``labels/*.txt``, ``classes.txt`` and
  ``data.yaml`` (``yolo``: ``class cx cy w h``; ``yolo-obb``: ``class x1 y1 ... x4 y4``, normalised). Coordinates are original pixels, so a row
  stored reduced (``--max-side``, ``image_scale`` < 1) is exported with its original-size annotations and
  a warning. The files are written into a hidden staging folder and moved into ``OUT`` once complete, so
  an export that fails part way leaves nothing behind.
- ``openclip-csv``: ``OUT/captions.csv``, **tab-separated** (open_clip's ``--csv-separator`` default is a
  tab) with columns ``filepath`` (absolute path) and ``title``, one line per caption; embedded images are
  written to ``OUT/images/``, referenced ones point at the dataset root recorded in the shards.
- ``webdataset``: ``OUT/{source}-{split}-{000000}.tar`` with up to ``samples_per_tar`` samples, one per
  image: ``{key}.png|jpg``, ``{key}.txt`` (its first caption: open_clip_train trains on ``txt``) and
  ``{key}.json`` (all its captions, split, size, object counts); the key has no dots, as WebDataset needs.
  ``OUT/sizes.json`` gives each tar's sample count, so ``open_clip_train --train-data 'OUT/x-{000000..N}.tar'``
  trains without ``--train-num-samples``. (To train on every caption, ``openclip-csv`` lists each one.)
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from d2c.errors import UnsafePathError, UsageError
from d2c.images import safe_join
from d2c.model import Scene
from d2c.rows import scene_from_row
from d2c.shards import iter_rows, read_metadata, shard_paths

log = logging.getLogger(__name__)

TARGETS = ("coco", "dota", "voc", "yolo", "yolo-obb", "openclip-csv", "webdataset")
EXT = {"png": "png", "jpeg": "jpg", "tiff": "tif", "bmp": "bmp"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def export(shards: Path | str, to: str, out: Path | str, *, samples_per_tar: int = 1000) -> dict[str, Any]:
    """Export a shard folder to ``out`` in format ``to``; returns counts (rows, captions, images)."""
    if to not in TARGETS:
        raise UsageError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    paths = shard_paths(shards)
    if not paths:
        raise UsageError(f"{shards}: no shard files (*.parquet) to export")
    root = read_metadata(paths[0]).get("dataset_root") or ""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if to == "openclip-csv":
        return _openclip_csv(shards, out, root)
    if to == "webdataset":
        return _webdataset(shards, out, root, samples_per_tar)
    return _detection(shards, to, out, root)


def _image_file_name(row: dict[str, Any], used: set[str]) -> str:
    """The exported image's name: the original name, with the stored format's extension if it changed.
    Tiles (rows with a ``parent_key``), and images whose name stem was already written (same file name
    in two folders), are named after their scene key instead, so no file overwrites another."""
    name = PurePosixPath((row["image"].get("path") or row["key"].split("/", 1)[1]).replace("\\", "/")).name
    fmt = row.get("image_format")
    ext = EXT[fmt] if (row.get("stretch") or row.get("parent_key")) and fmt in EXT else PurePosixPath(name).suffix[1:]
    stem = PurePosixPath(name).stem
    if row.get("parent_key") or stem in used:
        stem = _sample_key(row["key"].split("/", 1)[-1], used)
    used.add(stem)
    return f"{stem}.{ext}" if ext else stem


def _reference_tile(row: dict[str, Any]) -> bool:
    """A tile row without image bytes: its file is the parent scene's, its boxes and captions the tile's,
    so an export would pair them wrongly. Such rows are left out with a warning (export tiles written
    with ``--images-mode embed``, or the untiled scenes)."""
    if row.get("parent_key") and (row.get("image") or {}).get("bytes") is None:
        log.warning("%s: a tile stored in reference mode has no image of its own; left out", row["key"])
        return True
    return False


def _detection(shards: Path | str, to: str, out: Path, root: str) -> dict[str, Any]:
    """A detection export written into a hidden staging folder inside ``out`` and moved into place when
    complete: an export that fails part way leaves none of its files behind."""
    staging = Path(tempfile.mkdtemp(prefix=".export-partial-", dir=out))
    try:
        counts = _detection_into(shards, to, staging, root)
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            target = out / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


def _detection_into(shards: Path | str, to: str, out: Path, root: str) -> dict[str, Any]:
    from d2c.writers import write_coco, write_dota, write_voc, write_yolo

    image_dir = out / ("JPEGImages" if to == "voc" else "images")
    counts = {"rows": 0, "images": 0, "instances": 0, "skipped": 0}
    used: set[str] = set()
    yolo = to in ("yolo", "yolo-obb")  # label files name no image: the images must lie in images/

    def scenes() -> Iterator[Scene]:
        for row in iter_rows(shards):
            if _reference_tile(row):
                counts["skipped"] += 1
                continue
            data = (row.get("image") or {}).get("bytes")
            if data is None and yolo:
                ref = _referenced_file(row, root)
                if ref is None:
                    log.warning("%s: no image bytes and no file to copy beside its YOLO labels; left out",
                                row["key"])
                    counts["skipped"] += 1
                    continue
                data = ref.read_bytes()
            name = _image_file_name(row, used)
            if data is not None:
                image_dir.mkdir(parents=True, exist_ok=True)
                (image_dir / name).write_bytes(data)
                counts["images"] += 1
                if row.get("image_scale") not in (None, 1.0):
                    log.warning("%s: image stored at scale %s; annotations stay in original pixels",
                                row["key"], row["image_scale"])
            if data is not None:
                scene = scene_from_row(row, root=str(out))
                scene.image_path = f"{image_dir.name}/{name}"
            else:  # reference mode: the annotations name the original image, which stays where it is
                scene = scene_from_row(row, root=root)
            counts["rows"] += 1
            counts["instances"] += scene.num_instances
            yield scene

    if to == "coco":
        write_coco(scenes(), out / "annotations.json", images_dir=image_dir)
    elif yolo:
        write_yolo(scenes(), out, obb=to == "yolo-obb")
    elif to == "dota":
        write_dota(scenes(), out)
    else:
        write_voc(scenes(), out)
    return counts


def _sample_key(key: str, seen: set[str]) -> str:
    base = _UNSAFE.sub("_", key).strip("_") or "scene"
    safe, n = base, 1
    while safe in seen:
        n += 1
        safe = f"{base}_{n}"
    seen.add(safe)
    return safe


def _referenced_file(row: dict[str, Any], root: str) -> Path | None:
    """The file a reference-mode row names, if it exists inside the dataset root (shards are input too:
    a row naming ``../x`` or ``/etc/passwd`` is refused with a warning)."""
    rel = (row.get("image") or {}).get("path")
    if not rel or not root:
        return None
    try:
        path = safe_join(Path(root), rel)
    except UnsafePathError as exc:
        log.warning("%s: %s; left out", row.get("key"), exc)
        return None
    return path if path.is_file() else None


def _image_bytes(row: dict[str, Any], root: str) -> tuple[bytes | None, str]:
    """Stored bytes, or the referenced file's bytes; and the file extension to use."""
    image = row.get("image") or {}
    data = image.get("bytes")
    if data is None:
        path = _referenced_file(row, root)
        data = path.read_bytes() if path is not None else None
    return data, EXT.get(row.get("image_format") or "", "png")


def _openclip_csv(shards: Path | str, out: Path, root: str) -> dict[str, Any]:
    image_dir = out / "images"
    seen: set[str] = set()
    counts = {"rows": 0, "captions": 0, "images": 0, "skipped": 0}
    tmp = out / ".captions.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["filepath", "title"])
        for row in iter_rows(shards):
            counts["rows"] += 1
            if _reference_tile(row):
                counts["skipped"] += 1
                continue
            image = row.get("image") or {}
            if image.get("bytes") is not None:
                ext = EXT.get(row.get("image_format") or "", "png")
                path = image_dir / f"{_sample_key(row['key'], seen)}.{ext}"
                image_dir.mkdir(parents=True, exist_ok=True)
                path.write_bytes(image["bytes"])
                counts["images"] += 1
            elif (ref := _referenced_file(row, root)) is not None:
                path = ref
            else:
                log.warning("%s: no image bytes and no file to point at; left out", row["key"])
                counts["skipped"] += 1
                continue
            for caption in row.get("captions") or []:
                writer.writerow([str(path.resolve()), caption])
                counts["captions"] += 1
    tmp.replace(out / "captions.csv")
    return counts


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


class _TarSink:
    """Numbered tars of at most ``per_tar`` samples, each written to a temporary name then renamed; the
    samples each holds are counted for ``sizes.json``."""

    def __init__(self, out: Path, prefix: str, per_tar: int) -> None:
        self.out, self.prefix, self.per_tar = out, prefix, per_tar
        self.count = 0
        self.sizes: dict[str, int] = {}
        self._tar: tarfile.TarFile | None = None
        self._paths: tuple[Path, Path] | None = None
        self._in_tar = 0

    def add_sample(self, files: dict[str, bytes]) -> None:
        if self._tar is None or self._in_tar >= self.per_tar:
            self.close()
            final = self.out / f"{self.prefix}-{self.count:06d}.tar"
            self._paths = (final.with_name(f".{final.name}.tmp"), final)
            self._tar = tarfile.open(self._paths[0], "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
            self.count += 1
            self._in_tar = 0
        for name, data in files.items():
            _add(self._tar, name, data)
        self._in_tar += 1

    def close(self) -> None:
        if self._tar is not None and self._paths is not None:
            self._tar.close()
            self._paths[0].replace(self._paths[1])
            self.sizes[self._paths[1].name] = self._in_tar
            self._tar = None


def _split_label(shards: Path | str) -> str:
    """The split the rows belong to (``train``, ``test``, ...), ``mixed`` when they differ, ``all`` when
    no row names one: part of the tar names, so a folder of tars says what it holds."""
    splits = {r.get("split") for r in iter_rows(shards, columns=["split"])} - {None, ""}
    return splits.pop() if len(splits) == 1 else ("mixed" if splits else "all")


def _wds_meta(row: dict[str, Any], captions: list[str]) -> bytes:
    meta = {"key": row["key"], "captions": captions, "source": row.get("source"), "split": row.get("split"),
            "width": row.get("width"), "height": row.get("height"),
            "counts": [dict(c) for c in row.get("counts") or []]}
    return json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")


def _webdataset(shards: Path | str, out: Path, root: str, per_tar: int) -> dict[str, Any]:
    """One sample per image: ``{key}.png|jpg`` + ``{key}.txt`` (its first caption, the text open_clip_train
    trains on) + ``{key}.json`` (all its captions and the row's metadata); ``sizes.json`` gives the samples
    per tar, which open_clip_train's ``get_wds_dataset`` needs for ``is_train=True``. Tars are named
    ``{source}-{split}-{n:06d}.tar``."""
    source = read_metadata(shard_paths(shards)[0]).get("source") or "shard"
    prefix = _UNSAFE.sub("_", f"{source}-{_split_label(shards)}")
    for stale in (*out.glob(f"{prefix}-*.tar"), out / "sizes.json"):  # an earlier export of the same rows
        stale.unlink(missing_ok=True)
    seen: set[str] = set()
    counts = {"rows": 0, "images": 0, "captions": 0, "tars": 0, "skipped": 0}
    sink = _TarSink(out, prefix, per_tar)
    for row in iter_rows(shards):
        counts["rows"] += 1
        if _reference_tile(row):
            counts["skipped"] += 1
            continue
        captions = [str(c) for c in row.get("captions") or []]
        if not captions:
            log.warning("%s: no captions; left out (an image-text sample needs one)", row["key"])
            counts["skipped"] += 1
            continue
        data, ext = _image_bytes(row, root)
        if data is None:
            log.warning("%s: no image bytes and no file to read; left out", row["key"])
            counts["skipped"] += 1
            continue
        base = _sample_key(row["key"], seen)
        sink.add_sample({f"{base}.{ext}": data, f"{base}.txt": captions[0].encode("utf-8"),
                         f"{base}.json": _wds_meta(row, captions)})
        counts["images"] += 1
        counts["captions"] += len(captions)
    sink.close()
    from d2c.writers import atomic_write_bytes

    atomic_write_bytes(out / "sizes.json", json.dumps(sink.sizes, indent=2, sort_keys=True).encode() + b"\n")
    counts["tars"] = sink.count
    return counts
