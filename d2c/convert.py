"""``convert``: annotations in, captioned Parquet shards out (read -> caption -> image -> rows -> shards).

Why it is built this way:

- Every input item (Scene or Reject) gets its position in the reader's stream. Rows reach the shard
  writer in that order whatever the number of workers (chunks go to a process pool and come back in
  submission order), and shard boundaries depend only on the ordered rows, so ``--workers 1`` and
  ``--workers 4`` give byte-identical shards.
- Each shard records the input span it covers (``first_item``/``next_item`` in its metadata), so
  ``--resume`` keeps the complete shards written by an identical earlier run, re-reads the annotations
  (cheap) and resumes writing after the last complete shard: no scene is duplicated or lost.
- Every input object ends up in a shard or in ``_rejects.jsonl``; ``_stats.json`` holds the accounting,
  with the invariant ``instances in = instances out + instances rejected``.

Reliability tests kill a run on purpose with ``D2C_CRASH_AT=<point>:<n>`` (exit 137 the n-th time the
point is reached): ``after_rows`` (a row handed to the shard writer), ``mid_shard`` (a row group written
to a shard's temporary file), ``before_rename`` (a shard closed, not yet renamed).
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d2c import convert_worker as worker
from d2c.convert_worker import Entry
from d2c.errors import D2CError, UsageError
from d2c.gc_tuning import gc_relaxed
from d2c.model import Reject, Scene
from d2c.options import RUN_KEYS, ConvertOptions
from d2c.partial import settle as settle_partial
from d2c.progress import Progress
from d2c.schema import SCHEMA_VERSION
from d2c.shards import (
    REJECTS,
    STATS,
    ShardWriter,
    atomic_write_bytes,
    read_metadata,
    shard_paths,
    write_manifest,
)

log = logging.getLogger(__name__)

@dataclass
class ConvertResult:
    """What a run produced: the folder, its accounting, the shard files and the rejects report."""

    out: Path
    stats: dict[str, Any]
    shards: list[Path]
    rejects_path: Path
    rejects: list[Reject] = field(default_factory=list)
    # ``options.span`` of a plan with keys across units (COCO): the scene keys the span's units located,
    # which a caller joining spans checks against the spans before it (d2c.readers.plan.SpanPlan)
    span_keys: list[str] | None = None

    @property
    def ok(self) -> bool:
        return not self.rejects


def _load_class_map(class_map: Any) -> Any:
    from d2c.classes import ClassMap

    if class_map is None or isinstance(class_map, ClassMap):
        return class_map or ClassMap.default()
    return ClassMap.load(class_map)  # a path, or a name in templates/classmaps (UsageError if neither)


class StrictError(D2CError):
    """``strict=True`` and the run rejected something (the shards and reports are still written)."""


@dataclass
class _ResumePlan:
    next_item: int = 0
    start_index: int = 0
    prefix: str | None = None
    done_keys: set[str] = field(default_factory=set)


def _resume_plan(out: Path, run: dict[str, Any]) -> _ResumePlan:
    """Which complete shards of an earlier identical run can be kept; later or stale ones are removed."""
    import pyarrow.parquet as pq

    plan = _ResumePlan()
    for tmp in out.glob(".*.tmp"):
        tmp.unlink()
    for i, path in enumerate(shard_paths(out)):
        try:
            meta = read_metadata(path)
            keys = pq.read_table(path, columns=["key"]).column("key").to_pylist()
        except (OSError, ValueError) as exc:  # damaged under its final name (a partial copy, a disk fault)
            log.warning("resume: %s is unreadable (%s); writing it and the shards after it again", path.name, exc)
            for later in shard_paths(out)[i:]:
                later.unlink()
            break
        same = all(meta.get(k) == run.get(k) for k in RUN_KEYS)
        # a tiled scene's rows may straddle two shards: the next shard starts at the last item or after
        if not same or meta.get("shard_index") != i or meta.get("first_item", -1) < plan.next_item - 1:
            if not same:
                raise UsageError(f"{path}: written with other settings (seed, templates, mode, shard size, "
                                 "tiling, --keep-partial-scenes or geometry limits); "
                                 "use a new --out folder or run without --resume")
            log.info("resume: dropping %s (not contiguous with the shards before it)", path.name)
            for later in shard_paths(out)[i:]:
                later.unlink()
            break
        plan.prefix = meta.get("source")
        plan.next_item = int(meta["next_item"])
        plan.start_index = i + 1
        plan.done_keys.update(keys)
    if plan.start_index:
        log.info("resume: keeping %d complete shards (%d rows), restarting at input item %d",
                 plan.start_index, len(plan.done_keys), plan.next_item)
    return plan


class _Tally:
    """The run's accounting: :class:`d2c.accounting.Stats` plus the rejects themselves, classes, flags
    and captions written (all of it goes to _stats.json)."""

    def __init__(self) -> None:
        from d2c.accounting import Stats

        self.stats = Stats()
        self.rejects: list[Reject] = []
        self.classes: collections.Counter[str] = collections.Counter()
        self.flags: collections.Counter[str] = collections.Counter()
        self.captions = 0

    def scene(self, scene: Scene) -> None:
        self.stats.add_scene(scene)

    def written(self, scene: Scene, n_captions: int, instances_out: int | None = None) -> None:
        """A scene reached the shards; ``instances_out`` (tiled scenes) excludes objects no tile holds."""
        self.written_many([scene], n_captions, scene.num_instances if instances_out is None else instances_out)

    def written_many(self, scenes: list[Scene] | list[worker.SceneFacts], n_captions: int, instances_out: int) -> None:
        """Several scenes reached the shards, with ``n_captions`` and ``instances_out`` in all (one
        Counter update per chunk instead of one per scene)."""
        self.stats.scenes_written += len(scenes)
        self.stats.instances_out += instances_out
        self.classes.update([c for s in scenes for c in s.categories])
        self.flags.update([f for s in scenes for f in s.flags])
        self.captions += n_captions

    def block(self, facts: worker.BlockFacts) -> None:
        """Scenes read and written together (:class:`d2c.convert_worker.BlockFacts`)."""
        st = self.stats
        st.scenes_read += facts.count
        st.instances_in += facts.instances
        st.instances_clipped += facts.clipped
        st.scenes_written += facts.count
        st.instances_out += facts.instances
        self.classes.update(facts.categories)
        self.flags.update(facts.flags)
        self.captions += facts.captions

    def reject(self, rej: Reject, *, counted_in: bool) -> None:
        self.stats.add_reject(rej, already_in=counted_in)
        self.rejects.append(rej)

    def to_dict(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            **extra,
            **self.stats.to_dict(),
            "rejects_total": len(self.rejects),
            "invariant_holds": not self.stats.invariant_problems(),
            "captions": self.captions,
            "classes": dict(sorted(self.classes.items())),
            "flags": dict(sorted(self.flags.items())),
        }


# A run keeps its job and caption engine in d2c.convert_worker's module globals (so forked pool workers
# inherit them rather than rebuild them): threads of one process (a Dask worker's, an app's) therefore
# convert one at a time. Processes, the unit of parallel work here, are unaffected.
_ONE_RUN_AT_A_TIME = threading.RLock()


def _one_run_at_a_time(fn: Any) -> Any:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _ONE_RUN_AT_A_TIME:
            return fn(*args, **kwargs)
    return run


@_one_run_at_a_time
def convert(input: str | Path, out: str | Path, options: ConvertOptions | None = None) -> ConvertResult:
    """Read ``input``, caption every scene and write Parquet shards, ``_manifest.json``, ``_stats.json`` and
    ``_rejects.jsonl`` to ``out``, with the settings ``options`` (:class:`d2c.options.ConvertOptions`; the
    defaults when None). Raises :class:`UsageError` for impossible options and :class:`StrictError` (after
    writing everything) when ``options.strict`` and anything was rejected. A scene some of whose objects
    were rejected is rejected whole (``partial_scene``), unless ``keep_partial_scenes``; an object over the
    geometry budget is a ``too_complex`` Reject."""
    o = options if options is not None else ConvertOptions()
    from d2c import read
    from d2c.captions import CaptionEngine
    from d2c.readers import plan as plan_reading

    out = Path(out)
    existing = shard_paths(out) if out.is_dir() else []
    if existing and not o.resume:
        raise UsageError(f"{out} already holds {len(existing)} shard(s); use --resume or an empty --out folder")
    cmap = _load_class_map(o.class_map)
    templates_path = Path(o.templates) if o.templates is not None else None
    engine = CaptionEngine(templates_path, captions_per_image=o.captions_per_image, seed=o.seed,
                           include_defaults=o.include_default_templates)
    run = o.run_metadata({"templates": engine.template_set_hash, "class_map": cmap.to_dict()})
    plan = _resume_plan(out, run) if o.resume and existing else _ResumePlan()
    fresh_from = max(plan.next_item - 1, 0)  # the last kept item may have rows still to write (tiles)
    out.mkdir(parents=True, exist_ok=True)
    job = worker.Job(templates_path, o.captions_per_image, int(o.seed), o.images_mode, o.max_side, o.stretch,
                     o.max_pixels, o.tile, o.overlap, frozenset(plan.done_keys), o.include_default_templates,
                     o.tile_min_visible, o.tile_below, o.tile_negative_rate, bool(o.keep_partial_scenes))
    read_args: dict[str, Any] = {
        "source": o.source, "images": Path(o.images) if o.images else None, "class_map": cmap,
        "annotations": Path(o.annotations) if o.annotations else None,
        "require_images": o.images_mode == "embed",
        "max_pixels": o.max_pixels, "max_vertices": o.max_vertices, "max_parts": o.max_parts}
    workers = o.workers
    # workers read the input themselves when the reader can split it (not when resuming: which items
    # to skip depends on their positions, known only in order)
    # (and, on one worker, annotation-only runs read the plan as blocks of scenes when it gives them)
    spanned = _span_plan(plan_reading(input, format=o.format, **read_args), o.span, o.format, o.span_taken) \
        if o.span is not None else None
    units = (spanned if spanned is not None else plan_reading(input, format=o.format, **read_args)) \
        if (workers > 1 and not plan.done_keys and worker.can_read_in_workers()) or \
        (workers <= 1 and worker.uses_blocks(job)) else None
    planned = units.units + len(units.head) if units is not None else None
    if workers <= 1 and units is not None and not worker.uses_blocks(job, units):
        units = None  # read in order, as a stream (the plan's size still gives the progress a total)
    read_so_far = [0]

    if spanned is not None and planned is None:
        planned = spanned.units + len(spanned.head)
    if planned is None and o.progress is not False:
        planned = _planned_total(input, o.format, read_args)

    def items() -> Iterator[Entry]:
        from d2c.readers.plan import plan_items

        stream = plan_items(spanned) if spanned is not None else read(input, format=o.format, **read_args)
        for pos, item in enumerate(settle_partial(stream, o.keep_partial_scenes)):
            todo = isinstance(item, Scene) and (
                o.tile is not None or pos >= plan.next_item or item.key not in plan.done_keys)
            read_so_far[0] = pos + 1
            yield pos, item, todo

    tally = _Tally()
    sink = _Sink(out, run, plan, o.shard_rows, o.max_bytes, o.source)
    t0 = time.monotonic()
    # after planning the count of units (COCO images, DOTA/VOC annotation files) is known: a total and ETA
    progress = o.progress
    bar = Progress("converting", units.units if units is not None else planned, unit="units" if planned else "scenes",
                   enabled=progress if isinstance(progress, str) else
                   ("off" if progress is False else ("rich" if progress else None)), logger=log)
    chunks = worker.run_units(units, job, workers, engine, on_units=bar.update) if units is not None else \
        worker.run_chunks(items(), job, workers, engine)
    try:
        with gc_relaxed(), bar:
            for entries, result in chunks:
                _account(entries, result, tally, sink, fresh_from, o.captions_per_image)
                if units is None:  # items read (a unit gives one, or a reject more: the share is about right)
                    done = min(read_so_far[0], planned) if planned else tally.stats.scenes_read
                    bar.update(done, _status(tally))
                else:
                    bar.info = _status(tally)
        closed = sink.writer.close() if sink.writer is not None else []
    except BaseException:
        if sink.writer is not None:
            sink.writer.abort()
        raise
    result = _finish(out, tally, closed, run, input, o.format, o.strict, time.monotonic() - t0)
    if spanned is not None and spanned.keys_across_units:
        result.span_keys = spanned.located()
    return result


def _planned_total(input: str | Path, format: str, read_args: dict[str, Any]) -> int | None:
    """The number of units a streamed run reads (embedding, tiling, resuming on one worker), only for the
    progress bar's total and ETA: planning lists the annotation files (DOTA/VOC) or indexes the COCO file,
    cheap beside images. None when the reader cannot plan or the input does not plan cleanly (the read
    itself then reports the problem, item by item)."""
    from d2c.readers import plan as plan_reading

    try:
        p = plan_reading(input, format=format, **read_args)
    except (D2CError, OSError, ValueError):
        return None
    return p.units + len(p.head) if p is not None else None


def _span_plan(whole: Any, span: tuple[int, int], format: str, taken: tuple[str, ...]) -> Any:
    """The :class:`d2c.readers.plan.SpanPlan` of ``span``, or UsageError naming the problem."""
    from d2c.readers.plan import SpanPlan

    if whole is None:
        raise UsageError(f"span: the {format!r} reader cannot split its input into units (COCO, DOTA and VOC can)")
    return SpanPlan(whole, span[0], span[1], taken)


class _Sink:
    """The shard writer, created at the first row (its prefix and dataset root come from that scene)."""

    def __init__(self, out: Path, run: dict[str, Any], plan: _ResumePlan, shard_rows: int, max_bytes: int,
                 source: str | None) -> None:
        self.out, self.run, self.plan = out, run, plan
        self.shard_rows, self.max_bytes, self.source = shard_rows, max_bytes, source
        self.writer: ShardWriter | None = None

    def write(self, scene: Scene | worker.SceneFacts | worker.BlockFacts, table: Any, items: list[int],
              sizes: list[int]) -> None:
        if self.writer is None:
            from d2c import __version__

            prefix = self.plan.prefix or self.source or scene.source
            meta = {**self.run, "source": prefix, "tool_version": __version__, "dataset_root": scene.root}
            self.writer = ShardWriter(self.out, prefix, shard_rows=self.shard_rows, max_bytes=self.max_bytes,
                                      metadata=meta, start_index=self.plan.start_index)
        self.writer.write_table(table, items, sizes)


def _account(entries: list[Entry], result: Any, tally: _Tally, sink: _Sink, fresh_from: int,
             captions_per_image: int) -> None:
    """Count one chunk in input order and hand its rows to the shard writer. Rows of items before
    ``fresh_from`` should all be in the shards a resumed run keeps; any such new row is refused."""
    outcomes, table = result if result is not None else ([], None)
    outcome = dict(outcomes)
    keep: list[int] = []
    items: list[int] = []
    sizes: list[int] = []
    written: list[Scene] = []
    first: Any = None  # the first scene (or block of them) written: the shard writer's source and root
    n_captions = n_out = 0
    row = 0
    for pos, item, todo in entries:
        if isinstance(item, Reject):
            tally.reject(item, counted_in=False)
            continue
        if type(item) is worker.BlockFacts:  # scenes all written, one row each (never in a resumed run)
            assert pos >= fresh_from
            tally.block(item)
            keep.extend(range(row, row + item.count))
            items.extend(range(pos, pos + item.count))
            sizes.extend(item.sizes)
            first = first or item
            row += item.count
            continue
        tally.scene(item)
        if not todo:  # written by the run being resumed
            tally.written(item, captions_per_image)
            continue
        res = outcome[pos]
        if isinstance(res, Reject):
            tally.reject(res, counted_in=True)
            continue
        for rej in res.rejects:
            tally.reject(rej, counted_in=True)
        n = len(res.sizes)
        if pos < fresh_from and n:
            tally.reject(Reject(item.provenance.file, item.provenance.record,
                                "scene is new since the shards being resumed were written",
                                "resume_changed", res.instances_out, item.key), counted_in=True)
        else:
            keep.extend(range(row, row + n))
            items.extend([pos] * n)
            sizes.extend(res.sizes)
            written.append(item)
            first = first or item
            n_captions += res.captions
            n_out += res.instances_out
        row += n
    if written:
        tally.written_many(written, n_captions, n_out)
    if keep:
        if len(keep) != table.num_rows:
            table = table.take(keep)
        sink.write(first, table, items, sizes)


def _finish(out: Path, tally: _Tally, closed: list, run: dict[str, Any], input: Any, format: str,
            strict: bool, seconds: float) -> ConvertResult:
    """Write the manifest, _rejects.jsonl and _stats.json (each atomically), then report."""
    manifest = write_manifest(out, closed)
    lines = [json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in tally.rejects]
    rejects_path = out / REJECTS
    atomic_write_bytes(rejects_path, "".join(lines).encode("utf-8"))
    stats = tally.to_dict({
        "schema_version": SCHEMA_VERSION,
        "format": format,
        "seed": run["seed"],
        "images_mode": run["images_mode"],
        "captions_per_image": run["captions_per_image"],
        "template_set_hash": run["template_set_hash"],
        "shards": len(manifest["shards"]),
        "rows": manifest["rows"],
        "bytes": manifest["bytes"],
        # tiled runs only, so untiled _stats.json stays as it was
        **({"tiling": {"tile": run["tile"], "overlap": run["overlap"], "min_visible": run["tile_min_visible"],
                       "below": run["tile_below"], "negative_rate": run["tile_negative_rate"]}}
           if run["tile"] is not None else {}),
    })
    atomic_write_bytes(out / STATS, (json.dumps(stats, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    for problem in tally.stats.invariant_problems():
        log.error("accounting: %s", problem)
    from d2c.accounting import advice

    for line in advice(tally.stats):
        log.warning("%s", line)
    st = tally.stats
    log.info("converted %d of %d scenes (%d instances, %d rejects) into %d shard(s) in %.1f s",
             st.scenes_written, st.scenes_read, st.instances_out, len(tally.rejects), len(manifest["shards"]),
             seconds)
    shards = [out / s["file"] for s in manifest["shards"]]
    result = ConvertResult(out, stats, shards, rejects_path, list(tally.rejects))
    if strict and tally.rejects:
        raise StrictError(f"{len(tally.rejects)} reject(s) under --strict; see {rejects_path}")
    return result


def _status(tally: _Tally) -> str:
    return f"{tally.stats.instances_out} instances, {len(tally.rejects)} rejects"
