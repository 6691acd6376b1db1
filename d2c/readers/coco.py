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
import math
import os
from collections.abc import Iterator
from itertools import compress, groupby, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from d2c.blocks import SceneBlock
from d2c.classes import ClassResolver
from d2c.gc_tuning import age_young_objects, gc_frozen, gc_paused
from d2c.images import ImageFinder
from d2c.limits import COORD_MAX, DEFAULT_LIMITS, GeometryLimits, short
from d2c.model import Provenance, Reject, Scene, scene_keys
from d2c.readers.base import (
    ImageInfo,
    InstanceBatch,
    QuadColumns,
    RawObject,
    ReadOptions,
    locate_images,
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
        ids = _image_ids(images)
        # image id -> position of its first entry (its annotations go with it): the earliest wins, set last
        first = dict(zip(reversed(ids), range(len(ids) - 1, -1, -1), strict=True))
        first.pop(None, None)
        owner = _owners(anns, first)
        head = [Reject(fname, f"annotation {anns[j].get('id') if isinstance(anns[j], dict) else '?'}",
                       "annotation refers to no image in 'images' (or is not an object)", "unknown_image_id", 1)
                for j in np.flatnonzero(owner < 0).tolist()]
        counts = np.bincount(owner[owner >= 0], minlength=len(images))
        units = _units(images, ids, first, counts, fname, head)
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


def _image_ids(images: list[Any]) -> list[Any]:
    """Each image record's id (:func:`_img_id`): read by one C-level pass when every record is an object
    with an int or string id, as in any sound file."""
    try:
        ids = list(map(dict.get, images, repeat("id")))
    except TypeError:  # a record that is not an object
        return [_img_id(img) for img in images]
    return ids if set(map(type, ids)) <= {int, str} else [_img_id(img) for img in images]


def _owners(anns: list[Any], first: dict[Any, int]) -> np.ndarray:
    """Per annotation, the position of its image's first entry in 'images', or -1 (no such image, or not
    an object): by C-level passes when every record is an object with an int or string image id."""
    get = first.get
    try:
        iids = list(map(dict.get, anns, repeat("image_id")))
    except TypeError:  # a record that is not an object
        iids = [a.get("image_id") if isinstance(a, dict) else None for a in anns]
    if set(map(type, iids)) <= {int, str}:
        return np.fromiter(map(get, iids, repeat(-1)), np.int64, len(anns))
    return np.fromiter((get(i, -1) if isinstance(i, (int, str)) else -1 for i in iids), np.int64, len(anns))


def _units(images: list[Any], ids: list[Any], first: dict[Any, int], counts: np.ndarray, fname: str,
           head: list[Reject]) -> list[int]:
    """The positions of the images that are read: the first entry of each id, with a string file name;
    the Reject of every other entry goes into ``head``."""
    if len(first) == len(images) and set(map(type, map(dict.get, images, repeat("file_name")))) <= {str}:
        return list(range(len(images)))  # distinct ids, all named: every entry (the common case, in one pass)
    units: list[int] = []
    for n, (img, iid) in enumerate(zip(images, ids, strict=True)):
        if iid is not None and first[iid] != n:
            head.append(Reject(fname, f"image {iid}", f"duplicate image id {iid!r}", "duplicate_image"))
        elif iid is None or not isinstance(img.get("file_name"), str):
            head.append(Reject(fname, f"image entry {n}", "image needs an 'id' and a string 'file_name'",
                               "bad_record", int(counts[n]) if iid is not None else 0))
        else:
            units.append(n)
    return units


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
    chunk = _located(plan, start, end, taken)
    if release:
        plan.index.release(start, end)
    items: list[Scene | Reject | SceneBlock] = []
    for located, group in groupby(range(len(chunk)), key=chunk.located.__getitem__):
        run = list(group)  # consecutive located images, or consecutive ones that could not be located
        lo, hi = run[0], run[-1] + 1
        items += _built(plan, chunk, lo, hi, blocks) if located else chunk.rejects(plan.out.fname, lo, hi)
    return items, end


class _Chunk:
    """Located units, as columns (no object per image or annotation beyond the parsed records and the
    ImageInfos). Per image: its id, where its image is (an ImageInfo, or ``(code, reason)`` when it cannot
    be located), its scene key (None then), whether an earlier unit has that key (then it is a Reject).
    Per annotation, image after image (image ``i``'s are ``bounds[i]:bounds[i + 1]``): its record and,
    when it is a plain 4-point one of a known category (most of a real file), its 8 numbers
    (:func:`_plain_quad`), else None; ``all_plain`` when every one is."""

    def __init__(self, iids: list[Any], infos: list[ImageInfo | tuple[str, str]], keys: list[str | None],
                 duplicate: list[bool], records: list[dict], quads: list[list | None], bounds: list[int]) -> None:
        self.iids, self.infos, self.keys, self.duplicate = iids, infos, keys, duplicate
        self.located = [key is not None for key in keys]
        self.records, self.quads, self.bounds = records, quads, bounds
        self.all_plain = None not in quads

    def __len__(self) -> int:
        return len(self.iids)

    def rejects(self, fname: str, lo: int, hi: int) -> list[Reject]:
        """The Rejects of images ``lo`` .. ``hi - 1``, none of which could be located."""
        b = self.bounds
        return [Reject(fname, f"image {self.iids[i]}", self.infos[i][1], self.infos[i][0], b[i + 1] - b[i])  # type: ignore[index]
                for i in range(lo, hi)]

    def plain(self, i: int) -> bool:
        """Every annotation of image ``i`` is a plain 4-point one."""
        return self.all_plain or None not in self.quads[self.bounds[i] : self.bounds[i + 1]]


def _located(plan: CocoPlan, start: int, end: int, taken: dict[str, int]) -> _Chunk:
    """Units ``start`` .. ``end - 1`` located (all at once: :func:`locate_images`), keyed, and their
    annotations read; each located key goes into ``taken`` with its unit (unless an earlier unit has it:
    that image is a duplicate)."""
    index = plan.index
    positions = index.units[start:end].tolist()
    images = [index.images[p] for p in positions]  # records with an id and a string file name
    get = dict.get
    infos = locate_images(plan.root, plan.finder, plan.folders, [img["file_name"] for img in images],
                          list(map(get, images, repeat("width"))), list(map(get, images, repeat("height"))),
                          plan.options)
    located = [type(info) is not tuple for info in infos]
    found = iter(scene_keys(plan.out.source, [info.key_rel for info in compress(infos, located)]))  # type: ignore[union-attr]
    keys = [next(found) if ok else None for ok in located]
    duplicate = [key is not None and taken.setdefault(key, u) < u for key, u in zip(keys, range(start, end), strict=True)]
    records = index.annotations(start, end)
    bounds = (index.unit_cum[start : end + 1] - index.unit_cum[start]).tolist()
    return _Chunk([index.ids[p] for p in positions], infos, keys, duplicate, records,
                  _plain_quads(records, plan.categories), bounds)


def _built(plan: CocoPlan, chunk: _Chunk, lo: int, hi: int, blocks: bool) -> list[Scene | Reject | SceneBlock]:
    """The items of the located images ``lo`` .. ``hi - 1`` of ``chunk``: Scenes and Rejects, or with
    ``blocks`` runs of plain images as :class:`SceneBlock`s (see :func:`_build_chunk`)."""
    if not blocks:
        return _scene_items(plan, chunk, lo, hi)  # type: ignore[return-value]
    columns, in_block, first_row = _plain_columns(plan, chunk, lo, hi)
    items: list[Scene | Reject | SceneBlock] = []
    for flag, group in groupby(range(lo, hi), key=lambda i: in_block[i - lo]):
        run = list(group)  # consecutive images that all go into a block, or all not
        if flag:
            items.append(_block(plan, chunk, run[0], run[-1] + 1, columns, first_row[run[0] - lo]))
        else:
            items += _scene_items(plan, chunk, run[0], run[-1] + 1)
    return items


def _scene_items(plan: CocoPlan, chunk: _Chunk, lo: int, hi: int) -> list[Scene | Reject]:
    """The Scenes and Rejects of the located images ``lo`` .. ``hi - 1``, their objects built in one
    vectorised pass."""
    batch = InstanceBatch(plan.classes, plan.options.limits)
    for i in range(lo, hi):
        _add_objects(batch, chunk, i, plan.categories)
    built, records = batch.build(), batch.records
    out, items = plan.out, []
    first = 0
    for i in range(lo, hi):
        iid, key = chunk.iids[i], chunk.keys[i]
        last = first + chunk.bounds[i + 1] - chunk.bounds[i]
        if chunk.duplicate[i]:
            items.append(Reject(out.fname, f"image {iid}", f"a second image has the key {key}", "duplicate_image", last - first))
        else:
            rejects, scene = scene_parts(source=out.source, root=out.root, info=chunk.infos[i], built=built[first:last],  # type: ignore[arg-type]
                                         key=key, records=records[first:last], provenance=Provenance(out.fname, f"image {iid}"))
            items += rejects
            items.append(scene)
        first = last
    return items


def _plain_columns(plan: CocoPlan, chunk: _Chunk, lo: int, hi: int) -> tuple[QuadColumns, list[bool], list[int]]:
    """The objects of the images ``lo`` .. ``hi - 1`` that may go into a block (not a duplicate, a size, a
    key with a source, every annotation a plain 4-point one), as quad columns, in order; which images do
    go into one: those whose every object passed the vectorised checks as it is (no per-object Reject, no
    constructor, a known class); and per image, the row of its first object."""
    infos: list[ImageInfo] = chunk.infos[lo:hi]  # type: ignore[assignment]
    plain = [not dup and "/" in key and (info.width or 0) > 0 and (info.height or 0) > 0 and chunk.plain(i)  # type: ignore[operator]
             for i, dup, key, info in zip(range(lo, hi), chunk.duplicate[lo:hi], chunk.keys[lo:hi], infos, strict=True)]
    mask, counts = np.asarray(plain, dtype=bool), np.diff(chunk.bounds[lo : hi + 1])
    n = counts * mask  # objects per image that go in: none for the others
    rows = np.repeat(mask, counts).tolist()
    a, b = chunk.bounds[lo], chunk.bounds[hi]
    records = list(compress(chunk.records[a:b], rows))
    get = dict.get
    raws = list(map(plan.categories.__getitem__, map(get, records, repeat("category_id"))))
    resolve = plan.classes.resolve
    category = {raw: resolve(raw).category for raw in dict.fromkeys(raws)}
    w = np.repeat(np.asarray([info.width for info in compress(infos, plain)], dtype=np.float64), counts[mask])
    h = np.repeat(np.asarray([info.height for info in compress(infos, plain)], dtype=np.float64), counts[mask])
    columns = quad_columns(list(compress(chunk.quads[a:b], rows)), w, h, raws, list(map(category.__getitem__, raws)),
                           list(map(bool, map(get, records, repeat("difficult")))),
                           [f"annotation {ann_id}" for ann_id in map(get, records, repeat("id"))], list(range(len(records))))
    bad_before = np.concatenate(([0], np.cumsum(~columns.trusted)))
    ends = np.cumsum(n)
    good = (bad_before[ends] == bad_before[ends - n]).tolist()
    first_row = np.concatenate(([0], ends[:-1])).tolist()
    return columns, [flag and ok for flag, ok in zip(plain, good, strict=True)], first_row


def _block(plan: CocoPlan, chunk: _Chunk, lo: int, hi: int, columns: QuadColumns, start: int) -> SceneBlock:
    """The images ``lo`` .. ``hi - 1`` of ``chunk`` (each in a block) as one :class:`SceneBlock`; their
    objects are the rows of ``columns`` from ``start`` on (consecutive too: slices, not gathers)."""
    out, count = plan.out, hi - lo
    n = np.diff(chunk.bounds[lo : hi + 1]).astype(np.int64)
    stop = start + int(n.sum())
    infos: list[ImageInfo] = chunk.infos[lo:hi]  # type: ignore[assignment]
    clipped_before = np.concatenate(([0], np.cumsum(columns.clipped[start:stop])))
    ends = np.cumsum(n)
    return SceneBlock(
        key=chunk.keys[lo:hi],  # type: ignore[arg-type]
        source=[out.source] * count,
        image_path=[i.rel for i in infos],
        root=[out.root] * count,
        width=[i.width for i in infos],
        height=[i.height for i in infos],
        gsd=[None] * count,
        image_source=[None] * count,
        split=[None] * count,
        flags=[list(i.flags) for i in infos],
        image_format=[i.fmt for i in infos],
        clipped=(clipped_before[ends] - clipped_before[ends - n]).tolist(),
        file=[out.fname] * count,
        record=[f"image {iid}" for iid in chunk.iids[lo:hi]],
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


def _add_objects(batch: InstanceBatch, chunk: _Chunk, i: int, categories: dict[Any, str]) -> None:
    """Image ``i``'s annotations into ``batch``: plain 4-point ones straight as their 8 numbers, the rest
    (other polygons, RLE, crowds, bad records) as :class:`RawObject`s."""
    info: ImageInfo = chunk.infos[i]  # type: ignore[assignment]
    w, h = float(info.width or np.nan), float(info.height or np.nan)
    a, b = chunk.bounds[i], chunk.bounds[i + 1]
    for ann, quad in zip(chunk.records[a:b], chunk.quads[a:b], strict=True):
        if quad is not None:
            batch.add_quad(quad, categories[ann["category_id"]], bool(ann.get("difficult", False)),
                           f"annotation {ann.get('id')}", w, h)
        else:
            batch.add(_raw_object(ann, categories, info, batch.limits), w, h)


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


def _raw_object(ann: dict, categories: dict[Any, str], info: ImageInfo, limits: GeometryLimits = DEFAULT_LIMITS
                ) -> RawObject:
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
                over = limits.check_lists(parts)  # from the lists' lengths: nothing allocated for a huge one
                if over is not None:
                    ob.error = ("too_complex", f"segmentation has {over}")
                    return ob
                ob.parts = [_points(p) for p in parts if len(p)]
        else:
            ob.quad = _bbox_quad(ann.get("bbox"))
    except _OutOfRange as exc:
        ob.error = ("out_of_range", str(exc))
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        ob.error = ("bad_geometry", f"cannot read the geometry: {exc}")
    except _ZeroArea as exc:
        ob.error = ("zero_area", str(exc))
    return ob


class _ZeroArea(Exception):
    pass


class _OutOfRange(Exception):
    """A number too large for a float64 (JSON ints have no bound)."""


def _points(part: Any) -> np.ndarray:
    try:
        return np.asarray(part, dtype=np.float64).reshape(-1, 2)
    except OverflowError:
        raise _OutOfRange("segmentation has an integer too large for a float64 coordinate") from None


def _known_category(cid: Any, categories: dict[Any, str]) -> bool:
    """``category_id`` names a category (a list or dict id is unhashable: never)."""
    return isinstance(cid, (int, str, float)) and cid in categories


def _plain_quad(ann: dict, categories: dict[Any, str]) -> list | None:
    """The 8 numbers of an annotation that :func:`_raw_object` would read as a 4-point polygon or box of a
    known category without error (most of a real file): such an annotation is built without a RawObject;
    None for any other."""
    if not _known_category(ann.get("category_id"), categories) or ann.get("iscrowd"):
        return None
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg:
        return _quad_of(seg)
    if isinstance(seg, dict):
        return None
    try:
        return _bbox_quad(ann.get("bbox"))
    except (TypeError, ValueError, KeyError, _ZeroArea, _OutOfRange):
        return None


def _plain_quads(records: list[dict], categories: dict[Any, str]) -> list[list | None]:
    """:func:`_plain_quad` of each record: at once when all are written the common way, else one by one."""
    parts = _common_quads(records, categories)
    return parts if parts is not None else [_plain_quad(ann, categories) for ann in records]  # type: ignore[return-value]


def _common_quads(records: list[dict], categories: dict[Any, str]) -> list[list] | None:
    """Each record's one part when every record is a 4-point polygon written ``[[x1, y1, ..., x4, y4]]``,
    of a known category and no crowd (most files write every annotation so), else None. The rules of
    :func:`_plain_quad` and :func:`_quad_of` for that form, checked on whole columns by C-level passes
    over types, lengths and the distinct category ids, instead of a call per annotation."""
    get = dict.get
    segs = list(map(get, records, repeat("segmentation")))
    if any(map(get, records, repeat("iscrowd"))) or set(map(type, segs)) != {list} or set(map(len, segs)) != {1}:
        return None
    parts = list(map(_FIRST, segs))
    if set(map(type, parts)) != {list} or set(map(len, parts)) != {8} or list in set(map(type, map(_FIRST, parts))):
        return None
    try:
        cids = set(map(get, records, repeat("category_id")))
    except TypeError:  # an unhashable id: not a known category
        return None
    return parts if all(_known_category(cid, categories) for cid in cids) else None


_FIRST = itemgetter(0)


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
    try:
        x, y, w, h = (float(v) for v in bbox)
    except OverflowError:
        raise _OutOfRange(f"bbox [{', '.join(map(short, bbox))}] has an integer too large for a float64") from None
    if any(math.isfinite(v) and abs(v) > COORD_MAX for v in (x, y, w, h)):
        raise _OutOfRange(f"bbox [{', '.join(map(short, bbox))}] has a value beyond +-2^53: not a pixel position")
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
