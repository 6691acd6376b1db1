"""COCO JSON: parsed once with orjson, annotations grouped by image id, instances built as the scenes are read.

Streams: only the per-image grouping of the raw records and each image's location are worked out before
the first Scene; instances are then built a chunk of images at a time (4-point geometry vectorised over the
chunk), so memory is the parsed file plus a bounded working set, not every Instance of the file at once.

Handles polygon segmentations (several parts: the polygon of their union, oriented box of the union), RLE
masks (pycocotools), ``iscrowd``, category ids from 0, integer or string names, image ids of any kind,
missing ``info``/``licenses``, extra keys. Images without annotations are Scenes with no instances.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from d2c.classes import ClassResolver
from d2c.images import ImageFinder
from d2c.model import Provenance, Reject, Scene
from d2c.readers.base import (
    Built,
    ImageInfo,
    RawObject,
    ReadOptions,
    assemble_scene,
    build_instances,
    locate_image,
    parse_error_position,
    rel_to,
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
        target = Path(options.annotations) if options.annotations else Path(path)
        files = [target] if target.is_file() else sorted(target.glob("*.json"))
        for f in files:
            yield from read_coco_file(f, options)


def _looks_like_json(path: Path) -> bool:
    if not path.is_file():  # a FIFO would block the read for ever
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(64).lstrip()[:1] == b"{"
    except OSError:
        return False


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic collector around a stretch that allocates millions of acyclic objects and yields
    nothing (parsing, building instances): its repeated full passes cost a third of the time on large
    files. Reference counting still frees everything; the collector's state is restored on exit."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_coco_file(json_path: Path, options: ReadOptions) -> Iterator[Scene | Reject]:
    """All Scenes and Rejects of one COCO file, in the file's image order.

    The file is parsed once; only the grouping of annotations by image and each kept image's location are
    worked out before the first Scene. Instances are built a chunk of images at a time as the iterator is
    consumed, and each image's raw annotations are dropped once built, so memory stays near the parsed JSON.
    """
    json_path = Path(os.path.abspath(json_path))
    root = Path(os.path.abspath(options.images)) if options.images else json_path.parent
    folders = [root] if options.images else [root, root / "images"]
    if not options.images and (root / "images").is_dir():
        folders = [root / "images", root]  # a missing image is expected in images/
    source = options.source or json_path.stem
    fname = rel_to(json_path, root)
    with _no_cyclic_gc():
        data, error = _load(json_path)
        if error is None and (not isinstance(data, dict) or not isinstance(data.get("images"), list)):
            error = "not a COCO file: expected an object with an 'images' list"
        if error is None:
            categories = _categories(data.get("categories"))
            early, kept = _plan(data, fname, root, folders, options)
    if error is not None:
        yield Reject(fname, None, error, "parse_error")
        return
    del data  # the image records and the annotation list itself: only the per-image groups stay
    yield from early
    del early
    classes = ClassResolver(options.class_map, options.unknown_classes)
    keys: set[str] = set()
    while kept:
        with _no_cyclic_gc():
            chunk = _build_chunk(kept, categories, classes)
        for iid, info, obs, part in chunk:
            items = list(
                assemble_scene(
                    source=source, root=root, info=info, built=part, objs=obs, provenance=Provenance(fname, f"image {iid}")
                )
            )
            scene = items[-1]
            if scene.key in keys:  # type: ignore[union-attr]
                yield Reject(fname, f"image {iid}", f"a second image has the key {scene.key}", "duplicate_image", len(obs))
                continue
            keys.add(scene.key)  # type: ignore[union-attr]
            yield from items
        del chunk  # before the next chunk is built: one chunk alive at a time


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


# an image's raw annotations waiting to be built: (image id, where its image is, its annotation records)
Pending = tuple[Any, ImageInfo, list[dict]]
CHUNK_OBJECTS = 4096  # objects built in one vectorised pass: amortises numpy's per-call cost, bounds the working set


def _plan(
    data: dict, fname: str, root: Path, folders: list[Path], options: ReadOptions
) -> tuple[list[Reject], deque[Pending]]:
    """Everything before the first Scene: rejects found on the way (annotations of no image, bad or duplicate
    image records, images that cannot be located), and the kept images with their raw annotation records.
    Takes the annotation list out of ``data`` so that the per-image groups are the only owners of the records."""
    anns = data.pop("annotations", None) or []
    by_image, orphans = _group(anns, data["images"])
    del anns
    early: list[Reject] = []
    for ann in orphans:
        rec = f"annotation {ann.get('id') if isinstance(ann, dict) else '?'}"
        early.append(
            Reject(fname, rec, "annotation refers to no image in 'images' (or is not an object)", "unknown_image_id", 1)
        )
    del orphans
    finder = ImageFinder(root)
    kept: deque[Pending] = deque()
    seen: set[Any] = set()
    for n, img in enumerate(data["images"]):
        iid = _img_id(img)
        if iid is not None and iid in seen:  # an id's annotations go with its first entry, valid or not
            early.append(Reject(fname, f"image {iid}", f"duplicate image id {iid!r}", "duplicate_image"))
            continue
        seen.add(iid)
        group = by_image.pop(iid, []) if iid is not None else []
        if iid is None or not isinstance(img.get("file_name"), str):
            early.append(
                Reject(fname, f"image entry {n}", "image needs an 'id' and a string 'file_name'", "bad_record", len(group))
            )
            continue
        info = locate_image(root, finder, folders, img["file_name"], (img.get("width"), img.get("height")), options)
        if isinstance(info, tuple):
            early.append(Reject(fname, f"image {iid}", info[1], info[0], len(group)))
            continue
        kept.append((iid, info, group))
    return early, kept


def _build_chunk(
    kept: deque[Pending], categories: dict[Any, str], classes: ClassResolver
) -> list[tuple[Any, ImageInfo, list[RawObject], list[Built]]]:
    """Take images off the front of ``kept`` until about :data:`CHUNK_OBJECTS` objects, and build them in one
    vectorised pass; their raw records are released here (the taken entries leave ``kept``)."""
    taken: list[tuple[Any, ImageInfo, list[RawObject]]] = []
    count = 0
    while kept and count < CHUNK_OBJECTS:
        iid, info, group = kept.popleft()
        taken.append((iid, info, [_raw_object(a, categories, info) for a in group]))
        count += len(group)
        del group
    objs = [o for _, _, obs in taken for o in obs]
    widths = np.asarray([info.width or np.nan for _, info, obs in taken for _ in obs], dtype=np.float64)
    heights = np.asarray([info.height or np.nan for _, info, obs in taken for _ in obs], dtype=np.float64)
    built = build_instances(objs, widths, heights, classes)
    out: list[tuple[Any, ImageInfo, list[RawObject], list[Built]]] = []
    start = 0
    for iid, info, obs in taken:
        out.append((iid, info, obs, built[start : start + len(obs)]))
        start += len(obs)
    return out


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


def _group(anns: Any, images: list[Any]) -> tuple[dict[Any, list[dict]], list[Any]]:
    ids = {_img_id(i) for i in images} - {None}
    by_image: dict[Any, list[dict]] = {}
    orphans: list[Any] = []
    for a in anns if isinstance(anns, list) else []:
        iid = a.get("image_id") if isinstance(a, dict) else None
        if isinstance(iid, (int, str)) and iid in ids:
            by_image.setdefault(iid, []).append(a)
        else:
            orphans.append(a)
    return by_image, orphans


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
            parts = seg if isinstance(seg[0], list) else [seg]
            if len(parts) == 1 and len(parts[0]) == 8:
                ob.quad = parts[0]
            else:
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
