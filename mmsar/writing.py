"""The per-folder, per-source tasks of a build: copy staged rows into split / SARCount folders, cut chips.

Why tasks take plain references (staging shard, row index) and return small summaries: they run in a
process pool or on Dask workers, each writes only its own ``{prefix}-NNNNN.parquet`` files in one output
folder, and the build merges the summaries in submission order, so the output is the same wherever the
tasks ran.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d2c.errors import D2CError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowRef:
    """Where a staged row lives: ``work/<source>/<part>/<shard>`` row ``row``; what to change on the way."""

    part: str
    shard: str
    row: int
    split: str
    near_duplicate: bool = False


@dataclass(frozen=True)
class ChipJob:
    size: int
    context: float
    min_crop: int
    images_mode: str
    stretch: dict[str, Any] = field(default_factory=dict)


def _staged_rows(stage_dir: Path, refs: Sequence[RowRef]) -> Iterator[tuple[RowRef, dict[str, Any], Path]]:
    """Rows in ``refs`` order, each staging shard read once (refs come sorted by shard), with its root."""
    import pyarrow.parquet as pq

    from d2c.shards import read_metadata

    i = 0
    while i < len(refs):
        j = i
        while j < len(refs) and (refs[j].part, refs[j].shard) == (refs[i].part, refs[i].shard):
            j += 1
        path = stage_dir / refs[i].part / refs[i].shard
        root = Path(read_metadata(path).get("dataset_root") or ".")
        rows = pq.read_table(path).take([r.row for r in refs[i:j]]).to_pylist()
        for ref, row in zip(refs[i:j], rows, strict=True):
            yield ref, row, root
        i = j


def _metadata(stage_dir: Path, refs: Sequence[RowRef], extra: dict[str, Any]) -> dict[str, Any]:
    from d2c.shards import read_metadata

    meta = read_metadata(stage_dir / refs[0].part / refs[0].shard) if refs else {}
    for k in ("shard_index", "first_item", "next_item", "span"):
        meta.pop(k, None)
    return {**meta, **extra}


def write_scene_shards(stage_dir: Path, out_dir: Path, prefix: str, refs: Sequence[RowRef], shard_rows: int,
                       extra_meta: dict[str, Any]) -> dict[str, Any]:
    """Copy the referenced rows (split set, near-duplicates flagged) into ``out_dir/{prefix}-*.parquet``."""
    from d2c.shards import ShardWriter

    writer = ShardWriter(out_dir, prefix, shard_rows=shard_rows, metadata=_metadata(stage_dir, refs, extra_meta))
    n = 0
    for ref, row, _ in _staged_rows(stage_dir, refs):
        row["split"] = ref.split
        if ref.near_duplicate and "near_duplicate" not in row["flags"]:
            row["flags"] = [*row["flags"], "near_duplicate"]
        writer.write(row, n)
        n += 1
    shards = writer.close()
    return {"folder": out_dir.name, "prefix": prefix, "rows": n, "shards": [s.path.name for s in shards]}


def _scene_image(row: dict[str, Any], root: Path, job: ChipJob) -> Any:
    """The row's image as an (H, W, 3) uint8 array: stored bytes, or the referenced file through d2c's
    image pipeline (so non-8-bit rasters get the configured stretch)."""
    from d2c.imageio import StretchConfig, decode_image, load_image_record
    from d2c.rows import scene_from_row

    data = (row.get("image") or {}).get("bytes")
    if data is None:
        if not row.get("sha256"):
            raise FileNotFoundError(f"image {(row.get('image') or {}).get('path')!r} is missing")
        scene = scene_from_row(row, root=str(root), instances=False)
        data = load_image_record(scene, mode="embed", stretch=StretchConfig(**job.stretch)).bytes
        if data is None:
            raise FileNotFoundError(f"image {scene.image_path!r} not found under {root}")
    return decode_image(data)


def write_chip_shards(stage_dir: Path, out_dir: Path, prefix: str, refs: Sequence[RowRef], shard_rows: int,
                      job: ChipJob, extra_meta: dict[str, Any]) -> dict[str, Any]:
    """Cut a chip per object of the referenced scenes; a scene whose image cannot be had is a reject."""
    from d2c.schema import CHIP_SCHEMA
    from d2c.shards import ShardWriter

    meta = {**extra_meta, "chip_size": job.size, "chip_context": job.context, "chip_min_crop": job.min_crop}
    writer = ShardWriter(out_dir, prefix, shard_rows=shard_rows, metadata=meta, schema=CHIP_SCHEMA)
    n, tally = 0, _ChipTally()
    for chip in _chips(stage_dir, refs, job, tally):
        writer.write(chip, n)
        n += 1
    shards = writer.close()
    return {"folder": out_dir.name, "prefix": prefix, "rows": n, "shards": [s.path.name for s in shards],
            "instances_in": tally.instances_in, "rejects": tally.rejects}


@dataclass
class _ChipTally:
    instances_in: int = 0
    rejects: list[dict[str, Any]] = field(default_factory=list)


def _chips(stage_dir: Path, refs: Sequence[RowRef], job: ChipJob, tally: _ChipTally) -> Iterator[dict[str, Any]]:
    """The chips of the referenced scenes, in order; a scene whose image cannot be had goes to
    ``tally.rejects`` (with the instances it takes along)."""
    from mmsar.chips import chip_rows

    for ref, row, root in _staged_rows(stage_dir, refs):
        objects = row.get("objects") or []
        tally.instances_in += len(objects)
        if not objects:
            continue
        try:
            image = _scene_image(row, root, job)
        except (OSError, D2CError, ValueError) as exc:
            prov = row.get("provenance") or {}
            tally.rejects.append({"file": prov.get("file") or row["key"], "record": prov.get("record"),
                                  "code": "chip_image_unavailable", "reason": f"{row['key']}: {exc}",
                                  "instances": len(objects), "scene_key": row["key"]})
            continue
        yield from chip_rows(row, image, ref.split, size=job.size, context=job.context, min_crop=job.min_crop)


def write_chip_part(stage_dir: Path, part_file: Path, refs: Sequence[RowRef], job: ChipJob) -> dict[str, Any]:
    """The chips of one group of scenes (what :func:`write_chip_shards` cuts from them, in order) as one
    Parquet part file, with each chip's byte estimate: :func:`assemble_chips` joins the parts of a
    folder into its shards, the bytes of one task's writing (chips per scene vary, so groups cannot be
    cut at shard boundaries beforehand)."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from d2c.schema import CHIP_SCHEMA
    from d2c.shards import row_bytes

    tally = _ChipTally()
    rows = list(_chips(stage_dir, refs, job, tally))
    sizes = [row_bytes(chip) for chip in rows]
    part_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_file.with_name(f".{part_file.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=CHIP_SCHEMA), tmp)
    os.replace(tmp, part_file)
    return {"file": str(part_file), "rows": len(rows), "sizes": sizes, "instances_in": tally.instances_in,
            "rejects": tally.rejects}


def assemble_chips(out_dir: Path, prefix: str, parts: Sequence[dict[str, Any]], shard_rows: int, job: ChipJob,
                   extra_meta: dict[str, Any]) -> dict[str, Any]:
    """Join the part files of :func:`write_chip_part` (in order) into ``out_dir/{prefix}-*.parquet``: the
    shards :func:`write_chip_shards` writes from the same scenes, byte for byte; the parts are removed."""
    import shutil

    import pyarrow.parquet as pq

    from d2c.schema import CHIP_SCHEMA
    from d2c.shards import ShardWriter

    meta = {**extra_meta, "chip_size": job.size, "chip_context": job.context, "chip_min_crop": job.min_crop}
    writer = ShardWriter(out_dir, prefix, shard_rows=shard_rows, metadata=meta, schema=CHIP_SCHEMA)
    n = 0
    for part in parts:
        if part["rows"]:
            table = pq.read_table(part["file"], schema=CHIP_SCHEMA)
            writer.write_table(table, list(range(n, n + part["rows"])), part["sizes"])
            n += part["rows"]
    shards = writer.close()
    for folder in {Path(part["file"]).parent.parent for part in parts}:  # .parts-<source>
        shutil.rmtree(folder, ignore_errors=True)
    return {"folder": out_dir.name, "prefix": prefix, "rows": n, "shards": [s.path.name for s in shards],
            "instances_in": sum(p["instances_in"] for p in parts), "rejects": [r for p in parts for r in p["rejects"]]}


def _file_image(name: str, root: Path, rel: str, stretch: dict[str, Any]) -> Any:
    """An external image file as (H, W, 3) uint8, through d2c's pipeline: root-escape check, pixel cap,
    and the configured stretch for non-8-bit rasters (MSTAR and FUSAR chips are often 16-bit or float)."""
    from d2c.imageio import StretchConfig, decode_image, load_image_record
    from d2c.model import Provenance, Scene

    scene = Scene(key=f"{name}/{rel}", source=name, image_path=rel, root=str(root), width=None, height=None,
                  provenance=Provenance(rel))
    data = load_image_record(scene, mode="embed", stretch=StretchConfig(**stretch)).bytes
    if data is None:
        raise FileNotFoundError(f"{root / rel}: not found")
    return decode_image(data)


def write_external_chips(name: str, root: Path, items: Sequence[tuple[str, str]], out_dir: Path, split: str,
                         size: int, shard_rows: int, stretch: dict[str, Any],
                         extra_meta: dict[str, Any]) -> dict[str, Any]:
    """Chips from an ImageFolder-style set: ``items`` are (class, path relative to ``root``)."""
    from d2c.schema import CHIP_SCHEMA
    from d2c.shards import ShardWriter
    from mmsar.chips import external_chip_row

    writer = ShardWriter(out_dir, name, shard_rows=shard_rows, metadata={**extra_meta, "chip_size": size},
                         schema=CHIP_SCHEMA)
    n, rejects = 0, []
    for cls, rel in items:
        try:
            image = _file_image(name, root, rel, stretch)
        except (OSError, D2CError, ValueError) as exc:
            rejects.append({"file": rel, "record": None, "code": "chip_image_unavailable",
                            "reason": f"{root / rel}: {exc}", "instances": 1, "scene_key": f"{name}/{rel}"})
            continue
        writer.write(external_chip_row(name, root, cls, root / rel, image, split, size), n)
        n += 1
    shards = writer.close()
    return {"folder": out_dir.name, "prefix": name, "rows": n, "shards": [s.path.name for s in shards],
            "instances_in": len(items), "rejects": rejects}


def write_plots(records: Sequence[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """The card's plots of the kept scene records (with their split); without matplotlib (the [train]
    extra) none, and a warning for the build to log: the data does not need them."""
    from mmsar.plots import make_plots

    try:
        return {"plots": make_plots(records, out_dir), "rows": 0}
    except ImportError as exc:
        return {"plots": [], "rows": 0, "warning": f"no plots: {exc} (pip install 'sarclip-toolkit[train]')"}


def write_gallery(out: Path, written: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``gallery.png``: sample scenes per source and class from the split folders (d2c.gallery), drawn once
    the tasks that wrote them are done (``written``: their summaries, the shards to read); without any
    scene, no picture and a warning (the card says so)."""
    from d2c.gallery import GalleryOptions, draw_gallery
    from d2c.model import SPLITS

    folders = [out / split for split in SPLITS if any(s["folder"] == split for s in written)]
    missing = sorted(str(out / s["folder"] / n) for s in written for n in s["shards"]
                     if not (out / s["folder"] / n).is_file())
    if missing:  # the tasks said they wrote these: drawing without them would hide a lost shard
        raise FileNotFoundError(f"gallery: written shards missing: {', '.join(missing[:3])}")
    if not folders:
        return {"gallery": None, "rows": 0, "warning": f"no gallery: {out}: no scene rows in {', '.join(SPLITS)}"}
    try:
        draw_gallery(folders, out / "gallery.png", GalleryOptions(per_class=2),
                     title="Samples per source (rows) and class (columns); boxes in the class colour")
    except ValueError as exc:
        return {"gallery": None, "rows": 0, "warning": f"no gallery: {exc}"}
    return {"gallery": "gallery.png", "rows": 0}


def write_json(path: Path, data: Any) -> None:
    """Pretty, sorted JSON written atomically (same data, same bytes)."""
    from d2c.shards import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())


def run_task(kind: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """One entry point for every writing task (what the distributor ships to workers)."""
    import time

    fn = {"scenes": write_scene_shards, "chips": write_chip_shards, "external": write_external_chips,
          "chip_part": write_chip_part, "chips_assemble": assemble_chips, "plots": write_plots,
          "gallery": write_gallery}[kind]
    t0 = time.monotonic()
    summary = fn(*args)
    return {**summary, "seconds": round(time.monotonic() - t0, 3)}
