"""``mmsar build``: many detection sources -> staged d2c shards -> dedupe -> splits -> MMSAR folders.

Why in this order: conversion (in tasks of N scenes, spread over the workers: :mod:`mmsar.staging`;
reused per source when unchanged) produces small per-scene records; dedupe, splits and SARCount selection are cheap global decisions on those records; the writing
(per folder and source, in parallel) only copies staged rows and cuts chips. Everything global is a pure
function of the records in config order, so the output does not depend on the distributor or on the
number of workers, nor on N. Per-task figures (scenes, instances, rejects, seconds) go to ``_tasks.json``,
the one file whose bytes vary between builds (seconds). The top-level ``_manifest.json`` is written last:
its presence means the build finished.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from d2c.model import SPLITS
from d2c.progress import Progress
from d2c.shards import MANIFEST, OLD_SIDE_FILES, REJECTS, atomic_write_bytes
from mmsar import card, sarcount
from mmsar.config import BuildConfig, check_inputs, load_config
from mmsar.dedupe import DedupeResult, dedupe
from mmsar.distributor import make_distributor
from mmsar.options import BuildOptions, auto_unit_scenes
from mmsar.sources import RECORDS, fingerprint, job_for, template_set_hash
from mmsar.splits import SplitResult, assign_splits, quota
from mmsar.staging import (
    count_units,
    finish_source,
    fresh_folder,
    reusable,
    settle_spans,
    span_tasks,
    stage_span,
)
from mmsar.taskgraph import Result, critical_path_order, dependencies
from mmsar.writing import ChipJob, RowRef, run_task, write_json

log = logging.getLogger(__name__)

SCENE_FOLDERS = ("train", "val", "test", "sarcount", "sarcount_train")
# side files start with "_" (as in every shard folder): Parquet readers given a folder skip them
STATS, DEDUPE, INDEX, TASKS = "_stats.json", "_dedupe.json", "_index.json", "_tasks.json"
OUTPUT_NAMES = (*SCENE_FOLDERS, "chips", "plots", "gallery.png", "README.md", STATS, DEDUPE, TASKS, MANIFEST,
                *OLD_SIDE_FILES, "dedupe.json")  # and an older build's


@dataclass
class BuildResult:
    out: Path
    manifest: dict[str, Any]
    stats: dict[str, Any]
    converted: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    tasks: dict[str, Any] = field(default_factory=dict)  # what _tasks.json holds
    url: str | None = None  # where the output was uploaded (``out`` given as a URL)


@dataclass
class _Plan:
    records: list[dict[str, Any]]
    dd: DedupeResult
    sp: SplitResult
    counting: dict[str, list[dict[str, Any]]]


def build(config: BuildConfig | Path | str, options: BuildOptions | None = None, **overrides: Any) -> BuildResult:
    """Build the MMSAR tree described by ``config`` into ``config.out``, as ``options`` say
    (:class:`mmsar.options.BuildOptions`; keyword ``overrides`` replace its fields, e.g. ``workers=2``).
    The command line passes ``progress=None``: a bar on a terminal, log lines off it."""
    opts = replace(options or BuildOptions(), **overrides)
    opts.check()
    cfg = config if isinstance(config, BuildConfig) else load_config(config)
    if cfg.remote_inputs:
        from mmsar.remote import fetch_all

        fetch_all(cfg.remote_inputs)
    check_inputs(cfg)
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    for name in OUTPUT_NAMES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    t0 = time.monotonic()
    with make_distributor(opts.distributor, scheduler=opts.scheduler, workers=opts.workers,
                          retries=opts.retries, preload=_TASK_MODULES) as dist:
        tset = template_set_hash(cfg)
        stages, staged, unit_scenes = _stage(cfg, dist, tset, opts.unit_scenes or cfg.unit_scenes, opts.progress)
        t1 = time.monotonic()
        plan = _plan(cfg)
        tasks = _writing_tasks(cfg, plan, unit_scenes)
        t2 = time.monotonic()
        with Progress("writing folders", len(tasks), unit="tasks", enabled=opts.progress, logger=log) as bar:
            summaries = dist.map(run_task, tasks, lambda i: bar.advance(), stage="writing",
                                 order=critical_path_order([_cost(t, tasks) for t in tasks],
                                                           dependencies(tasks)),
                                 labels=lambda i: _write_label(tasks[i]))
        t3 = time.monotonic()
    for s in summaries:
        if "warning" in s:
            log.warning("%s", s["warning"])
    folders = _finish_folders(cfg, plan, [s for (kind, _), s in zip(tasks, summaries, strict=True)
                                          if kind in _FOLDER_KINDS])
    stats = _stats(cfg, plan, stages, folders)
    write_json(out / STATS, stats)
    write_json(out / DEDUPE, {"exact": plan.dd.exact, "near_groups": plan.dd.near_groups,
                                     "near_dropped": plan.dd.near_dropped, "split_conflicts": plan.sp.conflicts})
    pictures = {kind: s for (kind, _), s in zip(tasks, summaries, strict=True) if kind in ("plots", "gallery")}
    info = _card_info(cfg, stats, folders, pictures["plots"]["plots"], tset)
    info["gallery"] = pictures["gallery"]["gallery"]
    atomic_write_bytes(out / "README.md", card.render_card(info).encode("utf-8"))
    task_info = {
        "distributor": dist.name, "workers": getattr(dist, "workers", None) or opts.workers,
        "unit_scenes": unit_scenes, "retries": opts.retries, "staging": staged,
        "writing": [{"task": i, "kind": k, "folder": _write_label((k, a)), "rows": s["rows"], "seconds": s.get("seconds")}
                    for i, ((k, a), s) in enumerate(zip(tasks, summaries, strict=True))],
        "seconds": {"staging": round(t1 - t0, 3), "planning": round(t2 - t1, 3), "writing": round(t3 - t2, 3),
                    "total": round(time.monotonic() - t0, 3)},
    }
    write_json(out / TASKS, task_info)
    manifest = _manifest(cfg, folders)
    write_json(out / MANIFEST, manifest)
    if cfg.out_url:
        from mmsar.remote import upload

        upload(out, cfg.out_url, replace=(MANIFEST, *OUTPUT_NAMES), last=MANIFEST)
    return BuildResult(out, manifest, stats, [s["source"] for s in stages if not s["reused"]],
                       [s["source"] for s in stages if s["reused"]], task_info, cfg.out_url)


_REFS_AT = {"scenes": 3, "chips": 3, "external": 2, "chip_part": 2, "chips_assemble": 2, "plots": 0,
            "gallery": 1}  # where a task's items are
_OUT_AT = {"scenes": 1, "chips": 1, "external": 3, "chip_part": 1, "chips_assemble": 0, "plots": 1,
           "gallery": 0}  # and its output
_FOLDER_KINDS = ("scenes", "chips", "external", "chips_assemble")  # the tasks whose shards make the folders
# Rough seconds per item of each kind, measured on 20,000 scenes with a 256 px JPEG each (docs/benchmarks.md:
# a chip part 2.8 ms per scene, a scene folder 0.1 ms per row, a join 0.075 ms per scene of its parts;
# plots 2 s, the gallery 0.5 s). Only their ratios matter: they decide the start order, never the bytes.
_COST_PER_ITEM = {"scenes": 1e-4, "chips": 3e-3, "external": 3e-3, "chip_part": 3e-3}
_COST_FIXED = {"plots": 2.0, "gallery": 0.5}
_JOIN_COST_PER_SCENE = 7.5e-5


def _write_label(task: tuple[str, tuple[Any, ...]]) -> str:
    kind, args = task
    out = Path(args[_OUT_AT[kind]])
    if kind == "chip_part":  # .../chips/<split>/.parts-<source>/g000001/chips.parquet
        where = f"{out.parent.name}/{out.parent.parent.name}"
    elif kind == "gallery":  # args[0] is the output root
        where = "gallery.png"
    else:
        where = out.name
    return f"writing task ({kind}, {where}, {len(args[_REFS_AT[kind]])} items)"


def _cost(task: tuple[str, tuple[Any, ...]], tasks: list[tuple[str, tuple[Any, ...]]]) -> float:
    """A task's estimated seconds (for the start order only)."""
    kind, args = task
    if kind in _COST_FIXED:
        return _COST_FIXED[kind]
    if kind == "chips_assemble":
        return _JOIN_COST_PER_SCENE * sum(len(tasks[r.task][1][_REFS_AT["chip_part"]]) for r in args[2])
    return _COST_PER_ITEM[kind] * len(args[_REFS_AT[kind]])


