"""Staging cut into tasks of N scenes: plan each source's inputs into spans of plan units, convert each
span apart (``d2c.convert(span=...)``), then join a source's spans in order into its staging folder.

Why spans of plan units: a source is one read plan (COCO images, DOTA/VOC annotation files), and the spans
of a plan converted apart and joined in order are the whole conversion (see :class:`d2c.readers.plan.SpanPlan`),
so one big source spreads over every worker while the staged rows, rejects and records stay what one
conversion gives, whatever N, the worker count or the distributor. The join runs in the build's process:
it only concatenates, and the one check that crosses spans (a scene key seen in an earlier input or span)
needs them in order.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from d2c.model import Reject
from d2c.shards import MANIFEST, REJECTS
from mmsar.sources import (
    ACCOUNT_KEYS,
    RECORDS,
    STAGE,
    StageJob,
    _class_map,
    _fixed_split,
    _inline_progress,
    record_of,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpanTask:
    """Staging task: plan units ``span`` of input ``part`` of a source (``span`` None: the whole input,
    for a reader that cannot plan units)."""

    job: StageJob
    part: int
    span: tuple[int, int] | None
    folder: Path  # the source's temporary staging folder
    taken: tuple[str, ...] = ()  # keys of earlier spans that this span's images have (its second reading)

    @property
    def units(self) -> int:
        return self.span[1] - self.span[0] if self.span else 1

    @property
    def dir(self) -> str:
        return "all" if self.span is None else f"span-{self.span[0]:08d}-{self.span[1]:08d}"

    def label(self) -> str:
        where = "all units" if self.span is None else f"units {self.span[0]}..{self.span[1] - 1}"
        return f"staging task (source {self.job.source.name!r}, input {self.part}, {where})"


def count_units(job: StageJob, part: int) -> int | None:
    """How many plan units input ``part`` of the source has (None: its reader cannot plan)."""
    from d2c.readers import plan

    src, spec = job.source, job.source.inputs[part]
    p = plan(spec.path, format=src.format, source=src.name, class_map=_class_map(src),
             images=spec.images, annotations=spec.annotations, require_images=job.images_mode == "embed")
    return None if p is None else p.units


def span_tasks(job: StageJob, folder: Path, unit_scenes: int, counts: list[int | None] | None = None
               ) -> list[SpanTask]:
    """The source's staging tasks, in input and unit order (``counts``: :func:`count_units` of each input,
    if known)."""
    tasks = []
    for part in range(len(job.source.inputs)):
        n = counts[part] if counts is not None else count_units(job, part)
        if n is None:
            tasks.append(SpanTask(job, part, None, folder))
            continue
        cuts = list(range(0, n, unit_scenes)) or [0]
        tasks += [SpanTask(job, part, (a, min(a + unit_scenes, n)), folder) for a in cuts]
    return tasks


def stage_span(task: SpanTask) -> dict[str, Any]:
    """Convert one span into ``folder/part-<i>/<span dir>`` and index its rows (the costly part: the
    perceptual hash reads every image); returns the rows' records and the span's accounting."""
    from d2c.convert import convert  # not ``d2c.convert``: importing the submodule shadows that name
    from d2c.errors import D2CError
    from d2c.imageio import StretchConfig
    from d2c.options import ConvertOptions

    t0 = time.monotonic()
    job, src, spec = task.job, task.job.source, task.job.source.inputs[task.part]
    out = task.folder / f"part-{task.part}" / task.dir
    shutil.rmtree(out, ignore_errors=True)  # a retried task starts clean
    tile = {"tile": src.tile.size, "overlap": src.tile.overlap, "tile_min_visible": src.tile.min_visible,
            "tile_below": src.tile.below, "tile_negative_rate": src.tile.negative_rate} if src.tile else {}
    try:
        options = ConvertOptions(
            format=src.format, images=spec.images, annotations=spec.annotations, source=src.name,
            class_map=_class_map(src), templates=job.templates, captions_per_image=job.captions_per_image,
            seed=job.caption_seed, images_mode=job.images_mode, shard_rows=job.shard_rows, workers=1,
            max_side=job.max_side, stretch=StretchConfig(**job.stretch),
            progress=False if task.span is not None else _inline_progress(),
            keep_partial_scenes=src.keep_partial_scenes, span=task.span, span_taken=task.taken, **tile)
        result = convert(spec.path, out, options)
    except D2CError as exc:
        raise type(exc)(f"source {src.name!r}, input {spec.path}: {exc}") from None
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    records = _span_records(out, task, [s["file"] for s in manifest["shards"]])
    stats = result.stats
    rejects_text = (out / REJECTS).read_text(encoding="utf-8")
    return {
        "part": task.part, "span": list(task.span) if task.span else None, "dir": task.dir,
        "stats": {k: v for k, v in stats.items() if k in (*ACCOUNT_KEYS, "classes")},
        "shards": [{"file": f"{task.dir}/{s['file']}", "rows": s["rows"], "bytes": s["bytes"]}
                   for s in manifest["shards"]],
        "records": records, "rejects_text": rejects_text, "located": result.span_keys,
        "task": {"source": src.name, "input": task.part, "units": list(task.span) if task.span else None,
                 "scenes": stats["scenes_read"], "instances": stats["instances_in"],
                 "rejects": sum(1 for line in rejects_text.splitlines() if line.strip()),
                 "seconds": round(time.monotonic() - t0, 3)},
    }


def settle_spans(tasks: list[SpanTask], results: list[dict[str, Any]], dist: Any) -> list[dict[str, Any]]:
    """The results of one reading in order: a span is read as if no earlier span had its keys (so it
    costs its own units only), so a span whose located keys meet an earlier span's of the same input
    (COCO: an image whose key an earlier image has is a Reject) is staged again, with those keys taken
    (rare: the answer one conversion in order gives), as a task of ``dist`` (its retries apply)."""
    seen: dict[tuple[Path, int], set[str]] = {}
    out = list(results)
    for i, (task, res) in enumerate(zip(tasks, results, strict=True)):
        keys = seen.setdefault((task.folder, task.part), set())
        located = res.get("located") or []
        hits = keys.intersection(located)
        if hits:
            log.info("%s: %d scene key(s) of earlier spans; staging it again with them taken", task.label(), len(hits))
            again = replace(task, taken=tuple(sorted(hits)))
            out[i] = dist.map(stage_span, [(again,)], stage="staging", labels=lambda _, t=again: t.label())[0]
            located = out[i].get("located") or []
        keys.update(located)
    return out


def _span_records(out: Path, task: SpanTask, shard_files: list[str]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from d2c.shards import read_metadata

    spec_split = task.job.source.inputs[task.part].split
    records = []
    for name in shard_files:
        path = out / name
        root = Path(read_metadata(path).get("dataset_root") or ".")
        for ri, row in enumerate(pq.read_table(path).to_pylist()):
            rec = record_of(row, root, task.job.images_mode)
            prov = row.get("provenance") or {}
            rec.update(part=task.part, shard=f"{task.dir}/{name}", row=ri,
                       fixed_split=_fixed_split(task.job.source, spec_split, row.get("split")),
                       _prov=[prov.get("file"), prov.get("record")])
            records.append(rec)
    return records


def finish_source(job: StageJob, fingerprint: str, folder: Path, spans: list[dict[str, Any]]) -> dict[str, Any]:
    """Join a source's span results (in order) into its staging folder, as one conversion would have
    staged it: parts, records (a key seen in an earlier input or span is a ``duplicate_key`` Reject),
    rejects and accounting; rename the folder into place."""
    src = job.source
    parts, rejects_text, records, extra_rejects = [], [], [], []
    seen: set[str] = set()
    for pi, spec in enumerate(src.inputs):
        mine = [s for s in spans if s["part"] == pi]
        stats: dict[str, Any] = {k: sum(int(s["stats"].get(k) or 0) for s in mine) for k in ACCOUNT_KEYS}
        classes: dict[str, int] = {}
        for s in mine:
            for c, n in (s["stats"].get("classes") or {}).items():
                classes[c] = classes.get(c, 0) + n
        stats["classes"] = dict(sorted(classes.items()))
        parts.append({"dir": f"part-{pi}", "input": str(spec.path), "split": spec.split, "stats": stats,
                      "shards": [sh for s in mine for sh in s["shards"]]})
        rejects_text += [s["rejects_text"] for s in mine]
        for s in mine:
            for rec in s["records"]:
                pfile, precord = rec.pop("_prov")
                if rec["key"] in seen:
                    extra_rejects.append(Reject(pfile or str(spec.path), precord,
                                                f"scene key {rec['key']!r} already came from an earlier input",
                                                "duplicate_key", len(rec["objects"]), rec["key"]))
                    continue
                seen.add(rec["key"])
                records.append(rec)
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
    (folder / REJECTS).write_text("".join(rejects_text) + extra, encoding="utf-8")
    (folder / RECORDS).write_bytes(orjson.dumps(records))
    stage = {"fingerprint": fingerprint, "source": src.name, "parts": parts, "account": account,
             "rows": len(records)}
    (folder / STAGE).write_text(json.dumps(stage, indent=2, sort_keys=True), encoding="utf-8")
    final = job.work / src.name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(folder, final)
    log.info("source %s: %d scenes staged, %d rejects", src.name, len(records), account["rejects"])
    return {**stage, "reused": False}


def reusable(job: StageJob, fingerprint: str) -> dict[str, Any] | None:
    """The stage summary of the source's complete staging folder when its fingerprint matches."""
    from mmsar.sources import load_stage

    old = load_stage(job.work / job.source.name)
    if old is not None and old.get("fingerprint") == fingerprint:
        log.info("source %s: inputs and settings unchanged, reusing %s", job.source.name, job.work / job.source.name)
        return {**old, "reused": True}
    return None


def fresh_folder(job: StageJob) -> Path:
    """An empty temporary staging folder for the source (renamed into place by :func:`finish_source`)."""
    tmp = job.work / f".{job.source.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def stage_source(job: StageJob, unit_scenes: int | None = None) -> dict[str, Any]:
    """Stage (or reuse) one source here, its spans in turn (the build spreads them over workers)."""
    from mmsar.distributor import Distributor
    from mmsar.options import MIN_UNIT_SCENES
    from mmsar.sources import fingerprint

    fp = fingerprint(job)
    old = reusable(job, fp)
    if old is not None:
        return old
    folder = fresh_folder(job)
    tasks = span_tasks(job, folder, unit_scenes or MIN_UNIT_SCENES)
    return finish_source(job, fp, folder, settle_spans(tasks, [stage_span(t) for t in tasks], Distributor()))
