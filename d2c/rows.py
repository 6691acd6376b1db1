"""Mapping between the canonical model and shard rows (plain dicts in :data:`d2c.schema.SCHEMA` layout).

``scene_to_row`` is what the shard writer stores; ``scene_from_row`` rebuilds a Scene from a row so that
captions can be re-rendered (augmentation) and shards exported back to detection formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from d2c.model import Instance, Provenance, Scene


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """What is stored for a scene's image: bytes (embed mode) or None (reference mode)."""

    bytes: bytes | None
    path: str | None
    format: str | None
    sha256: str | None
    orig_dtype: str | None = None
    stretch: str | None = None
    scale: float = 1.0


def instance_to_object(inst: Instance) -> dict[str, Any]:
    return {
        "category": inst.category,
        "raw_category": inst.raw_category,
        "polygon": [float(v) for v in inst.polygon.reshape(-1)],
        "hbb": [float(v) for v in inst.hbb],
        "obb": [float(v) for v in inst.obb],
        "difficult": bool(inst.difficult),
    }


def object_to_instance(obj: dict[str, Any]) -> Instance:
    pts = np.asarray(obj["polygon"], dtype=np.float64).reshape(-1, 2)
    return Instance.from_polygon(pts, obj["raw_category"], obj["category"], difficult=bool(obj["difficult"]))


def scene_to_row(
    scene: Scene,
    captions: list[str],
    template_ids: list[str],
    image: ImageRecord,
    *,
    parent_key: str | None = None,
    tile_offset: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """One shard row for ``scene``; column order and types follow :data:`d2c.schema.SCHEMA`."""
    return {
        "key": scene.key,
        "source": scene.source,
        "split": scene.split,
        "image": {"bytes": image.bytes, "path": image.path},
        "image_format": image.format,
        "width": scene.width,
        "height": scene.height,
        "image_scale": float(image.scale),
        "orig_dtype": image.orig_dtype,
        "stretch": image.stretch,
        "sha256": image.sha256,
        "flags": list(scene.flags),
        "captions": list(captions),
        "template_ids": list(template_ids),
        "objects": [instance_to_object(i) for i in scene.instances],
        "counts": [{"category": c, "count": n} for c, n in scene.counts().items()],
        "gsd": scene.gsd,
        "image_source": scene.image_source,
        "provenance": {"file": scene.provenance.file, "record": scene.provenance.record},
        "parent_key": parent_key,
        "tile_offset": list(tile_offset) if tile_offset is not None else None,
    }


def scene_from_row(row: dict[str, Any], root: str = "") -> Scene:
    """Rebuild the Scene a row was written from (captions and image bytes are not part of a Scene)."""
    prov = row.get("provenance") or {}
    image = row.get("image") or {}
    return Scene(
        key=row["key"],
        source=row["source"],
        image_path=image.get("path") or row["key"].split("/", 1)[1],
        root=root,
        width=row.get("width"),
        height=row.get("height"),
        instances=[object_to_instance(o) for o in (row.get("objects") or [])],
        gsd=row.get("gsd"),
        image_source=row.get("image_source"),
        split=row.get("split"),
        provenance=Provenance(prov.get("file") or "", prov.get("record")),
        flags=list(row.get("flags") or []),
        image_format=row.get("image_format"),
    )
