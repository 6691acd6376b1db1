"""What one source's staging depends on (fingerprint), and the index record of a staged row (the
conversion itself runs in tasks of N scenes: :mod:`mmsar.staging`).

Why a staging folder per source: conversion is the expensive step (reading, captioning, hashing image
bytes), and a build that gains one source must not redo the others. A source's folder carries the
fingerprint of everything its rows depend on (input files' names, sizes and mtimes; the source's
settings; caption, image and class-map settings; the tool and template-set versions): when it matches,
the folder is reused as it is. The folder is built under a temporary name and renamed when complete.

The index (``records.json``) holds one small record per row (key, checksums, perceptual hash, counts,
boxes, caption lengths and where the row lives), so dedupe, splits and SARCount never re-read images.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from d2c.errors import D2CError
from mmsar.config import BuildConfig, SourceConfig

log = logging.getLogger(__name__)

STAGE = "stage.json"
RECORDS = "records.json"
STAGE_VERSION = 2  # 2: d2c shard schema 2.0 (side files _manifest.json, _stats.json, _rejects.jsonl)
ACCOUNT_KEYS = ("scenes_read", "scenes_written", "instances_in", "instances_out", "instances_rejected",
                "captions")


@dataclass(frozen=True)
class StageJob:
    """Everything one source's staging depends on (picklable: it travels to process or Dask workers)."""

    source: SourceConfig
    work: Path
    templates: Path | None
    captions_per_image: int
    caption_seed: int
    images_mode: str
    max_side: int | None
    stretch: dict[str, Any]
    shard_rows: int
    template_set_hash: str


def template_set_hash(cfg: BuildConfig) -> str:
    """The caption template set's hash (building an engine compiles every template: do it once)."""
    from d2c.captions import CaptionEngine

    c = cfg.captions
    return CaptionEngine(c.templates, captions_per_image=c.per_image, seed=c.seed).template_set_hash


def job_for(cfg: BuildConfig, src: SourceConfig, template_hash: str) -> StageJob:
    return StageJob(src, cfg.work, cfg.captions.templates, cfg.captions.per_image, cfg.captions.seed,
                    cfg.images.mode, cfg.images.max_side, dict(cfg.images.stretch), cfg.shard_rows, template_hash)


def _class_map(src: SourceConfig) -> Any:
    from d2c.classes import ClassMap

    if isinstance(src.class_map, dict):
        return ClassMap.from_dict(src.class_map, origin=f"sources.{src.name}.class_map")
    return ClassMap.load(src.class_map)


def _listing(paths: list[Path]) -> list[list[Any]]:
    """(path, size, mtime_ns) of every file under ``paths``: cheap, and changes whenever a file does."""
    out: list[list[Any]] = []
    for p in paths:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
        for f in files:
            st = f.stat()
            out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def fingerprint(job: StageJob) -> str:
    """A digest of everything the staged rows depend on."""
    from d2c import __version__

    paths = [p for spec in job.source.inputs for p in (spec.path, spec.images, spec.annotations) if p]
    data = {
        "version": STAGE_VERSION, "d2c": __version__, "templates": job.template_set_hash,
        "source": asdict(job.source), "class_map": _class_map(job.source).to_dict(),
        "captions": [job.captions_per_image, job.caption_seed], "images": [job.images_mode, job.max_side],
        "stretch": job.stretch, "shard_rows": job.shard_rows, "files": _listing(paths),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def load_stage(folder: Path) -> dict[str, Any] | None:
    """The stage summary of a complete staging folder, or None when absent or damaged."""
    try:
        stage = json.loads((folder / STAGE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for part in stage.get("parts", []):
        for shard in part.get("shards", []):
            p = folder / part["dir"] / shard["file"]
            if not p.is_file() or p.stat().st_size != shard["bytes"]:
                return None
    return stage if (folder / RECORDS).is_file() else None


def _inline_progress() -> bool | None:
    """The conversion's own progress (total and ETA) when it runs in the build's main thread (one worker or
    one source: inside the build's staging bar); off in pool workers and Dask threads, whose bars would
    garble the terminal."""
    import multiprocessing
    import threading

    inline = multiprocessing.current_process().name == "MainProcess" and \
        threading.current_thread() is threading.main_thread()
    return None if inline else False


def _fixed_split(src: SourceConfig, spec_split: str | None, row_split: str | None) -> str | None:
    if spec_split:
        return spec_split
    if src.split == "source":
        return row_split
    return src.split


def record_of(row: dict[str, Any], root: Path, images_mode: str = "embed") -> dict[str, Any]:
    """The index record of a shard row (see the module docstring)."""
    objects = row.get("objects") or []
    counts: dict[str, int] = {}
    difficult: dict[str, int] = {}
    for o in objects:
        counts[o["category"]] = counts.get(o["category"], 0) + 1
        if o["difficult"]:
            difficult[o["category"]] = difficult.get(o["category"], 0) + 1
    return {
        "key": row["key"], "source": row["source"], "sha256": row.get("sha256"),
        "phash": perceptual_hash(row, root), "parent_key": row.get("parent_key"),
        "tile_offset": row.get("tile_offset"), "width": row.get("width"), "height": row.get("height"),
        "counts": dict(sorted(counts.items())), "difficult": dict(sorted(difficult.items())),
        "objects": [[o["category"], *o["hbb"], bool(o["difficult"])] for o in objects],
        "caption_words": [len(c.split()) for c in row.get("captions") or []],
        "flags": list(row.get("flags") or []),
    }


def image_bytes_of(row: dict[str, Any], root: Path) -> bytes | None:
    """The stored bytes (embed mode) or the referenced file's bytes (kept inside the dataset root)."""
    image = row.get("image") or {}
    if image.get("bytes"):
        return image["bytes"]
    rel = image.get("path")
    if not rel or not row.get("sha256"):
        return None
    from d2c.images import safe_join

    try:
        return safe_join(root, rel).read_bytes()
    except (OSError, D2CError) as exc:
        log.warning("%s: cannot read %s (%s)", row["key"], rel, exc)
        return None


def perceptual_hash(row: dict[str, Any], root: Path, max_pixels: int = 1 << 30) -> str | None:
    """64-bit DCT perceptual hash (imagehash.phash) as 16 hex digits; None when the image is unavailable."""
    data = image_bytes_of(row, root)
    if data is None:
        return None
    import imagehash
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size[0] * im.size[1] > max_pixels:
                return None
            im.draft("L", (128, 128))
            return str(imagehash.phash(im.convert("L")))
    except Exception as exc:  # PIL raises many types for undecodable data
        log.warning("%s: no perceptual hash (%s)", row["key"], exc)
        return None
