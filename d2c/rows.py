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


@dataclass(frozen=True, slots=True)
class RowInput:
    """Everything one shard row is made of (the arguments of :func:`scene_to_row`)."""

    scene: Scene
    captions: list[str]
    template_ids: list[str]
    image: ImageRecord
    parent_key: str | None = None
    tile_offset: tuple[int, int] | None = None


def rows_table(rows: list[RowInput]) -> Any:
    """The rows :func:`scene_to_row` would give, as one Arrow table in :data:`d2c.schema.SCHEMA`, built
    column by column: the geometry of all instances goes into Arrow as a few numpy arrays instead of a
    Python float per coordinate, which is most of the cost of ``Table.from_pylist`` on dict rows."""
    import pyarrow as pa

    from d2c.schema import SCHEMA

    scenes = [r.scene for r in rows]
    images = [r.image for r in rows]
    string, int32, float64 = pa.string(), pa.int32(), pa.float64()
    str_list = pa.list_(string)
    cols = {
        "key": pa.array([s.key for s in scenes], string),
        "source": pa.array([s.source for s in scenes], string),
        "split": pa.array([s.split for s in scenes], string),
        "image": _struct(SCHEMA.field("image").type, [pa.array([i.bytes for i in images], pa.binary()),
                                                       pa.array([i.path for i in images], string)]),
        "image_format": pa.array([i.format for i in images], string),
        "width": pa.array([s.width for s in scenes], int32),
        "height": pa.array([s.height for s in scenes], int32),
        "image_scale": pa.array([float(i.scale) for i in images], float64),
        "orig_dtype": pa.array([i.orig_dtype for i in images], string),
        "stretch": pa.array([i.stretch for i in images], string),
        "sha256": pa.array([i.sha256 for i in images], string),
        "flags": pa.array([list(s.flags) for s in scenes], str_list),
        "captions": pa.array([list(r.captions) for r in rows], str_list),
        "template_ids": pa.array([list(r.template_ids) for r in rows], str_list),
        "objects": _objects_column(scenes, SCHEMA.field("objects").type),
        "counts": pa.array([[{"category": c, "count": n} for c, n in s.counts().items()] for s in scenes],
                           SCHEMA.field("counts").type),
        "gsd": pa.array([s.gsd for s in scenes], float64),
        "image_source": pa.array([s.image_source for s in scenes], string),
        "provenance": _struct(SCHEMA.field("provenance").type,
                              [pa.array([s.provenance.file for s in scenes], string),
                               pa.array([s.provenance.record for s in scenes], string)]),
        "parent_key": pa.array([r.parent_key for r in rows], string),
        "tile_offset": pa.array([list(r.tile_offset) if r.tile_offset is not None else None for r in rows],
                                SCHEMA.field("tile_offset").type),
    }
    return pa.Table.from_arrays([cols[name] for name in SCHEMA.names], schema=SCHEMA)


def _struct(struct_type: Any, children: list[Any]) -> Any:
    import pyarrow as pa

    return pa.StructArray.from_arrays(children, fields=list(struct_type))


def _lists(values: np.ndarray, lengths: list[int] | np.ndarray) -> Any:
    """A list<float64> array from flat ``values`` and each list's length."""
    import pyarrow as pa

    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float64()))


def _objects_column(scenes: list[Scene], list_type: Any) -> Any:
    """``objects`` (a list of object structs per scene) from the concatenated instances of ``scenes``."""
    import pyarrow as pa

    insts = [i for s in scenes for i in s.instances]
    n = len(insts)
    polys = [np.asarray(i.polygon, dtype=np.float64).reshape(-1) for i in insts]
    flat = np.concatenate(polys) if polys else np.zeros(0)
    hbb = np.asarray([i.hbb for i in insts], dtype=np.float64).reshape(-1)
    obb = np.asarray([i.obb for i in insts], dtype=np.float64).reshape(-1)
    struct_type = list_type.value_type
    values = _struct(struct_type, [
        pa.array([i.category for i in insts], pa.string()),
        pa.array([i.raw_category for i in insts], pa.string()),
        _lists(flat, [len(p) for p in polys]),
        _lists(hbb, np.full(n, 4)),
        _lists(obb, np.full(n, 5)),
        pa.array([bool(i.difficult) for i in insts], pa.bool_()),
    ])
    offsets = np.zeros(len(scenes) + 1, dtype=np.int32)
    np.cumsum([len(s.instances) for s in scenes], out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values, type=list_type)
