"""The per-scene work of ``d2c convert`` (image, captions, rows), run inline or in a process pool.

Why a module of its own: these functions run in worker processes, so they only touch module state set by
:func:`init_worker` (the job settings and a caption engine per process), and hand back one Arrow table per
chunk (cheaper to send between processes than a dict per row, and built column by column) with, per
scene, what became of it.
"""

from __future__ import annotations

import collections
import gc
import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

from d2c.blocks import SceneBlock, concat
from d2c.errors import D2CError, error_code
from d2c.gc_tuning import gc_frozen, relaxed_thresholds
from d2c.imageio import StretchConfig, load_image_record
from d2c.model import Provenance, Reject, Scene
from d2c.partial import settle as settle_partial
from d2c.readers.plan import ReadPlan
from d2c.rows import ImageRecord, RowInput, block_table, rows_table
from d2c.shards import row_bytes_of
from d2c.tiling import DEFAULT_MIN_VISIBLE, DEFAULT_NEGATIVE_RATE

# Scenes per task sent to a worker (and per Arrow table built). Annotation-only rows are small, so big
# chunks amortise the per-task cost; rows with image bytes keep chunks small to bound memory in flight.
CHUNK = 32
CHUNK_REFERENCE = 1024
CHUNK_BLOCKS = 4096  # ... and when they come as blocks (columns: a bigger chunk amortises each numpy step)


@dataclass(frozen=True)
class Job:
    """Per-scene settings a worker needs (picklable, so workers rebuild their own caption engine)."""

    templates: Path | None
    captions_per_image: int
    seed: int
    images_mode: str
    max_side: int | None
    stretch: StretchConfig
    max_pixels: int
    tile: int | None = None
    overlap: int = 200
    done_keys: frozenset[str] = frozenset()  # rows already in the shards a resumed run keeps
    include_default_templates: bool = True  # False: caption with ``templates`` alone
    tile_min_visible: float = DEFAULT_MIN_VISIBLE  # tiling's min_visible, below, negative_rate (tile_scene)
    tile_below: str = "difficult"
    tile_negative_rate: float = DEFAULT_NEGATIVE_RATE
    keep_partial: bool = False  # a scene some of whose objects were rejected is kept, flagged (d2c.partial)


class Done(NamedTuple):
    """What became of a processed scene: its captions, the byte estimates of its rows still to write
    (rows already in kept shards are left out), tiling's rejects and the instances it writes out.
    (A named tuple: it travels back from the workers for every scene.)"""

    captions: int
    sizes: list[int]
    rejects: list[Reject]
    instances_out: int


_ENGINE: Any = None
_JOB: Job | None = None


def init_worker(job: Job, engine: Any = None) -> None:
    global _ENGINE, _JOB
    from d2c.captions import CaptionEngine

    _JOB = job
    _ENGINE = engine or CaptionEngine(job.templates, captions_per_image=job.captions_per_image, seed=job.seed,
                                      include_defaults=job.include_default_templates)


def _init_pool_worker(job: Job) -> None:
    """A pool worker's start: the job, and the collector as relaxed as in the main process's run. A worker
    forked from the main process keeps the caption engine the main process set up for this job (see
    :func:`run_units`, :func:`run_chunks`) instead of building its own."""
    gc.set_threshold(*relaxed_thresholds())
    init_worker(job, _ENGINE if job == _JOB else None)


Entry = tuple[int, "Scene | Reject", bool]  # (input position, item, needs processing)


def process_chunk(chunk: list[tuple[int, Scene]]) -> tuple[list[tuple[int, Done | Reject]], Any]:
    """Scenes -> one Arrow table of their rows (cheap to send back from a worker) and, per scene, a
    :class:`Done` or the Reject that replaced it. Untiled scenes are captioned in one batch."""
    assert _JOB is not None
    if not _JOB.tile:
        scenes = [scene for _, scene in chunk]
        images = [_image_of(scene) for scene in scenes]  # before the block: a reference may fill in a size
        outcomes, table = _process_block(SceneBlock.from_scenes(scenes), images)
        return [(pos, res) for (pos, _), res in zip(chunk, outcomes, strict=True)], table
    outcomes: list[tuple[int, Done | Reject]] = []
    rows: list[RowInput] = []
    done_keys = _JOB.done_keys
    for pos, scene in chunk:
        res = _process_tiled(scene)
        if isinstance(res, Reject):
            outcomes.append((pos, res))
            continue
        all_rows, extra, kept_captions = res
        new = [r for r in all_rows if r.scene.key not in done_keys] if done_keys else all_rows
        out = scene.num_instances - sum(r.instances for r in extra)
        n_captions = kept_captions + sum(len(r.captions) for r in all_rows)
        outcomes.append((pos, Done(n_captions, [_row_bytes(r) for r in new], extra, out)))
        rows.extend(new)
    return outcomes, (rows_table(rows) if rows else None)


