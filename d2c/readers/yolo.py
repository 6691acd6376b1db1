"""YOLO and YOLO-OBB label folders: the formats detectors (Ultralytics and friends) train on.

Layout: ``images/`` and ``labels/`` under the dataset root, optionally split into the same subfolders
(``images/train/a.png`` <-> ``labels/train/a.txt``). One label line per object, coordinates normalised to
the image size (read from the image header):

- ``yolo``: ``class cx cy w h`` (an axis-aligned box); lines of ``class x1 y1 ... xn yn`` (n >= 3,
  YOLO segmentation) are read as polygons too;
- ``yolo_obb``: ``class x1 y1 x2 y2 x3 y3 x4 y4`` (the four corners of an oriented box).

``class`` is an index into a names list: ``classes.txt`` (one name per line, in the root or in
``labels/``) or the ``names:`` entry of a ``data.yaml``-style file in the root, read with
``yaml.safe_load`` (a list, or an index -> name mapping with keys 0..n-1; ``nc`` must agree). An invalid or
incomplete names list stops the read with a one-line error. Without a names list the raw class is the
index itself, which a class map must then name (``"0" = "ship"``). An image without a label file is a scene without objects (YOLO's background
images). Subfolders named train / val (valid, validation) / test set the scene's split.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from d2c.classes import ClassResolver
from d2c.errors import D2CError, UsageError
from d2c.images import IMAGE_EXTS, ImageFinder
from d2c.limits import DEFAULT_LIMITS, GeometryLimits, short
from d2c.model import Provenance, Reject, Scene
from d2c.readers.base import (
    RawObject,
    ReadOptions,
    assemble_scene,
    build_instances,
    locate_image,
    rel_to,
    source_name,
)

log = logging.getLogger(__name__)

NAMES_FILES = ("classes.txt", "labels/classes.txt", "obj.names")
YAML_FILES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class NamesError(D2CError):
    """A names list that is invalid or incomplete (it stops the read: see :meth:`YoloReader.read`)."""


# ---------------------------------------------------------------------------------------------- names


def parse_names_yaml(text: str, origin: str = "data.yaml") -> list[str]:
    """The class names of a data.yaml (read with ``yaml.safe_load``: anchors, flow and block forms, quoting):
    its top-level ``names`` as a list, or as a mapping whose keys are the indices 0..n-1, each name a
    non-empty string; with ``nc``, exactly that many. Anything else is a :class:`NamesError` naming the file
    (and the line, for a YAML syntax error): an incomplete list would misname or drop objects silently."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f": line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise NamesError(f"{origin}{where}: invalid YAML: {problem}") from None
    if not isinstance(doc, dict) or "names" not in doc:
        raise NamesError(f"{origin}: no top-level 'names:' entry")
    names = doc["names"]
    if isinstance(names, dict):
        keys = list(names)
        if not all(type(k) is int for k in keys):
            raise NamesError(f"{origin}: names keys must be the integers 0, 1, ..., got {sorted(map(str, keys))}")
        if sorted(keys) != list(range(len(keys))):
            missing = sorted(set(range(max(keys) + 1)) - set(keys)) if keys else []
            raise NamesError(f"{origin}: names keys must run 0..{len(keys) - 1} without gaps, got {sorted(keys)}"
                             + (f" (missing {missing})" if missing else ""))
        names = [names[i] for i in range(len(keys))]
    if not isinstance(names, list):
        raise NamesError(f"{origin}: names must be a list or an index -> name mapping, got {type(names).__name__}")
    bad = [(i, n) for i, n in enumerate(names) if not isinstance(n, str) or not n.strip()]
    if bad:
        i, n = bad[0]
        hint = " (quote a name that looks like a number)" if isinstance(n, (int, float)) else ""
        raise NamesError(f"{origin}: class {i} must be a non-empty name, got {n!r}{hint} ({len(bad)} such entries)")
    if not names:
        raise NamesError(f"{origin}: names is empty")
    nc = doc.get("nc")
    if nc is not None and nc != len(names):
        raise NamesError(f"{origin}: nc is {nc!r} but names has {len(names)} entries")
    return [n.strip() for n in names]


