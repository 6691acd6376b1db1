"""Pascal VOC XML (LabelImg, roLabelImg and polygon variants), parsed with defusedxml.

Objects: ``<bndbox>`` (xmin..ymax, or x1..y4 corners), roLabelImg's ``<robndbox>`` (cx, cy, w, h, angle in
radians), ``<polygon>`` (``<x1><y1>...`` or ``<point><x><y>`` children, or a text list). ``<size>`` is used
when positive (0 or missing: the image header). Layout: ``Annotations/`` with ``JPEGImages/`` (or
``images/``); ``<filename>`` may lack its extension or not match: the XML's stem is the fallback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import parse as safe_parse

from d2c import geometry
from d2c.classes import ClassResolver
from d2c.images import ImageFinder
from d2c.limits import COORD_MAX, GeometryLimits
from d2c.model import Reject, Scene
from d2c.readers.base import (
    ImageInfo,
    Layout,
    RawObject,
    ReadOptions,
    locate_image,
    parse_error_position,
    resolve_layout,
    scene_of_file,
)
from d2c.readers.plan import LayoutPlan, plan_items

_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf", re.IGNORECASE)


class VocReader:
    name = "voc"

    def detect(self, path: Path) -> bool:
        path = Path(path)
        if path.is_file():
            return path.suffix.lower() == ".xml"
        if not path.is_dir():
            return False
        return (path / "Annotations").is_dir() or any(True for _ in path.glob("*.xml"))

    def read(self, path: Path, options: ReadOptions) -> Iterator[Scene | Reject]:
        yield from plan_items(self.plan(path, options))

    def plan(self, path: Path, options: ReadOptions) -> LayoutPlan:
        """One unit per annotation file (see :mod:`d2c.readers.plan`)."""
        lay = resolve_layout(path, options, ann_dirname="Annotations", pattern="*.xml",
                             image_dirs=("JPEGImages", "images"), default_source="voc")
        return LayoutPlan(lay, options, _read_file)


def _text(el: Element | None, tag: str) -> str | None:
    child = el.find(tag) if el is not None else None
    return child.text.strip() if child is not None and child.text else None


def _num(el: Element, tag: str) -> float:
    value = _text(el, tag)
    if value is None:
        raise ValueError(f"<{tag}> is missing")
    return float(value)


def _size_value(value: str | None) -> float | str | None:
    """A ``<width>``/``<height>`` as a number for :func:`d2c.limits.annotated_size` (None when missing;
    the text itself when it is not a number, which that refuses)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _geometry(obj: Element, limits: GeometryLimits) -> np.ndarray:
    """The object's points (N, 2); ValueError says what is wrong."""
    rob = obj.find("robndbox")
    if rob is not None:
        cx, cy, w, h, a = (_num(rob, t) for t in ("cx", "cy", "w", "h", "angle"))
        if not np.isfinite([cx, cy, w, h, a]).all():
            return np.full((4, 2), np.nan)
        if max(abs(cx), abs(cy), abs(w), abs(h)) > COORD_MAX:  # its corners would overflow to infinity
            raise _OutOfRange(f"robndbox {cx:g} {cy:g} {w:g} {h:g} has a value beyond +-2^53: not a pixel position")
        if w <= 0 or h <= 0:
            raise _ZeroArea(f"robndbox w and h must be positive, got w={w:g}, h={h:g}")
        return geometry.rotated_rect_from_radians(cx, cy, w, h, a)
    poly = obj.find("polygon")
    if poly is not None:
        return _polygon(poly, limits)
    box = obj.find("bndbox")
    if box is None:
        raise ValueError("object has no <bndbox>, <robndbox> or <polygon>")
    if box.find("xmin") is None and box.find("x1") is not None:
        return _polygon(box, limits)
    x0, y0, x1, y1 = (_num(box, t) for t in ("xmin", "ymin", "xmax", "ymax"))
    if np.isfinite([x0, y0, x1, y1]).all() and (x1 <= x0 or y1 <= y0):
        raise _ZeroArea(f"bndbox needs xmin < xmax and ymin < ymax, got {x0:g}, {y0:g}, {x1:g}, {y1:g}")
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


class _ZeroArea(ValueError):
    pass


class _TooComplex(ValueError):
    pass


class _OutOfRange(ValueError):
    pass