def _block_images(block: SceneBlock) -> list[ImageRecord | Reject]:
    """The image record of each scene of ``block`` (or the Reject of its image), filling in sizes read from
    image headers. Reference mode: a scene whose image the reader found missing needs no Scene."""
    assert _JOB is not None
    reference = _JOB.images_mode == "reference"
    images: list[ImageRecord | Reject | None] = [
        ImageRecord(None, path.replace("\\", "/"), fmt, None)
        if reference and "image_missing" in flags and w is not None and h is not None else None
        for path, fmt, flags, w, h in zip(block.image_path, block.image_format, block.flags, block.width,
                                          block.height, strict=True)]
    for k in [k for k, r in enumerate(images) if r is None]:
        (scene,) = block.take([k]).scenes()
        images[k] = _image_of(scene)
        block.width[k], block.height[k] = scene.width, scene.height  # filled in from the image header
    return images  # type: ignore[return-value]


def _process_block(block: SceneBlock, images: list[ImageRecord | Reject]) -> tuple[list[Done | Reject], Any]:
    """The scenes of ``block`` whose image record is ready, captioned in one batch, as rows; per scene a
    :class:`Done` or the Reject that replaced it. Rows of scenes in the shards a resumed run keeps are left
    out of the table (their captions still count)."""
    assert _JOB is not None and _ENGINE is not None
    out: list[Done | Reject] = list(images)  # type: ignore[arg-type]
    ready = [k for k, r in enumerate(images) if not isinstance(r, Reject)]
    part = block.take(ready)
    captions = _ENGINE.caption_block(part) if ready else []
    done_keys = _JOB.done_keys
    rows: list[int] = []
    counts = part.n.tolist()
    for j, (k, caps) in enumerate(zip(ready, captions, strict=True)):
        if isinstance(caps, Exception):
            prov = block.file[k], block.record[k]
            out[k] = Reject(*prov, str(caps), "caption_error", counts[j], block.key[k])
            continue
        new = not done_keys or block.key[k] not in done_keys
        data = images[k].bytes  # type: ignore[union-attr]
        out[k] = Done(len(caps[0]), [row_bytes_of(len(data) if data else 0, counts[j])] if new else [], [], counts[j])
        if new:
            rows.append(j)
    if not rows:
        return out, None
    written = part.take(rows)
    table = block_table(written, [captions[j][0] for j in rows], [captions[j][1] for j in rows],  # type: ignore[index]
                        [images[ready[j]] for j in rows])  # type: ignore[misc]
    return out, table


def _row_bytes(row: RowInput) -> int:
    """:func:`d2c.shards.row_bytes` of the row ``row`` becomes (it reads only the image bytes and objects)."""
    data = row.image.bytes
    return row_bytes_of(len(data) if data else 0, len(row.scene.instances))


Processed = tuple[list[RowInput], list[Reject], int]  # rows, rejects, captions of rows already kept


def _image_of(scene: Scene) -> ImageRecord | Reject:
    """The image record a scene's row stores, or the Reject when the image (or its size) is unusable."""
    assert _JOB is not None
    job = _JOB
    try:
        image = load_image_record(scene, mode=job.images_mode, max_side=job.max_side, stretch=job.stretch,
                                  max_pixels=job.max_pixels)
    except D2CError as exc:
        return Reject.of_scene(scene, error_code(exc), str(exc))
    except OSError as exc:
        return Reject.of_scene(scene, "image_unreadable", f"{scene.image_path}: {exc}")
    if job.images_mode == "embed" and image.bytes is None:
        return Reject.of_scene(scene, "image_missing", f"image {scene.image_path!r} not found (needed in embed mode)")
    if scene.width is None or scene.height is None:
        return Reject.of_scene(scene, "no_size", f"image {scene.image_path!r}: no image and no size in the annotation")
    return image


def _process_tiled(scene: Scene) -> Processed | Reject:
    """A large scene -> one row per kept tile, plus the Rejects of parent objects no tile holds
    (:func:`d2c.tiling.tile_rows`); tiles already in kept shards count their captions as written."""
    from d2c.tiling import tile_rows

    assert _JOB is not None and _ENGINE is not None
    job = _JOB
    res = tile_rows(scene, _ENGINE.caption_many, tile=job.tile, overlap=job.overlap,  # type: ignore[arg-type]
                    min_visible=job.tile_min_visible, below=job.tile_below, negative_rate=job.tile_negative_rate,
                    seed=job.seed, mode=job.images_mode, max_side=job.max_side, stretch=job.stretch,
                    skip=job.done_keys)
    if isinstance(res, Reject):
        return res
    return res.rows, res.rejects, res.skipped * job.captions_per_image


