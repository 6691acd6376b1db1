"""COCO JSON writer: ``images`` (id, file_name, width, height), ``annotations`` (bbox ``[x, y, w, h]``,
one polygon ``segmentation``, area, iscrowd 0) and ``categories`` (ids from 1, sorted by name).

The polygon is kept exactly, so the reader's minimum rotated rectangle gives back the same oriented box.
``gsd`` and ``image_source`` ride along as extra image keys (COCO readers ignore unknown keys).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from d2c.model import Scene
from d2c.writers import atomic_write_bytes, image_name


def _file_name(scene: Scene, images_dir: Path | None) -> str:
    """``file_name`` relative to ``images_dir`` when the image lies under it, else the bare name."""
    if images_dir is not None and scene.root:
        full = Path(scene.root) / scene.image_path
        try:
            return PurePosixPath(full.resolve().relative_to(Path(images_dir).resolve()).as_posix()).as_posix()
        except ValueError:
            pass
    return image_name(scene)


def coco_document(scenes: Iterable[Scene], images_dir: Path | None = None) -> dict[str, Any]:
    """The COCO dict for ``scenes`` (image and annotation ids follow input order, from 1)."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    cat_of: dict[str, list[dict[str, Any]]] = {}
    for image_id, scene in enumerate(scenes, start=1):
        img: dict[str, Any] = {"id": image_id, "file_name": _file_name(scene, images_dir)}
        if scene.width is not None and scene.height is not None:
            img.update(width=int(scene.width), height=int(scene.height))
        if scene.gsd is not None:
            img["gsd"] = float(scene.gsd)
        if scene.image_source:
            img["image_source"] = scene.image_source
        images.append(img)
        for inst in scene.instances:
            x0, y0, x1, y1 = (float(v) for v in inst.hbb)
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": inst.category,  # resolved to an integer id below
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "segmentation": [[float(v) for v in inst.polygon.reshape(-1)]],
                "area": float(inst.area),
                "iscrowd": 0,
            }
            if inst.difficult:
                ann["difficult"] = 1
            annotations.append(ann)
            cat_of.setdefault(inst.category, []).append(ann)
    categories = []
    for cat_id, name in enumerate(sorted(cat_of), start=1):
        categories.append({"id": cat_id, "name": name, "supercategory": name})
        for ann in cat_of[name]:
            ann["category_id"] = cat_id
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(scenes: Iterable[Scene], out_json: Path, images_dir: Path | None = None) -> Path:
    """Write ``scenes`` to ``out_json`` atomically; returns the path."""
    doc = coco_document(scenes, images_dir)
    out = Path(out_json)
    atomic_write_bytes(out, orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return out
