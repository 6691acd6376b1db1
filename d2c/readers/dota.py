"""DOTA labelTxt (v1.0 / v1.5 / v2.0): one text file per image under ``labelTxt/``, images under ``images/``.

Lines are ``x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]`` (int or float coordinates, either vertex order: the
canonical polygon makes them equal), optionally after ``imagesource:...`` and ``gsd:...`` header lines; CRLF
or LF. The image size comes from the image header; a label file without its image has no size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from d2c.classes import ClassResolver
from d2c.images import ImageFinder
from d2c.model import Provenance, Reject, Scene
from d2c.readers.base import RawObject, ReadOptions, assemble_scene, build_instances, locate_image, rel_to

HEADER_KEYS = ("imagesource", "gsd")


class DotaReader:
    name = "dota"

    def detect(self, path: Path) -> bool:
        path = Path(path)
        if path.is_file():
            return path.suffix.lower() == ".txt" and _looks_like_dota(path)
        if not path.is_dir():
            return False
        if (path / "labelTxt").is_dir():
            return True
        return any(_looks_like_dota(p) for p in sorted(path.glob("*.txt"))[:5])

    def read(self, path: Path, options: ReadOptions) -> Iterator[Scene | Reject]:
        path = Path(os.path.abspath(path))
        if options.annotations:
            labels = Path(os.path.abspath(options.annotations))
        elif path.is_dir() and (path / "labelTxt").is_dir():
            labels = path / "labelTxt"
        else:
            labels = path
        files = [labels] if labels.is_file() else sorted(labels.glob("*.txt"))
        label_dir = labels.parent if labels.is_file() else labels
        root = label_dir.parent if label_dir.name == "labelTxt" else label_dir
        if options.images:
            images_dir = Path(os.path.abspath(options.images))
        else:
            images_dir = root / "images" if (root / "images").is_dir() or label_dir.name == "labelTxt" else root
        source = options.source or root.name or "dota"
        finder = ImageFinder(root)
        classes = ClassResolver(options.class_map, options.unknown_classes)
        for f in files:
            yield from _read_file(f, root, images_dir, source, finder, classes, options)


def _looks_like_dota(path: Path) -> bool:
    if not path.is_file():  # a FIFO would block the read for ever
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in islice(fh, 4):
                parts = line.split()
                if len(parts) >= 9 and _floats(parts[:8]) is not None:
                    return True
                if not parts or line.split(":", 1)[0].strip().lower() in HEADER_KEYS:
                    continue
                return False
    except OSError:
        return False
    return False


def _floats(tokens: list[str]) -> list[float] | None:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


def _parse(text: str, fname: str) -> tuple[dict[str, str], list[RawObject]]:
    header: dict[str, str] = {}
    objs: list[RawObject] = []
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        key, sep, value = s.partition(":")
        if sep and key.strip().lower() in HEADER_KEYS and not objs:
            header[key.strip().lower()] = value.strip()
            continue
        parts = s.split()
        rec = f"line {n}"
        coords = _floats(parts[:8]) if len(parts) >= 9 else None
        if coords is None or len(parts) > 10:
            objs.append(
                RawObject(
                    parts[8] if len(parts) >= 9 else "?",
                    record=rec,
                    error=("bad_record", f"expected 'x1 y1 ... x4 y4 class [difficult]', got {s[:80]!r}"),
                )
            )
            continue
        difficult = len(parts) == 10 and parts[9] not in ("0", "0.0")
        objs.append(RawObject(parts[8], [np.asarray(coords, dtype=np.float64).reshape(4, 2)], difficult, rec))
    return header, objs


def _gsd(value: str | None) -> float | None:
    try:
        g = float(value) if value is not None else None
    except ValueError:
        return None
    return g if g is not None and math.isfinite(g) and g > 0 else None


def _read_file(
    f: Path, root: Path, images_dir: Path, source: str, finder: ImageFinder, classes: ClassResolver, options: ReadOptions
) -> Iterator[Scene | Reject]:
    fname = rel_to(f, root)
    if not f.is_file():
        yield Reject(fname, None, "not a regular file (a pipe, device or folder): reading it could block for ever", "parse_error")
        return
    try:
        text = f.read_bytes().decode("utf-8", errors="replace").removeprefix("\ufeff")  # BOM: Windows editors
    except OSError as exc:
        yield Reject(fname, None, f"cannot read file: {exc}", "parse_error")
        return
    header, objs = _parse(text, fname)
    info = locate_image(root, finder, images_dir, f.stem, None, options, stem_only=True)
    if isinstance(info, tuple):
        bad = [o for o in objs if o.error is not None]
        for o in bad:
            yield Reject(fname, o.record, o.error[1], o.error[0], 1)  # type: ignore[index]
        yield Reject(fname, None, info[1], info[0], len(objs) - len(bad))
        return
    n = len(objs)
    built = build_instances(objs, np.full(n, float(info.width or np.nan)), np.full(n, float(info.height or np.nan)), classes)
    yield from assemble_scene(
        source=source,
        root=root,
        info=info,
        built=built,
        objs=objs,
        provenance=Provenance(fname),
        gsd=_gsd(header.get("gsd")),
        image_source=header.get("imagesource") or None,
    )


READER = DotaReader()
