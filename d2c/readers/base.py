"""What every reader shares: options, the Reader protocol, and raw points -> validated Instances.

Readers only parse their format into :class:`RawObject`s; the checks that make an Instance trustworthy
(class policy, NaN/inf, zero area, outside the image, clipping to it) live here once, vectorised over many
4-point objects at a time, so every format rejects bad geometry for the same reasons and codes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from d2c import geometry
from d2c.classes import ClassMap, ClassResolver
from d2c.errors import ImageTooLargeError, UnsafePathError
from d2c.images import EXT_FORMAT, ImageFinder, check_pixels, image_size, sniff_file
from d2c.model import Instance, Provenance, Reject, Scene, scene_key

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


# ---------------------------------------------------------------------------------------------- geometry


def build_instances(
    objs: Sequence[RawObject], widths: np.ndarray, heights: np.ndarray, classes: ClassResolver
) -> list[Built]:
    """Validate and build every object; ``widths``/``heights`` are per object (NaN = unknown size).

    Returns one :data:`Built` per object, aligned with ``objs``; 4-point objects go through one vectorised pass.
    """
    out: list[Built | None] = [None] * len(objs)
    cats: list[str] = [""] * len(objs)
    quads: list[int] = []
    for i, ob in enumerate(objs):
        if ob.error is not None:
            out[i] = ob.error
            continue
        res = classes.resolve(ob.raw_category)
        if res.category is None:
            out[i] = (res.code or "bad_class", res.reason or "bad class")
            continue
        cats[i] = res.category
        if ob.quad is not None and len(ob.quad) == 8:
            quads.append(i)
        elif ob.quad is None and len(ob.parts) == 1 and ob.parts[0].shape == (4, 2) and ob.area is None:
            ob.quad = ob.parts[0].reshape(-1).tolist()
            quads.append(i)
        else:
            if ob.quad is not None:
                ob.parts = [_as_points(ob.quad)]
            out[i] = _general(ob, cats[i], widths[i], heights[i])
    if quads:
        idx = np.asarray(quads)
        q = _quad_array([objs[i].quad for i in quads])  # type: ignore[misc]
        for j, built in zip(quads, _quads(q, widths[idx], heights[idx], [objs[i] for i in quads], [cats[i] for i in quads]), strict=True):
            out[j] = built
    return out  # type: ignore[return-value]


def _as_points(values: Sequence[Any]) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        return np.full((max(len(values) // 2, 1), 2), np.nan)


def _quad_array(quads: list[list[float]]) -> np.ndarray:
    """(M, 4, 2) from lists of 8 numbers; a list with a non-number becomes NaN (rejected as non-finite)."""
    try:
        return np.asarray(quads, dtype=np.float64).reshape(-1, 4, 2)
    except (TypeError, ValueError):
        return np.stack([_as_points(q) if len(q) == 8 else np.full((4, 2), np.nan) for q in quads])


def _outside(hbb: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Fully outside the image; the image starts at 0 even when its size is unknown (NaN)."""
    ww, hh = np.where(np.isfinite(w), w, np.inf), np.where(np.isfinite(h), h, np.inf)
    return (hbb[..., 2] <= 0) | (hbb[..., 3] <= 0) | (hbb[..., 0] >= ww) | (hbb[..., 1] >= hh)


def _quads(q: np.ndarray, w: np.ndarray, h: np.ndarray, objs: list[RawObject], cats: list[str]) -> list[Built]:
    """The vectorised path for (M, 4, 2) quadrilaterals."""
    finite = np.isfinite(q).all(axis=(1, 2))
    q = np.where(finite[:, None, None], q, 0.0)
    area_raw = np.abs(geometry.signed_area(q))
    outside = _outside(geometry.hbb_of(q), w, h)
    hi = np.stack([np.where(np.isfinite(w), w, np.inf), np.where(np.isfinite(h), h, np.inf)], axis=1)[:, None, :]
    qc = np.clip(q, 0.0, hi)
    clipped = (qc != q).any(axis=(1, 2))
    polys = geometry.canonical_quads(qc)
    area = np.abs(geometry.signed_area(polys))
    obbs = geometry.min_area_rect_quads(polys).tolist()
    hbbs = geometry.hbb_of(polys).tolist()
    ok = (finite & (area_raw > AREA_EPS) & ~outside & (area > AREA_EPS)).tolist()
    area_l, clipped_l = area.tolist(), clipped.tolist()
    out: list[Built] = []
    for k, ob in enumerate(objs):
        if ok[k]:
            out.append(_instance(ob, cats[k], polys[k], hbbs[k], obbs[k], area_l[k], clipped_l[k]))
        elif not finite[k]:
            out.append(("non_finite", "polygon has NaN or infinite coordinates"))
        elif area_raw[k] <= AREA_EPS:
            out.append(("zero_area", f"polygon has zero area: {ob.quad}"))
        else:
            out.append(("outside_image", f"polygon {ob.quad} lies outside the {w[k]:g} x {h[k]:g} image"))
    return out