def chunk_size(job: Job, blocks: bool = False) -> int:
    """Entries per chunk: :data:`CHUNK_BLOCKS` when read as blocks, :data:`CHUNK_REFERENCE` when no image
    bytes are stored, else :data:`CHUNK`."""
    if blocks:
        return CHUNK_BLOCKS
    return CHUNK_REFERENCE if job.images_mode == "reference" else CHUNK


def run_chunks(items: Iterable[Entry], job: Job, workers: int, engine: Any = None
                ) -> Iterator[tuple[list[Entry], Any]]:
    """Yield ``(entries, chunk result)`` in input order, :func:`chunk_size` entries at a time; the result
    covers the entries flagged for processing (None when there are none). With ``workers > 1`` the chunks
    run in a process pool with a bounded number in flight, so memory stays flat and order is kept; they
    travel as :class:`PackedScenes`."""
    size = chunk_size(job)

    def chunks() -> Iterator[list[Entry]]:
        chunk: list[Entry] = []
        for entry in items:
            chunk.append(entry)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def todo(chunk: list[Entry]) -> list[tuple[int, Scene]]:
        return [(p, it) for p, it, t in chunk if t and isinstance(it, Scene)]

    if workers <= 1:
        init_worker(job, engine)
        for chunk in chunks():
            work = todo(chunk)
            yield chunk, (process_chunk(work) if work else None)
        return
    init_worker(job, engine)  # forked workers inherit it
    tasks = ((chunk, (process_packed, pack_scenes(work)) if (work := todo(chunk)) else None) for chunk in chunks())
    for chunk, result in _in_pool(tasks, job, workers, lambda chunk: chunk[0][0]):
        yield chunk, result


_PLAN: ReadPlan | None = None  # the plan run_units' forked workers read from


