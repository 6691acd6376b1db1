"""Reads ``boxes.csv``: ``image,width,height,class,x_min,y_min,x_max,y_max``, one row per box (a row with an
empty class is an image without objects). Images are named relative to the folder holding the CSV.

Only d2c's public model (Scene, Instance, Reject) and class resolution are used, as a plug-in should.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from d2c.classes import ClassResolver
from d2c.model import Instance, Provenance, Reject, Scene, scene_key

HEADER = ["image", "width", "height", "class", "x_min", "y_min", "x_max", "y_max"]


class CsvBoxReader:
    name = "csvbox"

    @staticmethod
    def _csv(path: Path) -> Path:
        return path / "boxes.csv" if path.is_dir() else path

    def detect(self, path: Path) -> bool:
        csv_path = self._csv(Path(path))
        if not csv_path.is_file() or csv_path.suffix != ".csv":
            return False
        with open(csv_path, encoding="utf-8", newline="") as fh:
            return next(csv.reader(fh), None) == HEADER

    def read(self, path: Path, options: Any) -> Iterator[Scene | Reject]:
        csv_path = self._csv(Path(path))
        root = csv_path.parent
        source = options.source or root.name
        classes = ClassResolver(options.class_map, options.unknown_classes)
        scenes: dict[str, Scene] = {}
        with open(csv_path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
        for n, row in enumerate(rows[1:], start=2):
            record = f"line {n}"
            if len(row) != len(HEADER):
                yield Reject(csv_path.name, record, f"expected {len(HEADER)} fields, got {len(row)}", "bad_line", 1)
                continue
            image, width, height, raw = row[:4]
            key = scene_key(source, image)
            scene = scenes.get(key)
            if scene is None:
                scene = scenes[key] = Scene(key=key, source=source, image_path=image, root=str(root.resolve()),
                                            width=int(width), height=int(height),
                                            provenance=Provenance(csv_path.name))
            if not raw:
                continue
            res = classes.resolve(raw)
            if res.category is None:
                yield Reject(csv_path.name, record, res.reason or "bad class", res.code or "bad_class", 1, key)
                continue
            try:
                x0, y0, x1, y1 = (float(v) for v in row[4:])
                scene.instances.append(Instance.from_hbb(x0, y0, x1, y1, raw, res.category, record=record))
            except ValueError as exc:
                yield Reject(csv_path.name, record, str(exc), "bad_geometry", 1, key)
        yield from scenes.values()


READER = CsvBoxReader()