def _instance(ob: RawObject, cat: str, poly, hbb, obb, area: float, clipped: bool) -> Built:
    try:
        inst = Instance(
            raw_category=str(ob.raw_category),
            category=cat,
            polygon=poly,
            hbb=tuple(hbb),
            obb=tuple(obb),
            area=area,
            difficult=bool(ob.difficult),
            record=ob.record,
        )
    except ValueError as exc:
        return ("bad_geometry", str(exc))
    return Clipped(inst) if clipped else inst


def _general(ob: RawObject, cat: str, w: float, h: float) -> Built:
    """Polygons with other than 4 points, several parts, or an RLE hull: through shapely."""
    from shapely.geometry import Polygon, box
    from shapely.ops import unary_union

    parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in ob.parts]
    if not parts or any(p.shape[0] < 3 for p in parts):
        return ("bad_geometry", f"a polygon needs at least 3 points, got {[p.shape[0] for p in parts]}")
    if not all(np.isfinite(p).all() for p in parts):
        return ("non_finite", "polygon has NaN or infinite coordinates")
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
    return _instance(ob, cat, poly, geometry.hbb_of(poly).tolist(), obb, area, clipped)


# ---------------------------------------------------------------------------------------------- images


@dataclass(slots=True)
class ImageInfo:
    rel: str  # relative to the dataset root (posix)
    key_rel: str  # relative to the image folder, for the scene key
    width: int | None
    height: int | None
    flags: list[str]
    fmt: str | None


def _size_ok(w: Any, h: Any) -> bool:
    return isinstance(w, (int, np.integer)) and isinstance(h, (int, np.integer)) and w > 0 and h > 0


def locate_image(
    root: Path,
    finder: ImageFinder,
    images_dir: Path | list[Path],
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
        if stem_only:
            images_dir = folders[0]
            path, by_stem = finder.find_stem(images_dir, name), False
        else:
            found, images_dir = finder.find_in(folders, name)
            path, by_stem = found.path, found.found_by_stem
    except UnsafePathError as exc:
        return ("unsafe_path", str(exc))
    w, h = ann_size if ann_size is not None else (None, None)
    if isinstance(w, float) and w.is_integer() and isinstance(h, float) and h.is_integer():
        w, h = int(w), int(h)
    trusted = _size_ok(w, h)
    flags: list[str] = []
    if path is None:
        default_name = (name + ".png" if stem_only else name).replace("\\", "/")
        rel_img = rel_to(os.path.join(images_dir, default_name), root)
        if options.require_images:
            return ("image_missing", f"image {rel_img} not found")
        if not trusted:
            return ("no_image_no_size", f"no image and no size: {rel_img} not found")
        return ImageInfo(rel_img, default_name, int(w), int(h), ["image_missing"], None)
    if by_stem:
        flags.append("image_found_by_stem")
    try:
        fmt = sniff_file(path)
        if trusted:
            check_pixels(path, int(w), int(h), options.max_pixels)
        else:
            w, h = image_size(path, options.max_pixels)
    except ImageTooLargeError as exc:
        return ("image_too_large", str(exc))
    except (OSError, ValueError, SyntaxError) as exc:
        return ("image_unreadable", f"cannot read image header: {exc}")
    if fmt is not None and EXT_FORMAT.get(path.suffix.lower()) not in (None, fmt):
        flags.append("extension_mismatch")
    return ImageInfo(rel_to(path, root), rel_to(path, images_dir), int(w), int(h), flags, fmt)


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
    key = scene_key(source, info.key_rel)
    instances: list[Instance] = []
    clipped = 0
    for ob, b in zip(objs, built, strict=True):
        if isinstance(b, tuple):
            yield Reject(provenance.file, ob.record, b[1], b[0], 1, key)
        elif isinstance(b, Clipped):
            instances.append(b.inst)
            clipped += 1
        else:
            instances.append(b)
    yield Scene(
        key=key,
        source=source,
        image_path=info.rel,
        root=os.path.abspath(root),
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
    built = build_instances(objs, *size, classes)
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


def read_layout_files(lay: Layout, options: ReadOptions, read_file: FileReader) -> Iterator[Scene | Reject]:
    """Run ``read_file(f, fname, lay, finder, classes, options)`` over the layout's annotation files in
    order (``fname``: ``f`` relative to the root); anything not a regular file is a Reject, never opened."""
    finder = ImageFinder(lay.root)
    classes = ClassResolver(options.class_map, options.unknown_classes)
    for f in lay.files:
        fname = rel_to(f, lay.root)
        if not f.is_file():
            yield Reject(fname, None, NOT_REGULAR_FILE, "parse_error")
            continue
        yield from read_file(f, fname, lay, finder, classes, options)


def parse_error_position(exc: Exception) -> str:
    """``line L, column C`` from a JSON or XML parser error, when it says."""
    line = getattr(exc, "lineno", None)
    col = getattr(exc, "colno", None)
    pos = getattr(exc, "position", None)
    if line is None and isinstance(pos, tuple) and len(pos) == 2:
        line, col = pos
    return f"line {line}, column {col}" if line is not None else "unknown position"