def _stage(cfg: BuildConfig, dist: Any, tset: str, unit_scenes: int | None, progress: bool | str | None
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Stage every source that changed, in tasks of ``unit_scenes`` scenes (None: auto) on the
    distributor; returns the stage summaries (config order), the per-task figures and the task size."""
    jobs = [job_for(cfg, s, tset) for s in cfg.sources]
    fps = [fingerprint(j) for j in jobs]
    stages: list[dict[str, Any] | None] = [reusable(j, fp) for j, fp in zip(jobs, fps, strict=True)]
    todo = [k for k, stage in enumerate(stages) if stage is None]
    counts = {k: [count_units(jobs[k], p) for p in range(len(jobs[k].source.inputs))] for k in todo}
    if unit_scenes is None:
        unit_scenes = auto_unit_scenes(sum(n or 1 for c in counts.values() for n in c), dist.parallelism())
    tasks, owner, folders = [], [], {}
    for k in todo:
        folders[k] = fresh_folder(jobs[k])
        mine = span_tasks(jobs[k], folders[k], unit_scenes, counts[k])
        tasks += mine
        owner += [k] * len(mine)
    total = sum(t.units for t in tasks)
    with Progress("staging", total, unit="scenes", enabled=progress, logger=log) as bar:
        results = settle_spans(tasks, dist.map(stage_span, [(t,) for t in tasks], lambda i: bar.advance(tasks[i].units),
                                               stage="staging", labels=lambda i: tasks[i].label()), dist)
    for k in folders:
        stages[k] = finish_source(jobs[k], fps[k], folders[k], [r for r, o in zip(results, owner, strict=True) if o == k])
    staged = [{"task": i, **r["task"]} for i, r in enumerate(results)]
    return [s for s in stages if s is not None], staged, unit_scenes


def _plan(cfg: BuildConfig) -> _Plan:
    """The global decisions: dedupe, splits and SARCount items, from the staged records in config order."""
    records = []
    for src in cfg.sources:
        records.extend(orjson.loads((cfg.work / src.name / RECORDS).read_bytes()))
    dd = dedupe(records, near_threshold=cfg.dedupe.near_threshold, drop_near=cfg.dedupe.drop_near,
                label_iou=cfg.dedupe.label_iou)
    sp = assign_splits(dd.kept, seed=cfg.splits.seed, ratios=cfg.splits.ratios,
                       source_ratios={s.name: s.ratios for s in cfg.sources if s.ratios},
                       near_groups=dd.near_groups)
    sc = cfg.sarcount
    counting = {}
    for folder, split in (("sarcount", "test"), ("sarcount_train", "train")):
        pool = [r for r in dd.kept if sp.split[r["key"]] == split]
        counting[folder] = sarcount.select(pool, seed=cfg.seed, min_count=sc.min_count, max_count=sc.max_count,
                                           max_per_count=sc.max_per_count, templates=sc.templates,
                                           nouns=sc.nouns, split=split)
    return _Plan(records, dd, sp, counting)


_TASK_MODULES = ("mmsar.staging", "mmsar.writing", "mmsar.crash")  # what the workers run: imported as they start
Task = tuple[str, tuple[Any, ...]]  # (kind, arguments of writing.run_task)
PLOT_FIELDS = ("source", "width", "height", "counts", "caption_words", "objects")  # what plots read, and split


def _writing_tasks(cfg: BuildConfig, plan: _Plan, group: int) -> list[Task]:
    """Writing tasks in a fixed order: one per scene folder and source; chips in groups of ``group`` scenes
    (each a part file), then one join per chips folder and source that takes its parts' results (their
    shards, in order: :class:`mmsar.taskgraph.Result`); then the card's plots, and the gallery, drawn from
    the split folders once their tasks are done."""
    near = {k for g in plan.dd.near_groups for k in g}
    counted = {folder: {it["key"] for it in items} for folder, items in plan.counting.items()}
    chip_job = ChipJob(cfg.chips.size, cfg.chips.context, cfg.chips.min_crop, cfg.images.mode,
                       dict(cfg.images.stretch))
    tasks: list[Task] = []
    joins: list[Task] = []
    for src in cfg.sources:
        recs = [r for r in plan.dd.kept if r["source"] == src.name]
        by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        for r in recs:
            by_split[plan.sp.split[r["key"]]].append(r)
        stage_dir = cfg.work / src.name

        def refs(chosen: list[dict[str, Any]]) -> list[RowRef]:
            return [RowRef(f"part-{r['part']}", r["shard"], r["row"], plan.sp.split[r["key"]], r["key"] in near)
                    for r in chosen]

        for folder in SCENE_FOLDERS:
            sel = refs([r for r in recs if r["key"] in counted[folder]] if folder in counted else by_split[folder])
            if sel:
                meta = {"mmsar_folder": folder, "split": sel[0].split, "source_weight": src.weight,
                        "licence": src.licence}
                tasks.append(("scenes", (stage_dir, cfg.out / folder, src.name, sel, cfg.shard_rows, meta)))
        for split in SPLITS:
            sel = refs([r for r in by_split[split] if r["objects"]])
            if sel:
                meta = {"mmsar_folder": f"chips/{split}", "split": split}
                out_dir = cfg.out / "chips" / split
                first = len(tasks)
                for k in range(0, len(sel), group):
                    part = out_dir / f".parts-{src.name}" / f"g{k // group:06d}" / "chips.parquet"
                    tasks.append(("chip_part", (stage_dir, part, sel[k:k + group], chip_job)))
                parts = [Result(i) for i in range(first, len(tasks))]
                joins.append(("chips_assemble", (out_dir, src.name, parts, cfg.shard_rows, chip_job, meta)))
    tasks.extend(_external_tasks(cfg))
    split_folders = [Result(i) for i, (kind, a) in enumerate(tasks) if kind == "scenes" and a[1].name in SPLITS]
    tasks.extend(joins)
    kept = [{**{k: r[k] for k in PLOT_FIELDS}, "split": plan.sp.split[r["key"]]} for r in plan.dd.kept]
    tasks.append(("plots", (kept, cfg.out / "plots")))
    tasks.append(("gallery", (cfg.out, split_folders)))
    return tasks


def _external_tasks(cfg: BuildConfig) -> list[tuple[str, tuple[Any, ...]]]:
    """ImageFolder-style chip sets: a fixed split, or a seeded split per class (same rule as scenes)."""
    from d2c.model import stable_digest
    from mmsar.chips import image_folder_items

    tasks = []
    for ext in cfg.chips.external:
        items = image_folder_items(ext.path)
        by_split: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
        if ext.split:
            by_split[ext.split] = [(c, p.relative_to(ext.path).as_posix()) for c, p in items]
        else:
            for cls in sorted({c for c, _ in items}):
                rels = sorted((p.relative_to(ext.path).as_posix() for c, p in items if c == cls),
                              key=lambda rel, c=cls: (stable_digest(f"{cfg.splits.seed}|{ext.name}|{c}|{rel}"), rel))
                names = [s for s, n in zip(SPLITS, quota(len(rels), cfg.splits.ratios), strict=True)
                         for _ in range(n)]
                for rel, s in zip(rels, names, strict=True):
                    by_split[s].append((cls, rel))
        for split in SPLITS:
            if by_split[split]:
                meta = {"mmsar_folder": f"chips/{split}", "split": split, "external": ext.name}
                tasks.append(("external", (ext.name, ext.path, sorted(by_split[split]), cfg.out / "chips" / split,
                                           split, cfg.chips.size, cfg.shard_rows, dict(cfg.images.stretch),
                                           meta)))
    return tasks


def _folder_stats(recs: list[dict[str, Any]]) -> dict[str, Any]:
    classes: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    for r in recs:
        classes.update(r["counts"])
        sources[r["source"]] += 1
    return {"scenes": len(recs), "instances": sum(len(r["objects"]) for r in recs),
            "captions": sum(len(r["caption_words"]) for r in recs),
            "classes": dict(sorted(classes.items())), "sources": dict(sorted(sources.items()))}


def _finish_folders(cfg: BuildConfig, plan: _Plan, summaries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per output folder: _stats.json, _rejects.jsonl, _manifest.json (and _index.json for SARCount)."""
    from d2c.shards import write_manifest

    kept_by_key = {r["key"]: r for r in plan.dd.kept}
    folders: dict[str, dict[str, Any]] = {}
    chip_summaries: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for s in summaries:
        if "instances_in" in s:
            chip_summaries[s["folder"]].append(s)
    for folder in SCENE_FOLDERS:
        d = cfg.out / folder
        d.mkdir(parents=True, exist_ok=True)
        if folder in plan.counting:
            recs = [kept_by_key[it["key"]] for it in plan.counting[folder]]
            write_json(d / INDEX, plan.counting[folder])
        else:
            recs = [r for r in plan.dd.kept if plan.sp.split[r["key"]] == folder]
        stats = {**_folder_stats(recs), "rejects": 0}
        if folder in plan.counting:
            stats["counts"] = sarcount.count_histogram(plan.counting[folder])
        folders[folder] = _close_folder(d, stats, [], write_manifest)
    for split in SPLITS:
        d = cfg.out / "chips" / split
        d.mkdir(parents=True, exist_ok=True)
        parts = chip_summaries[split]
        rejects = [r for s in parts for r in s["rejects"]]
        labels: Counter[str] = Counter()
        for r in plan.dd.kept:
            if plan.sp.split[r["key"]] == split:
                labels.update(r["counts"])
        stats = {"chips": sum(s["rows"] for s in parts), "instances_in": sum(s["instances_in"] for s in parts),
                 "instances_rejected": sum(r["instances"] for r in rejects), "rejects": len(rejects),
                 "scene_labels": dict(sorted(labels.items()))}
        folders[f"chips/{split}"] = _close_folder(d, stats, rejects, write_manifest)
    return folders


