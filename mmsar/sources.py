"""Stage one source: convert its inputs with ``d2c.convert`` into ``work/<source>/`` and index the rows.

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
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from d2c.errors import D2CError
from d2c.model import Reject
from d2c.shards import MANIFEST, REJECTS
from mmsar.config import BuildConfig, InputSpec, SourceConfig

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


def stage_source(job: StageJob) -> dict[str, Any]:
    """Convert (or reuse) one source; returns its stage summary (``reused`` tells which happened)."""
    src = job.source
    folder = job.work / src.name
    fp = fingerprint(job)
    old = load_stage(folder)
    if old is not None and old.get("fingerprint") == fp:
        log.info("source %s: inputs and settings unchanged, reusing %s", src.name, folder)
        return {**old, "reused": True}
    tmp = job.work / f".{src.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    parts, rejects_text = [], []
    for i, spec in enumerate(src.inputs):
        try:
            parts.append(_convert_part(job, spec, tmp / f"part-{i}"))
        except D2CError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise type(exc)(f"source {src.name!r}, input {spec.path}: {exc}") from None
        rejects_text.append((tmp / f"part-{i}" / REJECTS).read_text(encoding="utf-8"))
    records, extra_rejects = _index(tmp, parts, src, job.images_mode)
    account = {k: sum(int(p["stats"].get(k) or 0) for p in parts) for k in ACCOUNT_KEYS}
    codes: dict[str, int] = {}
    for text in rejects_text:
        for line in text.splitlines():
            if line.strip():
                code = json.loads(line).get("code") or "unknown"
                codes[code] = codes.get(code, 0) + 1
    for rej in extra_rejects:
        account["scenes_written"] -= 1
        account["instances_out"] -= rej.instances
        account["instances_rejected"] += rej.instances
        codes[rej.code] = codes.get(rej.code, 0) + 1
    account["rejects"] = sum(codes.values())
    account["rejects_by_code"] = dict(sorted(codes.items()))
    extra = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in extra_rejects)
    (tmp / REJECTS).write_text("".join(rejects_text) + extra, encoding="utf-8")
    (tmp / RECORDS).write_bytes(orjson.dumps(records))
    stage = {"fingerprint": fp, "source": src.name, "parts": parts, "account": account, "rows": len(records)}
    (tmp / STAGE).write_text(json.dumps(stage, indent=2, sort_keys=True), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    log.info("source %s: %d scenes staged, %d rejects", src.name, len(records), account["rejects"])
    return {**stage, "reused": False}


def _convert_part(job: StageJob, spec: InputSpec, out: Path) -> dict[str, Any]:
    from d2c.convert import convert  # not ``d2c.convert``: importing the submodule shadows that name
    from d2c.imageio import StretchConfig
    from d2c.options import ConvertOptions

    src = job.source
    tile = {"tile": src.tile.size, "overlap": src.tile.overlap, "tile_min_visible": src.tile.min_visible,
            "tile_below": src.tile.below, "tile_negative_rate": src.tile.negative_rate} if src.tile else {}
    options = ConvertOptions(
        format=src.format, images=spec.images, annotations=spec.annotations, source=src.name,
        class_map=_class_map(src), templates=job.templates, captions_per_image=job.captions_per_image,
        seed=job.caption_seed, images_mode=job.images_mode, shard_rows=job.shard_rows, workers=1,
        max_side=job.max_side, stretch=StretchConfig(**job.stretch), progress=_inline_progress(),
        keep_partial_scenes=src.keep_partial_scenes, **tile,
    )
    result = convert(spec.path, out, options)
    stats = {k: v for k, v in result.stats.items() if k in (*ACCOUNT_KEYS, "classes")}
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    return {"dir": out.name, "input": str(spec.path), "split": spec.split, "stats": stats,
            "shards": [{"file": s["file"], "rows": s["rows"], "bytes": s["bytes"]} for s in manifest["shards"]]}


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


def _index(folder: Path, parts: list[dict[str, Any]], src: SourceConfig,
           images_mode: str) -> tuple[list[dict[str, Any]], list[Reject]]:
    """One record per staged row; a key already seen in an earlier input of the source is a Reject."""
    import pyarrow.parquet as pq

    from d2c.shards import read_metadata

    records: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    for pi, part in enumerate(parts):
        for shard in part["shards"]:
            path = folder / part["dir"] / shard["file"]
            root = Path(read_metadata(path).get("dataset_root") or ".")
            for ri, row in enumerate(pq.read_table(path).to_pylist()):
                if row["key"] in seen:
                    prov = row.get("provenance") or {}
                    rejects.append(Reject(prov.get("file") or part["input"], prov.get("record"),
                                          f"scene key {row['key']!r} already came from an earlier input",
                                          "duplicate_key", len(row.get("objects") or []), row["key"]))
                    continue
                seen.add(row["key"])
                rec = record_of(row, root, images_mode)
                rec.update(part=pi, shard=shard["file"], row=ri,
                           fixed_split=_fixed_split(src, part["split"], row.get("split")))
                records.append(rec)
    return records, rejects


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
