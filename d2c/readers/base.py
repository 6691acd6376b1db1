"""What every reader shares: options, the Reader protocol, and raw points -> validated Instances.

Readers only parse their format into :class:`RawObject`s; the checks that make an Instance trustworthy
(class policy, NaN/inf, zero area, outside the image, clipping to it) live here once, vectorised over many
4-point objects at a time, so every format rejects bad geometry for the same reasons and codes.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from d2c import geometry
from d2c.classes import ClassMap, ClassResolver
from d2c.errors import ImageTooLargeError, UnsafePathError
from d2c.images import EXT_FORMAT, ImageFinder, check_pixels, image_size, sniff_file
from d2c.limits import (
    COORD_MAX,
    DEFAULT_LIMITS,
    DEFAULT_MAX_PARTS,
    DEFAULT_MAX_VERTICES,
    INT32_MAX,
    GeometryLimits,
    annotated_size,
)
from d2c.model import Instance, Provenance, Reject, Scene, is_plain_relpath, scene_key, valid_instance_rows

log = logging.getLogger(__name__)

AREA_EPS = 1e-9


@dataclass
class ReadOptions:
    """Options common to every reader (see docs/interfaces.md)."""

    source: str | None = None
    images: Path | None = None
    annotations: Path | None = None
    class_map: ClassMap | None = None
    unknown_classes: str = "keep"
    require_images: bool = False
    max_pixels: int = 1 << 30
    max_vertices: int = DEFAULT_MAX_VERTICES  # geometry budget per object (d2c.limits): over it, a Reject
    max_parts: int = DEFAULT_MAX_PARTS

    @property
    def limits(self) -> GeometryLimits:
        return GeometryLimits(self.max_vertices, self.max_parts)


@runtime_checkable
class Reader(Protocol):
    name: str

    def detect(self, path: Path) -> bool: ...

    def read(self, path: Path, options: ReadOptions) -> Iterator[Scene | Reject]: ...


@dataclass(slots=True)
class RawObject:
    """One annotated object as parsed: polygon ``parts`` (each (N, 2)), or an ``error`` found while parsing."""

    raw_category: Any
    parts: list[np.ndarray] = field(default_factory=list)
    difficult: bool = False
    record: str | None = None
    error: tuple[str, str] | None = None  # (code, reason)
    area: float | None = None  # known area (an RLE mask's pixel count) when the parts are only its hull
    quad: list[float] | None = None  # fast path: 8 numbers x1 y1 ... x4 y4 instead of ``parts``


class Clipped:
    """An Instance whose coordinates were clipped to the image (unwrapped and counted by :func:`assemble_scene`)."""

    __slots__ = ("inst",)

    def __init__(self, inst: Instance) -> None:
        self.inst = inst


Built = Instance | Clipped | tuple[str, str]  # an Instance, a clipped one, or (code, reason) for a Reject


def source_name(path: Path) -> str:
    """A source name from a folder or file name: no separators, never empty."""
    name = path.stem if path.is_file() or path.suffix.lower() in (".json", ".xml", ".txt") else path.name
    name = name.replace("/", "_").replace("\\", "_").strip() or "dataset"
    return name


def rel_to(path: Path | str, root: Path | str) -> str:
    """``path`` relative to ``root`` (posix) when inside it, else the absolute path (string work: per image)."""
    p = os.path.abspath(path)
    r = os.path.abspath(root).rstrip(os.sep) + os.sep
    rel = p[len(r) :] if p.startswith(r) else p
    return rel.replace(os.sep, "/") if os.sep != "/" else rel


def joined_rel(folder: Path | str, name: str, root: Path | str) -> str:
    """``rel_to(os.path.join(folder, name), root)``; by string work alone when ``name`` is a plain relative
    path and the folder an absolute one inside ``root`` (a reader calls this for each of 100,000 images)."""
    prefix = _folder_prefix(str(folder), str(root))
    if prefix is not None and is_plain_relpath(name):
        return prefix + name
    return rel_to(os.path.join(folder, name), root)


@functools.lru_cache(maxsize=64)
def _folder_prefix(folder: str, root: str) -> str | None:
    """``folder`` relative to ``root`` with a trailing "/" ("" for the root itself), or None when the string
    shortcut of :func:`joined_rel` does not apply (a relative path: it depends on the working folder)."""
    if os.sep != "/" or not (os.path.isabs(folder) and os.path.isabs(root)):
        return None
    f = os.path.abspath(folder)
    r = os.path.abspath(root).rstrip("/") + "/"
    if f.endswith("/") or not (f + "/").startswith(r):  # a filesystem root, or a folder outside the root
        return None
    return (f + "/")[len(r) :]


# ---------------------------------------------------------------------------------------------- geometry


def build_instances(
    objs: Sequence[RawObject], widths: np.ndarray, heights: np.ndarray, classes: ClassResolver,
    limits: GeometryLimits = DEFAULT_LIMITS,
) -> list[Built]:
    """Validate and build every object; ``widths``/``heights`` are per object (NaN = unknown size).

    Returns one :data:`Built` per object, aligned with ``objs``; 4-point objects go through one vectorised
    pass; the others through shapely, when within ``limits``.
    """
    batch = InstanceBatch(classes, limits)
    for ob, w, h in zip(objs, widths, heights, strict=True):
        batch.add(ob, w, h)
    return batch.build()


class InstanceBatch:
    """Objects of one image or of many, on their way to :data:`Built`, kept in the order they are added.

    Parse errors, refused classes and general polygons are decided as they are added (classes resolved in
    object order, so the resolver's first-seen warnings keep their order); 4-point objects are kept as
    columns and built together by :meth:`build` in one vectorised pass. A reader with many plain
    quadrilaterals (COCO) adds them with :meth:`add_quad`, without a :class:`RawObject` each.
    """

    def __init__(self, classes: ClassResolver, limits: GeometryLimits = DEFAULT_LIMITS) -> None:
        self.classes, self.limits = classes, limits
        self.out: list[Built | None] = []
        self.records: list[str | None] = []  # each object's record, for its Reject
        self._at: list[int] = []  # where each 4-point object sits in ``out``
        self._quads: list[Sequence[Any]] = []  # its 8 numbers as read
        self._meta: list[tuple[Any, str, Any, str | None]] = []  # (raw category, category, difficult, record)
        self._w: list[float] = []
        self._h: list[float] = []

    def __len__(self) -> int:
        return len(self.out)

    def add(self, ob: RawObject, w: float, h: float) -> None:
        """One parsed object whose image is ``w`` x ``h`` (NaN = unknown)."""
        if ob.error is None and ob.quad is None and len(ob.parts) == 1 and ob.parts[0].shape == (4, 2) and ob.area is None:
            ob.quad = ob.parts[0].reshape(-1).tolist()
        if ob.error is None and ob.quad is not None and len(ob.quad) == 8:
            self.add_quad(ob.quad, ob.raw_category, ob.difficult, ob.record, w, h)
            return
        self.records.append(ob.record)
        if ob.error is not None:
            self.out.append(ob.error)
            return
        res = self.classes.resolve(ob.raw_category)
        if res.category is None:
            self.out.append((res.code or "bad_class", res.reason or "bad class"))
            return
        if ob.quad is not None:
            ob.parts = [_as_points(ob.quad)]
        self.out.append(_general(ob, res.category, w, h, self.limits))

    def add_quad(self, quad: Sequence[Any], raw_category: Any, difficult: Any, record: str | None, w: float, h: float) -> None:
        """A 4-point object given as its 8 numbers ``x1 y1 ... x4 y4`` (the same as :meth:`add` of a
        RawObject with that ``quad``, without building one)."""
        self.records.append(record)
        res = self.classes.resolve(raw_category)
        if res.category is None:
            self.out.append((res.code or "bad_class", res.reason or "bad class"))
            return
        self._at.append(len(self.out))
        self.out.append(None)
        self._quads.append(quad)
        self._meta.append((raw_category, res.category, difficult, record))
        self._w.append(w)
        self._h.append(h)

    def build(self) -> list[Built]:
        """Every object's :data:`Built`, aligned with the order they were added."""
        if self._at:
            w, h = np.asarray(self._w, dtype=np.float64), np.asarray(self._h, dtype=np.float64)
            raws, cats, difficult, records = (list(c) for c in zip(*self._meta, strict=True))
            columns = quad_columns(self._quads, w, h, raws, cats, difficult, records, self._at)
            columns.fill(self.out, range(len(columns)))
            self._at = []
        return self.out  # type: ignore[return-value]


def _as_points(values: Sequence[Any]) -> np.ndarray:
    """(N, 2) float64 points; NaN when a value is not a number, +inf for an int too large for a float64
    (rejected as out of range: it is a number, only not one a pixel position can be)."""
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1, 2)
    except OverflowError:
        return np.asarray([_float_or_inf(v) for v in values], dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        return np.full((max(len(values) // 2, 1), 2), np.nan)


def _float_or_inf(v: Any) -> float:
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf
    except (TypeError, ValueError):
        return math.nan


def _quad_array(quads: Sequence[Sequence[Any]]) -> np.ndarray:
    """(M, 4, 2) from lists of 8 numbers; a list with a non-number becomes NaN (rejected as non-finite).
    The numbers are first read as one flat stream: np.fromiter converts each number as np.asarray does,
    at half its cost on a list of lists; anything else (a list in a list) takes the general path."""
    if set(map(len, quads)) <= {8}:
        try:
            return np.fromiter(chain.from_iterable(quads), np.float64, 8 * len(quads)).reshape(-1, 4, 2)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int too large for a float64
            pass
    try:
        flat = np.asarray(quads, dtype=np.float64)
        if flat.shape == (len(quads), 8):  # not lists of pairs, say, which would reshape into other rows
            return flat.reshape(-1, 4, 2)
    except (TypeError, ValueError, OverflowError):
        pass
    return np.stack([_quad_points(q) for q in quads]) if quads else np.zeros((0, 4, 2))


def _quad_points(values: Sequence[Any]) -> np.ndarray:
    """One quadrilateral's (4, 2) points from its 8 numbers; NaN (rejected as non-finite) when they are not
    8 numbers."""
    points = _as_points(values) if len(values) == 8 else None
    return points if points is not None and points.shape == (4, 2) else np.full((4, 2), np.nan)


def _outside(hbb: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Fully outside the image; the image starts at 0 even when its size is unknown (NaN)."""
    ww, hh = np.where(np.isfinite(w), w, np.inf), np.where(np.isfinite(h), h, np.inf)
    return (hbb[..., 2] <= 0) | (hbb[..., 3] <= 0) | (hbb[..., 0] >= ww) | (hbb[..., 1] >= hh)


@dataclass(eq=False)
class QuadColumns:
    """The vectorised pass over K quadrilaterals (:func:`quad_columns`): each one's canonical polygon,
    boxes and area, and whether it passed the Instance constructor's checks (``trusted``: its row can
    become an Instance as it is) and was clipped to its image. ``at``: where each sits in its batch."""

    at: list[int]
    raws: list[str]
    cats: list[str]
    difficult: list[Any]
    records: list[str | None]
    polys: np.ndarray  # (K, 4, 2)
    hbb: np.ndarray  # (K, 4)
    obb: np.ndarray  # (K, 5)
    area: np.ndarray  # (K,)
    trusted: np.ndarray  # (K,) bool
    clipped: np.ndarray  # (K,) bool
    ok: np.ndarray  # (K,) bool: kept (through the validating constructor when not trusted)
    finite: np.ndarray
    area_raw: np.ndarray
    raw_quads: list[Sequence[Any]]  # the numbers as read, for messages
    w: np.ndarray
    h: np.ndarray

    def __len__(self) -> int:
        return len(self.at)

    def fill(self, out: list[Built | None], rows: Sequence[int]) -> None:
        """Put the :data:`Built` of the quadrilaterals ``rows`` (ascending) at their places in ``out``."""
        rows = list(rows)
        keep = self.trusted[rows].tolist()
        columns = ([self.raws[k] for k in rows], [self.cats[k] for k in rows], self.polys[rows],
                   map(tuple, self.hbb[rows].tolist()), map(tuple, self.obb[rows].tolist()), self.area[rows].tolist(),
                   [bool(self.difficult[k]) for k in rows], [self.records[k] for k in rows])
        insts = map(Instance.trusted, *(compress(c, keep) for c in columns))
        for k, trusted in zip(rows, keep, strict=True):
            out[self.at[k]] = next(insts) if trusted else self._untrusted(k)
            if trusted and self.clipped[k]:
                out[self.at[k]] = Clipped(out[self.at[k]])  # type: ignore[arg-type]

    def _untrusted(self, k: int) -> Built:
        """The Built of a row that failed the vectorised checks: the constructor says why, or its Reject."""
        if self.ok[k]:
            return _instance(self.raws[k], self.cats[k], self.difficult[k], self.records[k], self.polys[k],
                             self.hbb[k].tolist(), self.obb[k].tolist(), float(self.area[k]), bool(self.clipped[k]))
        if not self.finite[k]:
            return _unbounded(self.raw_quads[k])
        if self.area_raw[k] <= AREA_EPS:
            return ("zero_area", f"polygon has zero area: {list(self.raw_quads[k])}")
        return ("outside_image", f"polygon {list(self.raw_quads[k])} lies outside the {self.w[k]:g} x {self.h[k]:g} image")


def quad_columns(
    quads: Sequence[Sequence[Any]], w: np.ndarray, h: np.ndarray, raws: Sequence[Any], cats: Sequence[str | None],
    difficult: Sequence[Any], records: Sequence[str | None], at: list[int],
) -> QuadColumns:
    """The vectorised pass over K quadrilaterals given as their 8 numbers as read, with each one's image
    size, raw category, category (None: refused), difficult flag, record and place in its batch.

    Rows that pass the Instance constructor's own checks here, on whole arrays, are ``trusted``; any other
    row that is kept goes through the validating constructor, which says why.
    """
    q = _quad_array(quads)
    finite = (np.abs(q) <= COORD_MAX).all(axis=(1, 2))  # NaN and infinities fail it too
    q = np.where(finite[:, None, None], q, 0.0)
    area_raw = np.abs(geometry.signed_area(q))
    outside = _outside(geometry.hbb_of(q), w, h)
    hi = np.stack([np.where(np.isfinite(w), w, np.inf), np.where(np.isfinite(h), h, np.inf)], axis=1)[:, None, :]
    qc = np.clip(q, 0.0, hi)
    clipped = (qc != q).any(axis=(1, 2))
    polys = geometry.canonical_quads(qc)
    area = np.abs(geometry.signed_area(polys))
    obbs = geometry.min_area_rect_quads(polys)
    ok = finite & (area_raw > AREA_EPS) & ~outside & (area > AREA_EPS)
    raws = list(map(str, raws))
    trusted = ok & valid_instance_rows(polys, obbs, area)
    if not (all(raws) and all(cats)):  # an empty name: the validating constructor refuses it
        trusted &= np.asarray([bool(r and c) for r, c in zip(raws, cats, strict=True)])
    return QuadColumns(at, raws, cats, difficult, records, polys, geometry.hbb_of(polys), obbs, area, trusted,  # type: ignore[arg-type]
                       clipped, ok, finite, area_raw, quads, w, h)


def _instance(raw: Any, cat: str, difficult: Any, record: str | None, poly, hbb, obb, area: float, clipped: bool) -> Built:
    """Through the validating constructor: a ValueError becomes a ``bad_geometry`` Reject reason."""
    try:
        inst = Instance(
            raw_category=str(raw),
            category=cat,
            polygon=poly,
            hbb=tuple(hbb),
            obb=tuple(obb),
            area=area,
            difficult=bool(difficult),
            record=record,
        )
    except ValueError as exc:
        return ("bad_geometry", str(exc))
    return Clipped(inst) if clipped else inst


def _unbounded(values: Sequence[Any]) -> tuple[str, str]:
    """The Reject of coordinates that failed the ``|v| <= COORD_MAX`` test: NaN/infinite, or out of range
    (finite, or an int too large for a float64, but no pixel position: 1e300 would overflow areas)."""
    pts = _as_points(values) if len(values) else np.zeros((0, 2))
    if np.isnan(pts).any() or (np.isinf(pts) & ~_huge_ints(values, pts)).any():
        return ("non_finite", "polygon has NaN or infinite coordinates")
    return ("out_of_range", f"polygon has a coordinate beyond +-{COORD_MAX:.0f} (+-2^53): not a pixel position")


def _huge_ints(values: Sequence[Any], pts: np.ndarray) -> np.ndarray:
    """Per point coordinate, whether it was an int (too large for a float64: read as infinite)."""
    flat = list(values) if pts.size == len(values) else []
    is_int = [isinstance(v, int) and not isinstance(v, bool) for v in flat] or [False] * pts.size
    return np.asarray(is_int, dtype=bool).reshape(pts.shape)


def _general(ob: RawObject, cat: str, w: float, h: float, limits: GeometryLimits = DEFAULT_LIMITS) -> Built:
    """Polygons with other than 4 points, several parts, or an RLE hull: through shapely, once the parts
    are within ``limits`` (shapely's union of thousands of parts or a 200k-vertex star costs gigabytes)."""
    from shapely.geometry import Polygon, box
    from shapely.ops import unary_union

    if len(ob.parts) > limits.max_parts:
        return ("too_complex", f"object has {limits.check(len(ob.parts), 0)}")
    parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in ob.parts]
    over = limits.check(len(parts), sum(p.shape[0] for p in parts)) if ob.area is None else None
    if over is not None:  # an RLE mask's hull (``area`` known) is made here, convex: linear in shapely
        return ("too_complex", f"object has {over}")
    if not parts or any(p.shape[0] < 3 for p in parts):
        return ("bad_geometry", f"a polygon needs at least 3 points, got {[p.shape[0] for p in parts]}")
    if not all((np.abs(p) <= COORD_MAX).all() for p in parts):
        if not all(np.isfinite(p).all() for p in parts):
            return ("non_finite", "polygon has NaN or infinite coordinates")
        return ("out_of_range", f"polygon has a coordinate beyond +-{COORD_MAX:.0f} (+-2^53): not a pixel position")
    geom = unary_union([Polygon(p).buffer(0) for p in parts])
    if geom.is_empty or geom.area <= AREA_EPS:
        return ("zero_area", "polygon has zero area")
    clipped = False
    w = w if np.isfinite(w) else np.inf
    h = h if np.isfinite(h) else np.inf
    x0, y0, x1, y1 = geom.bounds
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        return ("outside_image", f"polygon with bounds {list(geom.bounds)} lies outside the {w:g} x {h:g} image")
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        geom, clipped = geom.intersection(box(0, 0, min(w, x1), min(h, y1))), True
        if geom.is_empty or geom.area <= AREA_EPS:
            return ("outside_image", "polygon lies outside the image")
    if isinstance(geom, Polygon) and len(parts) == 1 and not clipped and Polygon(parts[0]).is_valid:
        pts = parts[0]
    else:
        shape = geom if isinstance(geom, Polygon) else geom.convex_hull
        if not isinstance(shape, Polygon):
            return ("zero_area", "polygon has no 2-D extent")
        pts = np.asarray(shape.exterior.coords)[:-1]
    poly = geometry.canonical_polygon(pts)
    area = float(ob.area) if ob.area is not None else float(geom.area)
    try:
        obb = geometry.min_area_rect(np.asarray(geom.convex_hull.exterior.coords)[:-1])
    except (ValueError, AttributeError) as exc:
        return ("zero_area", f"degenerate polygon: {exc}")
    return _instance(ob.raw_category, cat, ob.difficult, ob.record, poly, geometry.hbb_of(poly).tolist(), obb, area, clipped)


# ---------------------------------------------------------------------------------------------- images


@dataclass(slots=True)
class ImageInfo:
    rel: str  # relative to the dataset root (posix)
    key_rel: str  # relative to the image folder, for the scene key
    width: int | None
    height: int | None
    flags: list[str]
    fmt: str | None


def locate_image(
    root: Path,
    finder: ImageFinder,
    images_dir: Path | str | list[Path] | list[str],
    name: str,
    ann_size: tuple[Any, Any] | None,
    options: ReadOptions,
    *,
    stem_only: bool = False,
) -> ImageInfo | tuple[str, str]:
    """Find the image, decide its size (annotation when trustworthy, else header) and its flags.

    ``stem_only``: the annotation names no file (DOTA), so finding by stem is normal and not flagged.
    Several ``images_dir`` are searched in order (exact names first); a missing image is placed in the first.
    """
    folders = images_dir if isinstance(images_dir, list) else [images_dir]
    try:
        if not stem_only and type(name) is str and finder.absent(folders, name):
            path, by_stem, images_dir = None, False, folders[0]  # what find_in says, sooner
        elif stem_only:
            images_dir = folders[0]
            path, by_stem = finder.find_stem(images_dir, name), False
        else:
            found, images_dir = finder.find_in(folders, name)
            path, by_stem = found.path, found.found_by_stem
    except UnsafePathError as exc:
        return ("unsafe_path", str(exc))
    size = annotated_size(*ann_size) if ann_size is not None else None
    if isinstance(size, str):  # the annotation gives a size no image can have: its frame is unknown
        return ("bad_size", size)
    trusted = size is not None
    w, h = size if size is not None else (None, None)
    flags: list[str] = []
    if path is None:
        default_name = (name + ".png" if stem_only else name).replace("\\", "/")
        rel_img = joined_rel(images_dir, default_name, root)
        if options.require_images:
            return ("image_missing", f"image {rel_img} not found")
        if not trusted:
            return ("no_image_no_size", f"no image and no size: {rel_img} not found")
        return _missing_image(rel_img, default_name, int(w), int(h))
    if by_stem:
        flags.append("image_found_by_stem")
    try:
        fmt = sniff_file(path)
        if trusted:
            check_pixels(path, int(w), int(h), options.max_pixels)
        else:
            w, h = image_size(path, options.max_pixels)
            if not (0 < w <= INT32_MAX and 0 < h <= INT32_MAX):
                raise ImageTooLargeError(f"{path}: header size {w} x {h} is outside 1..{INT32_MAX} pixels")
    except ImageTooLargeError as exc:
        return ("image_too_large", str(exc))
    except (OSError, ValueError, SyntaxError) as exc:
        return ("image_unreadable", f"cannot read image header: {exc}")
    if fmt is not None and EXT_FORMAT.get(path.suffix.lower()) not in (None, fmt):
        flags.append("extension_mismatch")
    return ImageInfo(rel_to(path, root), rel_to(path, images_dir), int(w), int(h), flags, fmt)


def _missing_image(rel: str, key_rel: str, width: int, height: int) -> ImageInfo:
    """A missing image whose annotation gives its size: it is written as a reference, flagged."""
    return ImageInfo(rel, key_rel, width, height, ["image_missing"], None)


def locate_images(
    root: Path, finder: ImageFinder, folders: list[str], names: Sequence[Any], widths: Sequence[Any],
    heights: Sequence[Any], options: ReadOptions,
) -> list[ImageInfo | tuple[str, str]]:
    """:func:`locate_image` of each image named ``names[i]`` (not a stem) of size ``widths[i]`` x
    ``heights[i]``, in order. Why: a reader of 100,000 images mostly locates images that are not there
    (annotation-only runs), and a call per image costs more than the rest of reading it. An image whose name
    no folder holds (:meth:`ImageFinder.absent_names`) and whose size is two positive ints (trusted as they
    are) is settled here, its path the first folder's prefix and its name; any other goes through
    :func:`locate_image`."""
    prefix = _folder_prefix(str(folders[0]), str(root)) if folders else None
    if prefix is None or options.require_images:  # no string shortcut, or a missing image is a Reject
        missing = [False] * len(names)
    else:
        absent = finder.absent_names(folders, names)
        missing = [a and type(w) is int and type(h) is int and 0 < w <= INT32_MAX and 0 < h <= INT32_MAX
                   for a, w, h in zip(absent, widths, heights, strict=True)]
    return [_missing_image(prefix + n, n, w, h) if m else locate_image(root, finder, folders, n, (w, h), options)  # type: ignore[operator]
            for m, n, w, h in zip(missing, names, widths, heights, strict=True)]


def assemble_scene(
    *,
    source: str,
    root: Path,
    info: ImageInfo,
    built: Sequence[Built],
    objs: Sequence[RawObject],
    provenance: Provenance,
    gsd: float | None = None,
    image_source: str | None = None,
) -> Iterator[Scene | Reject]:
    """Yield the per-object Rejects, then the Scene with the instances that passed."""
    rejects, scene = scene_parts(source=source, root=os.path.abspath(root), info=info, built=built,
                                 records=[o.record for o in objs], provenance=provenance, gsd=gsd, image_source=image_source)
    yield from rejects
    yield scene


def scene_parts(
    *,
    source: str,
    root: str,
    info: ImageInfo,
    built: Sequence[Built],
    records: Sequence[str | None],
    provenance: Provenance,
    gsd: float | None = None,
    image_source: str | None = None,
    key: str | None = None,
) -> tuple[list[Reject], Scene]:
    """The per-object Rejects and the Scene with the instances that passed; ``root`` is the dataset root as
    an absolute path (a reader of many images works it out once), ``records`` the objects' records and
    ``key`` the scene key when the caller has it already."""
    key = key or scene_key(source, info.key_rel)
    rejects: list[Reject] = []
    instances: list[Instance] = []
    clipped = 0
    for rec, b in zip(records, built, strict=True):
        if type(b) is Instance:  # the common case first
            instances.append(b)
        elif isinstance(b, tuple):
            rejects.append(Reject(provenance.file, rec, b[1], b[0], 1, key))
        elif isinstance(b, Clipped):
            instances.append(b.inst)
            clipped += 1
        else:
            instances.append(b)
    scene = Scene(
        key=key,
        source=source,
        image_path=info.rel,
        root=root,
        width=info.width,
        height=info.height,
        instances=instances,
        gsd=gsd,
        image_source=image_source,
        provenance=provenance,
        flags=list(info.flags),
        image_format=info.fmt,
        clipped=clipped,
    )
    return rejects, scene


def scene_of_file(
    fname: str,
    objs: Sequence[RawObject],
    info: ImageInfo | tuple[str, str],
    classes: ClassResolver,
    *,
    source: str,
    root: Path,
    gsd: float | None = None,
    image_source: str | None = None,
    limits: GeometryLimits = DEFAULT_LIMITS,
) -> Iterator[Scene | Reject]:
    """One annotation file's outcome: its Scene (after the per-object Rejects), or, when the image lookup
    failed (``info`` is ``(code, reason)``), each object's own parse error and one Reject for the rest."""
    if isinstance(info, tuple):
        bad = [o for o in objs if o.error is not None]
        for o in bad:
            yield Reject(fname, o.record, o.error[1], o.error[0], 1)  # type: ignore[index]
        yield Reject(fname, None, info[1], info[0], len(objs) - len(bad))
        return
    n = len(objs)
    size = np.full(n, float(info.width or np.nan)), np.full(n, float(info.height or np.nan))
    built = build_instances(objs, *size, classes, limits)
    yield from assemble_scene(source=source, root=root, info=info, built=built, objs=objs,
                              provenance=Provenance(fname), gsd=gsd, image_source=image_source)


NOT_REGULAR_FILE = "not a regular file (a pipe, device or folder): reading it could block for ever"


@dataclass(frozen=True)
class Layout:
    """Where a one-annotation-file-per-image dataset keeps things: the annotation ``files`` to read, the
    dataset ``root`` (row paths are relative to it), the ``images_dir`` and the ``source`` name."""

    files: list[Path]
    root: Path
    images_dir: Path
    source: str


def resolve_layout(
    path: Path,
    options: ReadOptions,
    *,
    ann_dirname: str,
    pattern: str,
    image_dirs: Sequence[str] = ("images",),
    default_source: str,
    images_implied: bool = False,
) -> Layout:
    """Resolve ``path`` (a dataset root holding ``ann_dirname/``, an annotation folder or one annotation
    file) and the ``--annotations``/``--images`` overrides. The root is the folder above ``ann_dirname``
    (else the annotation folder itself); images are the first of ``image_dirs`` under the root that
    exists, else the root, except that ``images_implied`` picks ``image_dirs[0]`` whenever the annotations
    sit in ``ann_dirname`` (DOTA's ``images/`` goes with ``labelTxt/`` even when missing)."""
    path = Path(os.path.abspath(path))
    if options.annotations:
        ann = Path(os.path.abspath(options.annotations))
    elif path.is_dir() and (path / ann_dirname).is_dir():
        ann = path / ann_dirname
    else:
        ann = path
    files = [ann] if ann.is_file() else sorted(ann.glob(pattern))
    ann_dir = ann.parent if ann.is_file() else ann
    in_layout = ann_dir.name == ann_dirname
    root = ann_dir.parent if in_layout else ann_dir
    if options.images:
        images_dir = Path(os.path.abspath(options.images))
    else:
        found = [root / d for d in image_dirs if (root / d).is_dir()]
        implied = root / image_dirs[0] if images_implied and in_layout else root
        images_dir = found[0] if found else implied
    return Layout(files, root, images_dir, options.source or root.name or default_source)


FileReader = Callable[[Path, str, Layout, ImageFinder, ClassResolver, ReadOptions], Iterator[Scene | Reject]]


def parse_error_position(exc: Exception) -> str:
    """``line L, column C`` from a JSON or XML parser error, when it says."""
    line = getattr(exc, "lineno", None)
    col = getattr(exc, "colno", None)
    pos = getattr(exc, "position", None)
    if line is None and isinstance(pos, tuple) and len(pos) == 2:
        line, col = pos
    return f"line {line}, column {col}" if line is not None else "unknown position"