def _polygon(el: Element, limits: GeometryLimits) -> np.ndarray:
    """The points of a polygon element, counted against ``limits`` before any is converted."""
    over = limits.check(1, len(el) // 2 if len(el) and el[0].find("x") is None else len(el))
    if over is not None:
        raise _TooComplex(f"polygon has {over}")
    xs = {}
    ys = {}
    for child in el:
        m = re.fullmatch(r"([xy])(\d+)", child.tag)
        if m and child.text:
            (xs if m.group(1) == "x" else ys)[int(m.group(2))] = float(child.text)
    if xs:
        if sorted(xs) != sorted(ys):
            raise ValueError(f"polygon x and y indices differ: {sorted(xs)} vs {sorted(ys)}")
        return np.array([[xs[i], ys[i]] for i in sorted(xs)], dtype=np.float64)
    pts = [(_num(p, "x"), _num(p, "y")) for p in el if p.find("x") is not None]
    if pts:
        return np.asarray(pts, dtype=np.float64)
    texts = _NUM.findall(el.text or "")
    over = limits.check(1, len(texts) // 2)
    if over is not None:
        raise _TooComplex(f"polygon has {over}")
    nums = [float(v) for v in texts]
    if len(nums) < 6 or len(nums) % 2:
        raise ValueError(f"polygon needs an even number (>= 6) of coordinates, got {len(nums)}")
    return np.asarray(nums, dtype=np.float64).reshape(-1, 2)


def _objects(tree_root: Element, limits: GeometryLimits) -> list[RawObject]:
    objs: list[RawObject] = []
    for n, obj in enumerate(tree_root.iter("object"), start=1):
        name = _text(obj, "name") or ""
        rec = f"object {n}"
        diff = _text(obj, "difficult")
        ob = RawObject(name or "?", difficult=diff not in (None, "0", "0.0", "false", "False"), record=rec)
        if not name:
            ob.error = ("bad_record", "object has no <name>")
        else:
            try:
                ob.parts = [_geometry(obj, limits)]
            except _ZeroArea as exc:
                ob.error = ("zero_area", str(exc))
            except _TooComplex as exc:
                ob.error = ("too_complex", str(exc))
            except _OutOfRange as exc:
                ob.error = ("out_of_range", str(exc))
            except ValueError as exc:
                ob.error = ("bad_geometry", str(exc))
        objs.append(ob)
    return objs


def _read_file(
    f: Path, fname: str, lay: Layout, finder: ImageFinder, classes: ClassResolver, options: ReadOptions
) -> Iterator[Scene | Reject]:
    root, images_dir = lay.root, lay.images_dir
    try:
        tree_root = safe_parse(str(f)).getroot()
    except ParseError as exc:
        yield Reject(fname, None, f"malformed XML at {parse_error_position(exc)}: {exc}", "parse_error")
        return
    except DefusedXmlException as exc:
        yield Reject(fname, None, f"refused unsafe XML: {exc!r}", "parse_error")
        return
    except OSError as exc:
        yield Reject(fname, None, f"cannot read file: {exc}", "parse_error")
        return
    objs = _objects(tree_root, options.limits)
    size = tree_root.find("size")
    ann_size: tuple[Any, Any] = (_size_value(_text(size, "width")), _size_value(_text(size, "height")))
    info = _image(tree_root, f, root, images_dir, finder, ann_size, options)
    yield from scene_of_file(fname, objs, info, classes, source=lay.source, root=root, limits=options.limits)


def _image(
    tree_root: Element,
    f: Path,
    root: Path,
    images_dir: Path,
    finder: ImageFinder,
    ann_size: tuple[Any, Any],
    options: ReadOptions,
) -> ImageInfo | tuple[str, str]:
    """The image: ``<filename>`` (by name, then stem), else the XML's stem (flagged as found by stem)."""
    filename = (_text(tree_root, "filename") or "").replace("\\", "/")
    if filename:
        info = locate_image(root, finder, images_dir, filename, ann_size, options)
        if not _missing(info):
            return info
    if filename and Path(filename).stem == f.stem:
        return info
    found = finder.find_stem(images_dir, f.stem)
    if found is None:
        return info if filename else locate_image(root, finder, images_dir, f.stem + ".jpg", ann_size, options)
    info = locate_image(root, finder, images_dir, found.name, ann_size, options)
    if not isinstance(info, tuple):
        info.flags.append("image_found_by_stem")
    return info


def _missing(info: ImageInfo | tuple[str, str]) -> bool:
    if isinstance(info, tuple):
        return info[0] in ("image_missing", "no_image_no_size")
    return "image_missing" in info.flags


READER = VocReader()