def can_read_in_workers() -> bool:
    """Workers can read a plan only when they are forked from the process that made it (Linux)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def uses_blocks(job: Job, plan: ReadPlan | None = None) -> bool:
    """Whether ``plan`` is read as :class:`SceneBlock`s for ``job``: annotation-only, untiled conversion
    (the images need no work and rows can be built from columns), by a plan that gives blocks."""
    return (job.images_mode == "reference" and not job.tile and not job.done_keys
            and (plan is None or getattr(plan, "gives_blocks", False)))


def run_units(plan: ReadPlan, job: Job, workers: int, engine: Any = None,
              on_units: Callable[[int], Any] | None = None) -> Iterator[tuple[list[Entry], Any]]:
    """What :func:`run_chunks` yields for the plan's items, but the items are read where they are
    processed, :func:`chunk_size` units at a time: with ``workers > 1`` by workers forked after planning,
    which inherit the plan; the main process gets back each item as a Reject or the :class:`SceneFacts`
    it counts, and the rows. Positions are numbered here, in order, so they are the positions a plain
    read gives.

    A plan whose units depend on the keys of earlier ones (``keys_across_units``: COCO rejects an image
    whose scene key an earlier image has) is read span by span as if nothing came before; each span comes
    back with the keys it located, checked here in order against all earlier spans' keys. A span that
    meets one again is read again, here, with those keys taken (rare: the same answer a reading in order
    gives, whatever the number of workers). ``on_units(n)`` hears how many units are done after each span
    (progress)."""
    global _PLAN
    if plan.head:
        yield [(k, rej, False) for k, rej in enumerate(plan.head)], None
    base = len(plan.head)
    spans = _spans(plan.units, chunk_size(job, uses_blocks(job, plan)), workers)
    _PLAN = plan
    seen: set[str] = set()  # the keys located by the spans so far
    try:
        # the plan's objects are frozen: the collector never walks them again (and forked workers share
        # their pages)
        with gc_frozen():
            init_worker(job, engine)  # forked workers inherit it; here it reads a span again if need be
            if workers <= 1:
                done: Iterable[tuple[Any, Any]] = ((span, process_units(span)) for span in spans)
            else:
                done = _in_pool(((span, (process_units, span)) for span in spans), job, workers,
                                lambda span: f"unit {span[0]}")
            # a span's records are freed once it is done, inline; not while forked workers share their pages
            # (freeing here would copy each page first: 0.7 s on the 116k-image benchmark), but all at once
            # when they are gone
            release = getattr(plan, "release_units", None)
            note = getattr(plan, "note_located", None)  # a SpanPlan hands its keys to its caller
            for span, (facts, (outcomes, table), located) in done:
                if located and not seen.isdisjoint(located):
                    facts, (outcomes, table), located = process_units(span, seen.intersection(located))
                seen.update(located)
                if note is not None:
                    note(located)
                if release is not None and workers <= 1:
                    release(*span)
                where = _positions(facts, base)
                entries = [(at, f, not isinstance(f, Reject)) for at, f in zip(where, facts, strict=True)]
                yield entries, ([(base + k, res) for k, res in outcomes], table)
                if on_units is not None:
                    on_units(span[1])
                base = where[-1] + _span_of(facts[-1]) if facts else base
            if release is not None and workers > 1:
                release(0, plan.units)
    finally:
        _PLAN = None


def _spans(units: int, size: int, workers: int) -> list[tuple[int, int]]:
    """Units ``0 .. units - 1`` in spans of ``size``; with several workers the last ``workers`` spans'
    worth in quarters, so that the workers finish together instead of one idling through the last
    span of another (the spans only batch the work: items and rows are the same for any split)."""
    tail = max(units - workers * size, 0) if workers > 1 else units
    cuts = [*range(0, tail, size), *range(tail, units, max(size // 4, 1))]
    return list(zip(cuts, [*cuts[1:], units][: len(cuts)], strict=True))


def process_units(span: tuple[int, int], taken: Iterable[str] = ()
                  ) -> tuple[list[Reject | SceneFacts | BlockFacts], Any, list[str]]:
    """A worker's task in :func:`run_units`: read units ``span`` of the plan and process them, with the
    keys ``taken`` by earlier units (see :func:`run_units`). Item positions in the result are local to
    the span; the keys the span located come last (none for a plan whose units are independent)."""
    assert _PLAN is not None and _JOB is not None
    across, blocks = getattr(_PLAN, "keys_across_units", False), uses_blocks(_JOB, _PLAN)
    keys: dict[str, int] = dict.fromkeys(taken, -1)
    items = list(settle_partial(_PLAN.read_units(*span, blocks=blocks, **({"taken": keys} if across else {})),
                                _JOB.keep_partial))
    located = [k for k, unit in keys.items() if unit >= 0]
    if blocks:
        return (*_process_unit_blocks(items), located)
    work = [(k, it) for k, it in enumerate(items) if isinstance(it, Scene)]
    result = process_chunk(work) if work else ([], None)
    return [it if isinstance(it, Reject) else SceneFacts.of(it) for it in items], result, located


def _process_unit_blocks(items: list[Scene | Reject | SceneBlock]) -> tuple[list[Reject | SceneFacts | BlockFacts], Any]:
    """:func:`process_units` of items read as blocks: all the scenes, blocks and single Scenes, are
    processed as one block; a block whose scenes were all written comes back as one :class:`BlockFacts`."""
    parts: list[SceneBlock] = []
    images: list[ImageRecord | Reject] = []
    for it in items:
        if isinstance(it, SceneBlock):
            parts.append(it)
            images += _block_images(it)
        elif isinstance(it, Scene):
            images.append(_image_of(it))  # before the block: a reference may fill in a size
            parts.append(SceneBlock.from_scenes([it]))
    if not parts:
        return items, ([], None)  # type: ignore[return-value]
    outcomes, table = _process_block(concat(parts), images)
    facts: list[Reject | SceneFacts | BlockFacts] = []
    local: list[tuple[int, Done | Reject]] = []  # outcomes not summed up in a BlockFacts, by local position
    pos = at = 0
    for it in items:
        if isinstance(it, Reject):
            facts.append(it)
            pos += 1
            continue
        block = it if isinstance(it, SceneBlock) else None
        n = len(block) if block is not None else 1
        mine = outcomes[at : at + n]
        if block is not None and all(type(d) is Done for d in mine):
            facts.append(BlockFacts.of(block, mine))  # type: ignore[arg-type]
        else:
            facts.extend(SceneFacts.of_block(block) if block is not None else [SceneFacts.of(it)])  # type: ignore[arg-type]
            local.extend(zip(range(pos, pos + n), mine, strict=True))
        pos += n
        at += n
    return facts, (local, table)


def _span_of(fact: Reject | SceneFacts | BlockFacts) -> int:
    """Input positions an entry stands for."""
    return fact.count if type(fact) is BlockFacts else 1


def _positions(facts: list[Reject | SceneFacts | BlockFacts], base: int) -> list[int]:
    """The input position of each entry of ``facts``, the first at ``base``."""
    out = []
    for f in facts:
        out.append(base)
        base += _span_of(f)
    return out


@dataclass(frozen=True)
class BlockFacts:
    """``count`` consecutive scenes of one block, each written to one row: what the main process counts
    and writes for them, summed up (per-scene facts and outcomes cost more to send and count than the
    scenes' rows themselves)."""

    count: int
    source: str  # of the first scene (the shard writer's metadata)
    root: str
    instances: int  # instances in, all of them written
    clipped: int
    categories: list[str]  # of every instance
    flags: list[str]  # of every scene, one after the other
    sizes: list[int]  # each row's byte estimate
    captions: int

    @classmethod
    def of(cls, block: SceneBlock, done: list[Done]) -> BlockFacts:
        return cls(len(block), block.source[0], block.root[0], block.num_instances, sum(block.clipped),
                   block.category, list(chain.from_iterable(block.flags)),
                   [d.sizes[0] for d in done], sum(d.captions for d in done))


def _in_pool(tasks: Iterable[tuple[Any, tuple[Any, Any] | None]], job: Job, workers: int,
             where: Any) -> Iterator[tuple[Any, Any]]:
    """Run ``(tag, (fn, arg) or None)`` tasks in a process pool, yielding ``(tag, fn(arg) or None)`` in
    submission order with at most ``4 * workers`` in flight (memory stays flat). ``where(tag)`` names
    the input of a task whose worker died, in the error."""
    # concurrent.futures, not multiprocessing.Pool: a worker that dies (out of memory, a crash in a C
    # library) breaks the pool with an error here, where Pool would wait for its result for ever.
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_pool_worker, initargs=(job,))
    pending: collections.deque = collections.deque()
    tag: Any = None
    try:
        for tag, task in tasks:
            pending.append((tag, pool.submit(*task) if task is not None else None))
            while len(pending) > 4 * workers:
                tag, fut = pending.popleft()
                yield tag, (fut.result() if fut is not None else None)
        while pending:
            tag, fut = pending.popleft()
            yield tag, (fut.result() if fut is not None else None)
    except BrokenProcessPool:
        raise WorkerDiedError(
            f"a worker process died (killed, out of memory or crashed) on input items from "
            f"{where(tag) if tag is not None else 0}; the complete shards are kept: rerun with --resume") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class SceneFacts(NamedTuple):
    """What the main process needs of a Scene that a worker read: the accounting (instances, clipped,
    classes, flags), the reject fields (key, provenance) and the shard writer's metadata (source, root).
    A named tuple of plain values: a chunk of them pickles several times faster than dataclasses."""

    key: str
    source: str
    root: str
    num_instances: int
    clipped: int
    flags: list[str]
    categories: list[str]
    file: str  # the provenance's annotation file and record
    record: str | None

    @classmethod
    def of(cls, scene: Scene) -> SceneFacts:
        prov = scene.provenance
        return cls(scene.key, scene.source, scene.root, len(scene.instances), scene.clipped, scene.flags,
                   scene.categories, prov.file, prov.record)

    @classmethod
    def of_block(cls, block: SceneBlock) -> list[SceneFacts]:
        """The facts of every scene of ``block``."""
        bounds = block.offsets.tolist()
        cats = block.category
        return list(map(cls, block.key, block.source, block.root, block.n.tolist(), block.clipped, block.flags,
                        [cats[a:b] for a, b in zip(bounds, bounds[1:], strict=False)], block.file, block.record))

    @property
    def provenance(self) -> Provenance:
        return Provenance(self.file, self.record)


def pack_scenes(work: list[tuple[int, Scene]]) -> tuple[list[int], SceneBlock]:
    """``work`` in the form it is sent to a worker: positions and a :class:`SceneBlock` (pickling Scenes as
    they are, a small numpy array and several tuples per instance, costs the main process more than the
    workers save it)."""
    return [p for p, _ in work], SceneBlock.from_scenes([s for _, s in work])


def unpack_scenes(packed: tuple[list[int], SceneBlock]) -> list[tuple[int, Scene]]:
    """The chunk :func:`pack_scenes` was given (equal Scenes and Instances, values as Python floats)."""
    positions, block = packed
    return list(zip(positions, block.scenes(), strict=True))


def process_packed(packed: tuple[list[int], SceneBlock]) -> tuple[list[tuple[int, Done | Reject]], Any]:
    """:func:`process_chunk` of a chunk sent to a worker by :func:`pack_scenes`."""
    return process_chunk(unpack_scenes(packed))


class WorkerDiedError(D2CError):
    """A worker process of ``--workers N`` ended without a result (the run stops; ``--resume`` goes on)."""
