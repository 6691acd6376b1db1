"""COCO JSON: parsed once with orjson, annotations grouped by image id, instances built as the scenes are read.

Streams: before the first Scene the file is parsed and indexed (which annotations belong to which image,
a few passes over the parsed lists); images are then located and their instances built a chunk of images
at a time (4-point geometry vectorised over the chunk), each record freed once read, so memory is the parsed
file plus a bounded working set, not every Instance of the file at once. Chunks of images can be read out of
order, by forked workers (:class:`CocoPlan`).

Handles polygon segmentations (several parts: the polygon of their union, oriented box of the union), RLE
masks (pycocotools), ``iscrowd``, category ids from 0, integer or string names, image ids of any kind,
missing ``info``/``licenses``, extra keys. Images without annotations are Scenes with no instances.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from itertools import chain, compress, groupby
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from d2c.blocks import SceneBlock
from d2c.classes import ClassResolver
from d2c.gc_tuning import age_young_objects, gc_frozen, gc_paused
from d2c.images import ImageFinder
from d2c.model import Provenance, Reject, Scene, scene_key
from d2c.readers.base import (
    ImageInfo,
    InstanceBatch,
    QuadColumns,
    RawObject,
    ReadOptions,
    locate_image,
    parse_error_position,
    quad_columns,
    rel_to,
    scene_parts,
)

log = logging.getLogger(__name__)
RLE_MAX_PIXELS = 1 << 30  # an RLE mask's declared size, like an image's, is capped before decoding


class CocoReader:
    name = "coco"

    def detect(self, path: Path) -> bool:
        path = Path(path)
        if path.is_file():
            return path.suffix.lower() == ".json" and _looks_like_json(path)
        if path.is_dir():
            return any(_looks_like_json(p) for p in path.glob("*.json"))
        return False

    def read(self, path: Path, options: ReadOptions) -> Iterator[Scene | Reject]:
        for f in _files(path, options):
            yield from read_coco_file(f, options)

    def plan(self, path: Path, options: ReadOptions) -> CocoPlan | None:
        """One COCO file as a :class:`CocoPlan` (see :mod:`d2c.readers.plan`); None for a folder of several."""
        files = _files(path, options)
        return CocoPlan(files[0], options) if len(files) == 1 else None


def _files(path: Path, options: ReadOptions) -> list[Path]:
    target = Path(options.annotations) if options.annotations else Path(path)
    return [target] if target.is_file() else sorted(target.glob("*.json"))


def _looks_like_json(path: Path) -> bool:
    if not path.is_file():  # a FIFO would block the read for ever
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(64).lstrip()[:1] == b"{"
    except OSError:
        return False


def read_coco_file(json_path: Path, options: ReadOptions) -> Iterator[Scene | Reject]:
    """All Scenes and Rejects of one COCO file, in the file's image order.

    The file is parsed and indexed (:class:`CocoPlan`) before the first Scene; images are then located and
    their instances built a chunk at a time as the iterator is consumed, and each image's records are
    dropped once built, so memory stays near the parsed JSON."""
    with gc_paused():  # the parsed document is made in here: the collector never walks its millions of objects
        plan = CocoPlan(json_path, options)
    with gc_frozen():
        yield from plan.head
        yield from plan.read(0, plan.units, release=True)


class CocoPlan:
    """One COCO file, parsed and indexed (a :class:`d2c.readers.plan.ReadPlan`): ``head`` holds the Rejects
    found by the index (annotations of no image, duplicate image ids, image records without an id or a file
    name; or the one Reject of a file that cannot be parsed), and every other image is a unit.

    Why an index and not a full plan: locating images and reading annotations is two thirds of the work
    before the first Scene, and it splits by image, so it is done when units are read (by forked workers,
    in parallel). What cannot split, image ids and which annotations belong to which image, is indexed here,
    in a few passes over the parsed lists. One thing still crosses units: an image whose scene key an
    earlier image has is a Reject. The plan remembers the first unit of each key it located, which is right
    for any reading that has read every earlier unit first; a worker reading a span out of order passes
    ``taken`` instead, and the caller checks the keys it comes back with."""

    keys_across_units = True  # see read_units' ``taken``

    def __init__(self, json_path: Path, options: ReadOptions) -> None:
        json_path = Path(os.path.abspath(json_path))
        root = Path(os.path.abspath(options.images)) if options.images else json_path.parent
        # the image folders to search, as strings (looked up for every image)
        folders = [str(root)] if options.images else [str(root), str(root / "images")]
        if not options.images and (root / "images").is_dir():
            folders.reverse()  # a missing image is expected in images/
        self.root, self.folders, self.options = root, folders, options
        fname = rel_to(json_path, root)
        self.out = _Output(options.source or json_path.stem, os.path.abspath(root), fname)
        with gc_paused():
            data, error = _load(json_path)
            if error is None and (not isinstance(data, dict) or not isinstance(data.get("images"), list)):
                error = "not a COCO file: expected an object with an 'images' list"
            self.categories = _categories(data.get("categories")) if error is None else {}
            self.index = _Index.of(data, fname) if error is None else _Index.of({"images": []}, fname)
            del data
            age_young_objects()  # the parsed document's million containers: never walked by the next collection
        self.head = self.index.head if error is None else [Reject(fname, None, error, "parse_error")]
        self.units = len(self.index.units)
        self.finder = ImageFinder(root)
        self.finder.prime(folders)  # listed once here, not once in every forked worker
        self.classes = ClassResolver(options.class_map, options.unknown_classes)
        self.first_units: dict[str, int] = {}  # scene key -> the first unit located with it

    gives_blocks = True  # read_units(..., blocks=True) gives runs of plain images as SceneBlocks

    def read_units(self, start: int, stop: int, *, blocks: bool = False, taken: dict[str, int] | None = None
                   ) -> Iterator[Scene | Reject | SceneBlock]:
        """The Scenes and Rejects of units ``start`` .. ``stop - 1``, in order; with ``blocks``, runs of
        images whose every annotation is a plain valid 4-point one come as :class:`SceneBlock`s.

        ``taken``: scene key -> the first unit located with it (-1: before ``start``); an image whose key
        an earlier unit has is a Reject. The span's located keys are added to it. Without it, the plan's
        :attr:`first_units` is used: right once every unit before ``start`` has been read."""
        return self.read(start, stop, release=False, blocks=blocks, taken=taken)

    def release_units(self, start: int, stop: int) -> None:
        """Drop the records of units ``start`` .. ``stop - 1`` (read for the last time): the process that
        parsed frees a span as soon as it is done with it, instead of all at the end."""
        self.index.release(start, stop)

    def read(self, start: int, stop: int, *, release: bool, blocks: bool = False,
             taken: dict[str, int] | None = None) -> Iterator[Scene | Reject | SceneBlock]:
        """:meth:`read_units`; with ``release`` each image's records are dropped once built (a single pass
        over the file), so they cannot be read again."""
        taken = self.first_units if taken is None else taken
        at = start
        while at < stop:
            with gc_paused():  # the whole chunk, Scenes included, is allocated here: see gc_paused
                items, at = _build_chunk(self, at, stop, release, blocks, taken)
            yield from items
            del items  # before the next chunk is built: one chunk alive at a time


def _load(json_path: Path) -> tuple[Any, str | None]:
    """The parsed file, or the reason it cannot be parsed (with the parser's line and column)."""
    if not json_path.is_file():
        return None, "not a regular file (a pipe, device or folder): reading it could block for ever"
    try:
        return _loads(json_path.read_bytes()), None
    except orjson.JSONDecodeError as exc:
        return None, f"invalid JSON at {parse_error_position(exc)}: {exc.msg}"
    except OSError as exc:
        return None, f"cannot read file: {exc}"


# An annotation waiting to be built: a plain 4-point one as (id, raw category, difficult, its 8 numbers),
# tuples of plain values, much smaller than the record they replace; any other one as its record.
Entry = tuple[Any, str, bool, tuple[Any, ...]] | dict
# an image waiting to be built: (image id, where its image is, its annotations in file order, its scene key,
# whether an earlier image has that key: then it is a Reject; whether every annotation is a plain tuple)
Pending = tuple[Any, ImageInfo, list[Entry], str, bool, bool]
CHUNK_OBJECTS = 16384  # objects built in one vectorised pass: amortises numpy's per-call cost, bounds the working set


class _Index:
    """The parsed images and annotations, and which annotations belong to which image (each record is
    read when its image is): the part of planning that needs the whole file.

    ``units`` are the positions of the images that are read (the first entry of each id, with an id and a
    file name); the annotations of units ``a`` .. ``b - 1`` are ``anns[unit_order[unit_cum[a]:unit_cum[b]]]``,
    unit after unit, each unit's in file order."""

    def __init__(self, images: list[Any], anns: list[Any], ids: list[Any], units: np.ndarray,
                 unit_order: np.ndarray, unit_cum: np.ndarray, head: list[Reject]) -> None:
        self.images, self.anns, self.ids, self.head = images, anns, ids, head
        self.units, self.unit_order, self.unit_cum = units, unit_order, unit_cum

    @classmethod
    def of(cls, data: dict, fname: str) -> _Index:
        """Index ``data`` (a parsed COCO object with an 'images' list), taking its lists out of it."""
        images = data.pop("images")
        anns = data.pop("annotations", None)
        anns = anns if isinstance(anns, list) else []
        ids = [_img_id(img) for img in images]
        first: dict[Any, int] = {}  # image id -> position of its first entry (its annotations go with it)
        for n, iid in enumerate(ids):
            if iid is not None and iid not in first:
                first[iid] = n
        get = first.get
        owner = np.fromiter(
            (get(i, -1) if isinstance(i, (int, str)) else -1
             for i in (a.get("image_id") if isinstance(a, dict) else None for a in anns)), np.int64, len(anns))
        head = [Reject(fname, f"annotation {anns[j].get('id') if isinstance(anns[j], dict) else '?'}",
                       "annotation refers to no image in 'images' (or is not an object)", "unknown_image_id", 1)
                for j in np.flatnonzero(owner < 0).tolist()]
        counts = np.bincount(owner[owner >= 0], minlength=len(images))
        units: list[int] = []
        for n, (img, iid) in enumerate(zip(images, ids, strict=True)):
            if iid is not None and first[iid] != n:
                head.append(Reject(fname, f"image {iid}", f"duplicate image id {iid!r}", "duplicate_image"))
            elif iid is None or not isinstance(img.get("file_name"), str):
                head.append(Reject(fname, f"image entry {n}", "image needs an 'id' and a string 'file_name'",
                                   "bad_record", int(counts[n]) if iid is not None else 0))
            else:
                units.append(n)
        positions = np.asarray(units, dtype=np.int64)
        is_unit = np.zeros(len(images) + 1, dtype=bool)
        is_unit[positions] = True  # the last cell stands for the orphans (owner -1)
        order = np.argsort(owner, kind="stable")  # by image, each image's in file order
        unit_order = order[is_unit[owner[order]]]
        unit_cum = np.concatenate(([0], np.cumsum(counts[positions]))).astype(np.int64)
        return cls(images, anns, ids, positions, unit_order, unit_cum, head)

    def span_end(self, start: int, stop: int) -> int:
        """Where a chunk from unit ``start`` ends: after about :data:`CHUNK_OBJECTS` objects, before ``stop``."""
        end = int(np.searchsorted(self.unit_cum, self.unit_cum[start] + CHUNK_OBJECTS, side="left"))
        return min(max(end, start + 1), stop)

    def annotations(self, start: int, stop: int) -> list[Any]:
        """The annotation records of units ``start`` .. ``stop - 1``, unit after unit."""
        anns = self.anns
        return [anns[j] for j in self.unit_order[self.unit_cum[start] : self.unit_cum[stop]].tolist()]

    def release(self, start: int, stop: int) -> None:
        """Drop the records of units ``start`` .. ``stop - 1``."""
        images, anns = self.images, self.anns
        for p in self.units[start:stop].tolist():
            images[p] = None
        for j in self.unit_order[self.unit_cum[start] : self.unit_cum[stop]].tolist():
            anns[j] = None


class _Output:
    """What every Scene of one file shares."""

    def __init__(self, source: str, root: str, fname: str) -> None:
        self.source, self.root, self.fname = source, root, fname


def _build_chunk(plan: CocoPlan, start: int, stop: int, release: bool, blocks: bool, taken: dict[str, int]
                 ) -> tuple[list[Scene | Reject | SceneBlock], int]:
    """Units from ``start`` (before ``stop``) until about :data:`CHUNK_OBJECTS` objects: located, their
    objects built in one vectorised pass, their Scenes and Rejects in order, and where the next chunk
    starts. An image whose key an earlier unit has (``taken``) is a Reject (its objects are built all the same: the class
    resolver's first-seen warnings stay in file order). With ``blocks``, runs of images of plain valid
    4-point objects come as one :class:`SceneBlock` each (their classes are resolved first, so a
    first-seen warning may come earlier than in file order)."""
    end = plan.index.span_end(start, stop)
    located = _located(plan, start, end, taken)
    if release:
        plan.index.release(start, end)
    items: list[Scene | Reject | SceneBlock] = []
    for rejected, group in groupby(located, key=lambda it: type(it) is Reject):
        run = list(group)
        items += run if rejected else _built(plan, run, blocks)  # type: ignore[arg-type]
    return items, end


def _located(plan: CocoPlan, start: int, end: int, taken: dict[str, int]) -> list[Pending | Reject]:
    """Units ``start`` .. ``end - 1`` located, as :data:`Pending` (their annotations read as :data:`Entry`),
    or the Reject of an image that cannot be located; each located key goes into ``taken`` with its unit
    (unless an earlier unit has it: that image is a duplicate)."""
    index, out, categories = plan.index, plan.out, plan.categories
    entries = [_entry(a, categories) for a in index.annotations(start, end)]
    images, ids = index.images, index.ids
    root, finder, folders, options = plan.root, plan.finder, plan.folders, plan.options
    items: list[Pending | Reject] = []
    bounds = index.unit_cum[start : end + 1] - index.unit_cum[start]
    for u, p, a, b in zip(range(start, end), index.units[start:end].tolist(), bounds.tolist(), bounds[1:].tolist(),
                          strict=False):
        img, iid, group = images[p], ids[p], entries[a:b]
        info = locate_image(root, finder, folders, img["file_name"], (img.get("width"), img.get("height")), options)
        if isinstance(info, tuple):
            items.append(Reject(out.fname, f"image {iid}", info[1], info[0], b - a))
            continue
        key = scene_key(out.source, info.key_rel)
        items.append((iid, info, group, key, taken.setdefault(key, u) < u, all(type(e) is tuple for e in group)))
    return items


def _built(plan: CocoPlan, taken: list[Pending], blocks: bool) -> list[Scene | Reject | SceneBlock]:
    """The items of the located images ``taken``: Scenes and Rejects, or with ``blocks`` runs of plain
    images as :class:`SceneBlock`s (see :func:`_build_chunk`)."""
    if not blocks:
        return _scene_items(plan, taken)  # type: ignore[return-value]
    columns, in_block, first_row = _plain_columns(plan, taken)
    items: list[Scene | Reject | SceneBlock] = []
    for flag, group in groupby(range(len(taken)), key=in_block.__getitem__):
        run = list(group)  # consecutive images that all go into a block, or all not
        if flag:
            items.append(_block(plan, taken, run, columns, first_row[run[0]]))
        else:
            items += _scene_items(plan, taken[run[0] : run[-1] + 1])
    return items


def _scene_items(plan: CocoPlan, taken: list[Pending]) -> list[Scene | Reject]:
    """The Scenes and Rejects of the images ``taken``, their objects built in one vectorised pass."""
    batch = InstanceBatch(plan.classes)
    for pending in taken:
        _add_objects(batch, pending[2], plan.categories, pending[1])
    built, records = batch.build(), batch.records
    out, items = plan.out, []
    first = 0
    for iid, info, group, key, duplicate, _ in taken:
        last = first + len(group)
        if duplicate:
            items.append(Reject(out.fname, f"image {iid}", f"a second image has the key {key}", "duplicate_image", len(group)))
        else:
            rejects, scene = scene_parts(source=out.source, root=out.root, info=info, built=built[first:last], key=key,
                                         records=records[first:last], provenance=Provenance(out.fname, f"image {iid}"))
            items += rejects
            items.append(scene)
        first = last
    return items


def _plain_columns(plan: CocoPlan, taken: list[Pending]) -> tuple[QuadColumns, list[bool], list[int]]:
    """The objects of the images of ``taken`` that may go into a block (not a duplicate, a size, a key with
    a source, every annotation a plain 4-point one), as quad columns, in order; which images do go into
    one: those whose every object passed the vectorised checks as it is (no per-object Reject, no
    constructor, a known class); and per image, the row of its first object."""
    plain = [p[5] and not p[4] and "/" in p[3] and (p[1].width or 0) > 0 and (p[1].height or 0) > 0 for p in taken]
    groups = list(compress((p[2] for p in taken), plain))
    entries = list(chain.from_iterable(groups))
    ann_ids, raws, difficult, quads = zip(*entries, strict=True) if entries else ((), (), (), ())
    resolve = plan.classes.resolve
    category = {raw: resolve(raw).category for raw in dict.fromkeys(raws)}
    n = np.fromiter(map(len, groups), np.int64, len(groups))
    sizes = [(p[1].width, p[1].height) for p in compress(taken, plain)]
    w = np.repeat(np.asarray([s[0] for s in sizes], dtype=np.float64), n)
    h = np.repeat(np.asarray([s[1] for s in sizes], dtype=np.float64), n)
    columns = quad_columns(quads, w, h, raws, [category[r] for r in raws], difficult,
                           [f"annotation {a}" for a in ann_ids], list(range(len(entries))))
    bad_before = np.concatenate(([0], np.cumsum(~columns.trusted)))
    ends = np.cumsum(n)
    good = iter((bad_before[ends] == bad_before[ends - n]).tolist())
    counts = [len(p[2]) if flag else 0 for p, flag in zip(taken, plain, strict=True)]
    first_row = np.concatenate(([0], np.cumsum(counts)[:-1])).tolist()
    return columns, [flag and next(good) for flag in plain], first_row


def _block(plan: CocoPlan, taken: list[Pending], run: list[int], columns: QuadColumns, start: int) -> SceneBlock:
    """The images ``run`` of ``taken`` (consecutive, each in a block) as one :class:`SceneBlock`; their
    objects are the rows of ``columns`` from ``start`` on (consecutive too: slices, not gathers)."""
    out = plan.out
    n = np.asarray([len(taken[t][2]) for t in run], dtype=np.int64)
    stop = start + int(n.sum())
    infos = [taken[t][1] for t in run]
    clipped_before = np.concatenate(([0], np.cumsum(columns.clipped[start:stop])))
    ends = np.cumsum(n)
    return SceneBlock(
        key=[taken[t][3] for t in run],
        source=[out.source] * len(run),
        image_path=[i.rel for i in infos],
        root=[out.root] * len(run),
        width=[i.width for i in infos],
        height=[i.height for i in infos],
        gsd=[None] * len(run),
        image_source=[None] * len(run),
        split=[None] * len(run),
        flags=[list(i.flags) for i in infos],
        image_format=[i.fmt for i in infos],
        clipped=(clipped_before[ends] - clipped_before[ends - n]).tolist(),
        file=[out.fname] * len(run),
        record=[f"image {taken[t][0]}" for t in run],
        n=n,
        raw_category=columns.raws[start:stop],
        category=columns.cats[start:stop],
        points=columns.polys[start:stop].reshape(-1, 2).copy(),
        sizes=np.full(stop - start, 4, dtype=np.int64),
        hbb=columns.hbb[start:stop].copy(),
        obb=columns.obb[start:stop].copy(),
        area=columns.area[start:stop].copy(),
        difficult=np.fromiter(map(bool, columns.difficult[start:stop]), bool, stop - start),
        instance_record=columns.records[start:stop],
    )


def _add_objects(batch: InstanceBatch, group: list[Entry], categories: dict[Any, str], info: ImageInfo) -> None:
    """One image's annotations into ``batch``: plain 4-point ones straight as their 8 numbers, the rest
    (other polygons, RLE, crowds, bad records) as :class:`RawObject`s."""
    w, h = float(info.width or np.nan), float(info.height or np.nan)
    for entry in group:
        if type(entry) is tuple:
            ann_id, raw, difficult, quad = entry
            batch.add_quad(quad, raw, difficult, f"annotation {ann_id}", w, h)
        else:
            batch.add(_raw_object(entry, categories, info), w, h)  # type: ignore[arg-type]


def _loads(raw: bytes) -> Any:
    """orjson, after dropping a UTF-8 BOM (Windows tools write one). Files that Python's json module wrote
    may hold NaN/Infinity literals, which orjson refuses: the standard parser reads those, so one bad number
    rejects one annotation, not the whole file. Otherwise orjson's error (with its position) is raised."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if b"NaN" not in raw and b"Infinity" not in raw and "infinity" not in exc.msg:
            raise
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise exc from None


def _img_id(img: Any) -> Any:
    iid = img.get("id") if isinstance(img, dict) else None
    return iid if isinstance(iid, (int, str)) and not isinstance(iid, bool) else None


def _categories(cats: Any) -> dict[Any, str]:
    """id -> raw name; the name may be an int (``0``) or a string; a missing name falls back to the id."""
    out: dict[Any, str] = {}
    for c in cats if isinstance(cats, list) else []:
        if isinstance(c, dict) and isinstance(c.get("id"), (int, str)):
            name = c.get("name")
            out[c["id"]] = str(name if name is not None and name != "" else c["id"])
    return out


def _raw_object(ann: dict, categories: dict[Any, str], info: ImageInfo) -> RawObject:
    rec = f"annotation {ann.get('id')}"
    cid = ann.get("category_id")
    if not isinstance(cid, (int, str, float)) or cid not in categories:  # a list/dict id is unhashable
        return RawObject("?", record=rec, error=("unknown_category_id", f"category_id {cid!r} is not in 'categories'"))
    ob = RawObject(categories[cid], difficult=bool(ann.get("difficult", False)), record=rec)
    if ann.get("iscrowd"):
        ob.error = ("crowd", "iscrowd=1: a crowd region holds an unknown number of objects, so it is not counted")
        return ob
    seg = ann.get("segmentation")
    try:
        if isinstance(seg, dict):
            ob.parts, ob.area = _rle_hull(seg, info)
        elif isinstance(seg, list) and seg:
            ob.quad = _quad_of(seg)
            if ob.quad is None:
                parts = seg if isinstance(seg[0], list) else [seg]
                ob.parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts if len(p)]
        else:
            ob.quad = _bbox_quad(ann.get("bbox"))
    except (TypeError, ValueError, KeyError) as exc:
        ob.error = ("bad_geometry", f"cannot read the geometry: {exc}")
    except _ZeroArea as exc:
        ob.error = ("zero_area", str(exc))
    return ob


class _ZeroArea(Exception):
    pass


def _entry(ann: dict, categories: dict[Any, str]) -> Entry:
    """An annotation as it waits to be built (:data:`Entry`): the plain tuple when :func:`_raw_object` would
    read it as a 4-point polygon or box of a known category without error (most of a real file), else the
    record itself, which :func:`_raw_object` reads when its image is built."""
    cid = ann.get("category_id")
    if not isinstance(cid, (int, str, float)) or cid not in categories or ann.get("iscrowd"):
        return ann
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg:
        quad = _quad_of(seg)
    elif isinstance(seg, dict):
        return ann
    else:
        try:
            quad = _bbox_quad(ann.get("bbox"))
        except (TypeError, ValueError, KeyError, _ZeroArea):
            return ann
    if quad is None:
        return ann
    return (ann.get("id"), categories[cid], bool(ann.get("difficult", False)), tuple(quad))


def _quad_of(seg: list) -> list | None:
    """A non-empty polygon segmentation that is one 4-point part (nested or flat): its 8 numbers, else None
    (a part written as [x, y] pairs is a general polygon)."""
    first = seg[0]
    if isinstance(first, list):
        return first if len(seg) == 1 and len(first) == 8 and not isinstance(first[0], list) else None
    return seg if len(seg) == 8 else None


def _bbox_quad(bbox: Any) -> list[float]:
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError(f"bbox must be [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:  # NaN compares False and is rejected later as non-finite
        raise _ZeroArea(f"bbox width and height must be positive, got w={w:g}, h={h:g}")
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def _rle_hull(seg: dict, info: ImageInfo) -> tuple[list[np.ndarray], float]:
    """An RLE mask -> (its convex hull as the polygon, its pixel count as the area)."""
    from pycocotools import mask as mask_utils
    from shapely.geometry import MultiPoint

    h, w = seg.get("size") or (info.height, info.width)
    if not 0 < int(h) * int(w) <= RLE_MAX_PIXELS or int(h) < 0:  # decode allocates h x w bytes: cap it
        raise ValueError(f"RLE size {h} x {w} must be positive and at most {RLE_MAX_PIXELS} pixels")
    rle = seg
    if isinstance(seg.get("counts"), list):
        if sum(int(c) for c in seg["counts"]) != int(h) * int(w):
            raise ValueError(f"uncompressed RLE counts must sum to {int(h)} x {int(w)} pixels")
        rle = mask_utils.frPyObjects(seg, int(h), int(w))
    elif isinstance(seg.get("counts"), str):
        rle = {"size": [int(h), int(w)], "counts": seg["counts"].encode("ascii")}
    mask = np.asarray(mask_utils.decode(rle), dtype=bool)
    if mask.ndim == 3:
        mask = mask.any(axis=2)
    area = float(mask.sum())
    if area == 0:
        raise _ZeroArea("RLE mask is empty")
    rows = np.flatnonzero(mask.any(axis=1))
    sub = mask[rows]
    first = sub.argmax(axis=1)
    last = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    ys = rows.astype(np.float64)
    corners = np.concatenate(
        [np.stack([first, ys], 1), np.stack([last + 1.0, ys], 1), np.stack([first, ys + 1], 1), np.stack([last + 1.0, ys + 1], 1)]
    )
    hull = MultiPoint([tuple(p) for p in corners]).convex_hull
    return [np.asarray(hull.exterior.coords)[:-1]], area


READER = CocoReader()
