"""DOTA labelTxt (v1.0 / v1.5 / v2.0): one text file per image under ``labelTxt/``, images under ``images/``.

Lines are ``x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]`` (int or float coordinates, either vertex order: the
canonical polygon makes them equal), optionally after ``imagesource:...`` and ``gsd:...`` header lines; CRLF
or LF. The image size comes from the image header; a label file without its image has no size.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from d2c.classes import ClassResolver
from d2c.images import ImageFinder
from d2c.limits import usable_gsd
from d2c.model import Reject, Scene
from d2c.readers.base import (
    Layout,
    RawObject,
    ReadOptions,
    locate_image,
    resolve_layout,
    scene_of_file,
)
from d2c.readers.plan import LayoutPlan, plan_items

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
        yield from plan_items(self.plan(path, options))

    def plan(self, path: Path, options: ReadOptions) -> LayoutPlan:
        """One unit per annotation file (see :mod:`d2c.readers.plan`)."""
        lay = resolve_layout(path, options, ann_dirname="labelTxt", pattern="*.txt", image_dirs=("images",),
                             default_source="dota", images_implied=True)
        return LayoutPlan(lay, options, _read_file)


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
    return usable_gsd(g)  # NaN, 0, negative or over GSD_MAX (1e308 made metres infinite): unusable


def _read_file(
    f: Path, fname: str, lay: Layout, finder: ImageFinder, classes: ClassResolver, options: ReadOptions
) -> Iterator[Scene | Reject]:
    root, images_dir = lay.root, lay.images_dir
    try:
        text = f.read_bytes().decode("utf-8", errors="replace").removeprefix("\ufeff")  # BOM: Windows editors
    except OSError as exc:
        yield Reject(fname, None, f"cannot read file: {exc}", "parse_error")
        return
    header, objs = _parse(text, fname)
    info = locate_image(root, finder, images_dir, f.stem, None, options, stem_only=True)
    yield from scene_of_file(fname, objs, info, classes, source=lay.source, root=root,
                             gsd=_gsd(header.get("gsd")), image_source=header.get("imagesource") or None)


READER = DotaReader()