def _names_text(path: Path, root: Path) -> str:
    """A names file's text; bytes that are not UTF-8 are a NamesError naming the file, not a traceback."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NamesError(f"{rel_to(path, root)}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_names(root: Path, labels_dir: Path) -> tuple[list[str] | None, str | None]:
    """The class names and the file they came from; ``(None, None)`` when the dataset has no names file."""
    for rel in NAMES_FILES:
        path = root / rel
        if path.is_file():
            names = [ln.strip() for ln in _names_text(path, root).splitlines() if ln.strip()]
            return names, rel_to(path, root)
    if (labels_dir / "classes.txt").is_file():
        path = labels_dir / "classes.txt"
        names = [ln.strip() for ln in _names_text(path, root).splitlines() if ln.strip()]
        return names, rel_to(path, root)
    for rel in YAML_FILES:
        path = root / rel
        if path.is_file():
            return parse_names_yaml(_names_text(path, root), rel), rel
    return None, None


# ---------------------------------------------------------------------------------------------- labels


def parse_label_lines(
    text: str, obb: bool, names: list[str] | None, origin: str, size: tuple[int, int] = (1, 1),
    limits: GeometryLimits = DEFAULT_LIMITS,
) -> list[RawObject]:
    """Label lines -> RawObjects in pixels of an image of ``size`` (width, height); a polygon over
    ``limits`` is refused from its token count, before any number is converted."""
    out: list[RawObject] = []
    for n, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        record = f"line {n}"
        over = limits.check(1, (len(tokens) - 1) // 2)
        if over is not None:
            obj = RawObject(tokens[0][:20], error=("too_complex", f"polygon has {over}"))
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # 1e308 x width: inf, rejected as non-finite
                obj = _parse_tokens(tokens, obb, names, origin, np.array(size, dtype=np.float64))
        obj.record = record
        out.append(obj)
    return out


def _parse_tokens(tokens: list[str], obb: bool, names: list[str] | None, origin: str, scale: np.ndarray) -> RawObject:
    head = tokens[0]
    if not (head.isascii() and head.isdigit() and len(head) <= 18):  # int() refuses "²"; 5000 digits raise
        return RawObject(head[:20], error=("bad_class", f"class {short(head)} is not an index 0, 1, ..."))
    idx = int(head)
    if names is not None and idx >= len(names):
        return RawObject(head, error=("bad_class", f"class index {idx} is not among the {len(names)} names of {origin}"))
    raw = names[idx] if names is not None else head
    if not all(_NUMBER.match(t) for t in tokens[1:]):
        return RawObject(raw, error=("bad_number", f"not a number in {' '.join(tokens[1:])!r}"))
    vals = np.asarray([float(t) for t in tokens[1:]], dtype=np.float64)
    if obb and vals.size != 8:
        return RawObject(raw, error=("bad_line", f"YOLO-OBB needs class + 8 coordinates, got {vals.size} values"))
    if not obb and vals.size == 4:
        if not (vals[2] > 0 and vals[3] > 0):
            return RawObject(raw, error=("zero_area", f"box width and height must be positive, got {vals[2]:g} x {vals[3]:g}"))
        cx, cy, w, h = vals * np.tile(scale, 2)  # to pixels first: fewer rounding steps on the corners
        quad = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2], [cx + w / 2, cy + h / 2],
                         [cx - w / 2, cy + h / 2]])
        return RawObject(raw, parts=[quad])
    if not obb and (vals.size < 6 or vals.size % 2):
        return RawObject(raw, error=("bad_line", f"YOLO needs class cx cy w h (or a polygon), got {vals.size} values"))
    return RawObject(raw, parts=[vals.reshape(-1, 2) * scale])


# ---------------------------------------------------------------------------------------------- reader


def _root_of(path: Path) -> Path:
    return path.parent if path.is_file() else path


def _first_data_line(labels_dir: Path, limit: int = 20) -> list[str] | None:
    for i, path in enumerate(sorted(labels_dir.rglob("*.txt"))):
        if i >= limit:
            break
        if path.name == "classes.txt":
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if line.split():
                return line.split()
    return None


def _split_of(sub: PurePosixPath) -> str | None:
    return SPLIT_DIRS.get(sub.parts[0].lower()) if len(sub.parts) > 1 else None


class YoloReader:
    """``yolo`` (boxes, polygons) or ``yolo_obb`` (four corners) label folders."""

    def __init__(self, name: str, obb: bool) -> None:
        self.name = name
        self.obb = obb

    def detect(self, path: Path) -> bool:
        root = _root_of(Path(path))
        labels = root / "labels"
        if not (labels.is_dir() and (root / "images").is_dir()):
            return False
        tokens = _first_data_line(labels)
        if tokens is None:
            return not self.obb
        return (len(tokens) == 9) == self.obb

    def read(self, path: Path, options: ReadOptions) -> Iterator[Scene | Reject]:
        """Usage errors (no labels folder, no readable names list and no class map) raise here, at the call."""
        root = _root_of(Path(path))
        images_dir = Path(options.images) if options.images else root / "images"
        labels_dir = Path(options.annotations) if options.annotations else root / "labels"
        if not labels_dir.is_dir():
            raise UsageError(f"{labels_dir}: no labels folder (YOLO wants images/ and labels/ under {root})")
        source = options.source or source_name(root)
        names, names_origin = self._names(root, labels_dir, options)
        return self._iter(root, images_dir, labels_dir, names, names_origin or "", source, options)

    def _iter(
        self, root: Path, images_dir: Path, labels_dir: Path, names: list[str] | None, names_origin: str,
        source: str, options: ReadOptions,
    ) -> Iterator[Scene | Reject]:
        classes = ClassResolver(options.class_map, options.unknown_classes)
        finder = ImageFinder(root)
        for stem_rel, label in _pairs(images_dir, labels_dir):
            yield from self._scene(root, images_dir, stem_rel, label, names, names_origin, classes, finder,
                                   source, options)

    def _names(self, root: Path, labels_dir: Path, options: ReadOptions) -> tuple[list[str] | None, str | None]:
        try:
            names, origin = load_names(root, labels_dir)
        except NamesError as exc:  # never guessed around: the indices would be misnamed or dropped
            raise UsageError(f"{exc}; fix the names list (or write the names one per line in classes.txt)") from None
        if names is None and options.class_map is None:
            raise UsageError(f"{root}: no classes.txt or data.yaml names list: add one, or give a class map "
                             f"that names the indices ([aliases] \"0\" = \"ship\")")
        return names, origin

    def _scene(
        self, root: Path, images_dir: Path, stem_rel: PurePosixPath, label: Path | None, names: list[str] | None,
        names_origin: str, classes: ClassResolver, finder: ImageFinder, source: str, options: ReadOptions,
    ) -> Iterator[Scene | Reject]:
        label_rel = rel_to(label, root) if label is not None else None
        prov = Provenance(label_rel or rel_to(images_dir / stem_rel, root))
        text = ""
        if label is not None:
            try:
                if not label.is_file():  # a FIFO would block the read for ever
                    raise OSError("not a regular file (a pipe, device or folder): reading it could block for ever")
                text = label.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                yield Reject(prov.file, None, f"cannot read label file: {exc}", "unreadable", 0, None)
                return
        info = locate_image(root, finder, images_dir / stem_rel.parent, stem_rel.name, None, options, stem_only=True)
        if isinstance(info, tuple):
            lost = sum(1 for line in text.splitlines() if line.split())
            yield Reject(prov.file, None, info[1], info[0], lost, None)
            return
        info.key_rel = rel_to(root / info.rel, images_dir)
        objs = parse_label_lines(text, self.obb, names, names_origin, (int(info.width), int(info.height)),
                                 options.limits)
        n = len(objs)
        built = build_instances(objs, np.full(n, float(info.width)), np.full(n, float(info.height)), classes,
                                options.limits)
        for item in assemble_scene(source=source, root=root, info=info, built=built, objs=objs, provenance=prov):
            if isinstance(item, Scene):
                item.split = _split_of(stem_rel)
            yield item


def _pairs(images_dir: Path, labels_dir: Path) -> list[tuple[PurePosixPath, Path | None]]:
    """(image stem relative to images/, label file or None) for every label file and every image."""
    found: dict[PurePosixPath, Path | None] = {}
    for label in labels_dir.rglob("*.txt"):
        rel = PurePosixPath(label.relative_to(labels_dir).as_posix())
        if rel.name == "classes.txt" and len(rel.parts) == 1:
            continue
        found[rel.with_suffix("")] = label
    if images_dir.is_dir():
        for img in images_dir.rglob("*"):
            if img.suffix.lower() in IMAGE_EXTS and img.is_file():
                found.setdefault(PurePosixPath(img.relative_to(images_dir).as_posix()).with_suffix(""), None)
    return sorted(found.items(), key=lambda kv: str(kv[0]))


READER = YoloReader("yolo", obb=False)
OBB_READER = YoloReader("yolo_obb", obb=True)
READERS = (READER, OBB_READER)