def _close_folder(d: Path, stats: dict[str, Any], rejects: list[dict[str, Any]], write_manifest: Any) -> dict:
    import json

    manifest = write_manifest(d)
    stats = {**stats, "rows": manifest["rows"], "bytes": manifest["bytes"], "shards": len(manifest["shards"])}
    write_json(d / STATS, stats)
    atomic_write_bytes(d / REJECTS,
                       "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rejects).encode())
    return stats


def _stats(cfg: BuildConfig, plan: _Plan, stages: list[dict[str, Any]],
           folders: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The build's accounting, per source and in total: instances in = kept + duplicates dropped + rejected."""
    per_source = {}
    for src, stage in zip(cfg.sources, stages, strict=True):
        acc = dict(stage["account"])
        kept = [r for r in plan.dd.kept if r["source"] == src.name]
        exact = [e for e in plan.dd.exact if e["source"] == src.name]
        near = [e for e in plan.dd.near_dropped if e["source"] == src.name]
        splits = {s: _folder_stats([r for r in kept if plan.sp.split[r["key"]] == s]) for s in SPLITS}
        entry = {
            **acc,
            "exact_duplicates": {"scenes": len(exact), "instances": sum(e["instances"] for e in exact),
                                 "labels_disagree": sum(e["labels_disagree"] for e in exact)},
            "near_duplicates_dropped": {"scenes": len(near), "instances": sum(e["instances"] for e in near)},
            "kept": {"scenes": len(kept), "instances": sum(len(r["objects"]) for r in kept)},
            "splits": {s: {"scenes": v["scenes"], "instances": v["instances"]} for s, v in splits.items()},
        }
        entry["invariant_holds"] = (acc["instances_in"] == entry["kept"]["instances"] + acc["instances_rejected"]
                                    + entry["exact_duplicates"]["instances"]
                                    + entry["near_duplicates_dropped"]["instances"])
        per_source[src.name] = entry
    total_keys = ("scenes_read", "scenes_written", "instances_in", "instances_out", "instances_rejected", "rejects")
    total = {k: sum(e[k] for e in per_source.values()) for k in total_keys}
    for k in ("exact_duplicates", "near_duplicates_dropped", "kept"):
        total[k] = {f: sum(e[k][f] for e in per_source.values()) for f in per_source[cfg.sources[0].name][k]}
    total["invariant_holds"] = all(e["invariant_holds"] for e in per_source.values())
    return {
        "sources": per_source,
        "total": total,
        "splits": {s: {k: folders[s][k] for k in ("scenes", "instances", "captions", "classes", "sources")}
                   for s in SPLITS},
        "sarcount": {f: {"items": len(plan.counting[f]), "counts": sarcount.count_histogram(plan.counting[f])}
                     for f in plan.counting},
        "chips": {s: {k: folders[f"chips/{s}"][k] for k in ("chips", "instances_in", "instances_rejected")}
                  for s in SPLITS},
        "dedupe": {"exact": len(plan.dd.exact), "labels_disagree": sum(e["labels_disagree"] for e in plan.dd.exact),
                   "near_groups": len(plan.dd.near_groups), "near_dropped": len(plan.dd.near_dropped),
                   "split_conflicts": len(plan.sp.conflicts)},
    }


def _manifest(cfg: BuildConfig, folders: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from d2c.schema import SCHEMA_VERSION
    from mmsar import __version__

    return {
        "name": cfg.name,
        "schema_version": SCHEMA_VERSION,
        "mmsar_version": __version__,
        "folders": {f: {"rows": v["rows"], "bytes": v["bytes"], "shards": v["shards"]} for f, v in folders.items()},
        "rows": sum(v["rows"] for f, v in folders.items()),
        "bytes": sum(v["bytes"] for v in folders.values()),
        "sources": [{"name": s.name, "format": s.format, "weight": s.weight, "licence": s.licence}
                    for s in cfg.sources],
        "config": cfg.resolved(),
    }


def _card_info(cfg: BuildConfig, stats: dict[str, Any], folders: dict[str, dict[str, Any]],
               plot_names: list[str], template_hash: str) -> dict[str, Any]:
    from mmsar.sources import _class_map

    src_stats = stats["sources"]
    return {
        "name": cfg.name,
        "licences": {s.name: s.licence for s in cfg.sources},
        "folders": folders,
        "sources": [{"name": s.name, "format": s.format, "licence": s.licence, "weight": s.weight,
                     "scenes": src_stats[s.name]["kept"]["scenes"], "instances": src_stats[s.name]["kept"]["instances"],
                     "rejects": src_stats[s.name]["rejects"],
                     "duplicates": src_stats[s.name]["exact_duplicates"]["scenes"]} for s in cfg.sources],
        "class_map": {s.name: _class_map(s).to_dict() for s in cfg.sources},
        "captions": {"per_image": cfg.captions.per_image, "seed": cfg.captions.seed,
                     "templates": str(cfg.resolved()["captions"]["templates"] or ""),
                     "template_set_hash": template_hash},
        "splits": stats["splits"],
        "sarcount": {"min_count": cfg.sarcount.min_count, "max_count": cfg.sarcount.max_count,
                     "counts_range": list(range(cfg.sarcount.min_count, cfg.sarcount.max_count + 1)),
                     "histograms": {f: v["counts"] for f, v in stats["sarcount"].items()}},
        "dedupe": {**stats["dedupe"], "threshold": cfg.dedupe.near_threshold, "drop_near": cfg.dedupe.drop_near},
        "plots": plot_names,
    }
