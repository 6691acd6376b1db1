"""Mapping between the canonical model and shard rows (plain dicts in :data:`d2c.schema.SCHEMA` layout).

``scene_to_row`` is what the shard writer stores; ``scene_from_row`` rebuilds a Scene from a row so that
captions can be re-rendered (augmentation) and shards exported back to detection formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from d2c.model import Instance, Provenance, Scene

if TYPE_CHECKING:
    from d2c.blocks import SceneBlock


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


def scene_from_row(row: dict[str, Any], root: str = "", *, instances: bool = True) -> Scene:
    """Rebuild the Scene a row was written from (captions and image bytes are not part of a Scene).
    ``instances=False``: leave them out, for a caller that only loads the image (rebuilding each object's
    geometry costs about a third of a millisecond: most of the chip writer's time on small images)."""
    prov = row.get("provenance") or {}
    image = row.get("image") or {}
    return Scene(
        key=row["key"],
        source=row["source"],
        image_path=image.get("path") or row["key"].split("/", 1)[1],
        root=root,
        width=row.get("width"),
        height=row.get("height"),
        instances=[object_to_instance(o) for o in (row.get("objects") or [])] if instances else [],
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
    """The rows :func:`scene_to_row` would give, as one Arrow table in :data:`d2c.schema.SCHEMA`: see
    :func:`block_table`."""
    from d2c.blocks import SceneBlock

    return block_table(SceneBlock.from_scenes([r.scene for r in rows]), [r.captions for r in rows],
                       [r.template_ids for r in rows], [r.image for r in rows],
                       parent_key=[r.parent_key for r in rows], tile_offset=[r.tile_offset for r in rows])


def block_table(
    block: SceneBlock,
    captions: list[list[str]],
    template_ids: list[list[str]],
    images: list[ImageRecord],
    *,
    parent_key: list[str | None] | None = None,
    tile_offset: list[tuple[int, int] | None] | None = None,
) -> Any:
    """The shard rows of the scenes of ``block`` (with each one's captions, template ids and image record,
    and for tiles their parent key and offset), as one Arrow table in :data:`d2c.schema.SCHEMA` equal to
    :func:`scene_to_row`'s rows. Built column by column: the geometry of all instances goes into Arrow as
    a few numpy arrays instead of a Python float per coordinate, which is most of the cost of
    ``Table.from_pylist`` on dict rows."""
    import pyarrow as pa

    from d2c.schema import SCHEMA

    n = len(block)
    int32, float64, string = pa.int32(), pa.float64(), pa.string()
    str_list = SCHEMA.field("flags").type

    def strings(values: list[str | None]) -> Any:
        return pa.array(values, string)

    cols = {
        "key": strings(block.key),
        "source": strings(block.source),
        "split": strings(block.split),
        "image": _struct(SCHEMA.field("image").type, [pa.array([i.bytes for i in images], pa.binary()),
                                                       strings([i.path for i in images])]),
        "image_format": strings([i.format for i in images]),
        "width": pa.array(block.width, int32),
        "height": pa.array(block.height, int32),
        "image_scale": pa.array(np.fromiter([i.scale for i in images], np.float64, n), float64),
        "orig_dtype": strings([i.orig_dtype for i in images]),
        "stretch": strings([i.stretch for i in images]),
        "sha256": strings([i.sha256 for i in images]),
        "flags": pa.array(block.flags, str_list),
        "captions": pa.array(captions, str_list),
        "template_ids": pa.array(template_ids, str_list),
        "objects": _objects_column(block, SCHEMA.field("objects").type),
        "counts": _counts_column(block, SCHEMA.field("counts").type),
        "gsd": pa.array(block.gsd, float64),
        "image_source": strings(block.image_source),
        "provenance": _struct(SCHEMA.field("provenance").type, [strings(block.file), strings(block.record)]),
        "parent_key": strings(parent_key if parent_key is not None else [None] * n),
        "tile_offset": pa.array(tile_offset if tile_offset is not None else [None] * n,
                                SCHEMA.field("tile_offset").type),
    }
    return pa.Table.from_arrays([cols[name] for name in SCHEMA.names], schema=SCHEMA)


def _struct(struct_type: Any, children: list[Any]) -> Any:
    import pyarrow as pa

    return pa.StructArray.from_arrays(children, fields=list(struct_type))


def _list_array(list_type: Any, lengths: Any, values: Any) -> Any:
    """A ``list_type`` array whose item k holds the next ``lengths[k]`` of ``values`` (int32 offsets: more
    than 2**31 - 1 values in all raise, as ``pa.array`` does)."""
    import pyarrow as pa

    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=list_type)


def _float_lists(values: np.ndarray, lengths: Any) -> Any:
    """A list<float64> array from flat float64 ``values`` and each list's length."""
    import pyarrow as pa

    return _list_array(pa.list_(pa.float64()), lengths, pa.array(np.ravel(values), pa.float64()))


def _objects_column(block: SceneBlock, list_type: Any) -> Any:
    """``objects`` (a list of object structs per scene) from the block's instance columns."""
    import pyarrow as pa

    m = block.num_instances
    values = _struct(list_type.value_type, [
        pa.array(block.category, pa.string()),
        pa.array(block.raw_category, pa.string()),
        _float_lists(block.points.reshape(-1), 2 * block.sizes),
        _float_lists(block.hbb.reshape(-1), np.full(m, 4)),
        _float_lists(block.obb.reshape(-1), np.full(m, 5)),
        pa.array(np.asarray(block.difficult, dtype=bool), pa.bool_()),
    ])
    return _list_array(list_type, block.n, values)


def _counts_column(block: SceneBlock, list_type: Any) -> Any:
    """``counts`` (instances per category, sorted by name: :meth:`Scene.counts`), counted for all scenes
    at once."""
    import pyarrow as pa

    names = sorted(set(block.category))
    code = {c: k for k, c in enumerate(names)}
    width = max(len(names), 1)
    sid = np.repeat(np.arange(len(block), dtype=np.int64), block.n)
    cls = np.fromiter(map(code.__getitem__, block.category), np.int64, block.num_instances)
    pairs, count = np.unique(sid * width + cls, return_counts=True)  # by scene, then by name
    values = _struct(list_type.value_type, [pa.array(np.asarray(names, dtype=object)[pairs % width].tolist(),
                                                     pa.string()),
                                            pa.array(count, pa.int32())])
    lengths = np.bincount(pairs // width, minlength=len(block))
    return _list_array(list_type, lengths, values)
