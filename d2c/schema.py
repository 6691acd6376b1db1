"""The Parquet shard schema, one definition for every package (documented in docs/shard-schema.md).

Column types are the ones Hugging Face ``datasets`` reads natively: ``image`` is ``struct<bytes, path>``
(the ``Image`` feature's storage), lists are plain lists (``Sequence``), and ``counts`` is a list of
structs rather than an Arrow map.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "2.0"  # 2.0: side files _manifest.json, _stats.json, _rejects.jsonl; huggingface features
METADATA_KEY = b"d2c"
HF_METADATA_KEY = b"huggingface"  # where Hugging Face datasets reads a table's features from

OBJECT_TYPE = pa.struct(
    [
        ("category", pa.string()),
        ("raw_category", pa.string()),
        ("polygon", pa.list_(pa.float64())),  # x1, y1, x2, y2, ... canonical order, original pixels
        ("hbb", pa.list_(pa.float64())),  # x_min, y_min, x_max, y_max
        ("obb", pa.list_(pa.float64())),  # cx, cy, w, h, angle (w >= h, angle in [0, 180) degrees)
        ("difficult", pa.bool_()),
    ]
)

COUNT_TYPE = pa.struct([("category", pa.string()), ("count", pa.int32())])
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PROVENANCE_TYPE = pa.struct([("file", pa.string()), ("record", pa.string())])

SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("image", IMAGE_TYPE),
        ("image_format", pa.string()),  # format of the stored bytes (png, jpeg, tiff) or of the file referenced
        ("width", pa.int32()),  # original image size: the frame of every coordinate in `objects`
        ("height", pa.int32()),
        ("image_scale", pa.float64()),  # stored image size / original size (1.0 unless --max-side reduced it)
        ("orig_dtype", pa.string()),  # dtype of the source raster (uint8, uint16, float32, complex64 ...)
        ("stretch", pa.string()),  # JSON of the stretch applied to non-8-bit rasters, null for 8-bit
        ("sha256", pa.string()),  # of the original image bytes, null when the image is missing
        ("flags", pa.list_(pa.string())),
        ("captions", pa.list_(pa.string())),
        ("template_ids", pa.list_(pa.string())),
        ("objects", pa.list_(OBJECT_TYPE)),
        ("counts", pa.list_(COUNT_TYPE)),
        ("gsd", pa.float64()),
        ("image_source", pa.string()),
        ("provenance", PROVENANCE_TYPE),
        ("parent_key", pa.string()),  # tiles and chips: the scene they were cut from
        ("tile_offset", pa.list_(pa.int32())),  # tiles: x, y of the tile's top-left corner in the parent
    ]
)

# Object chips for zero-shot / few-shot / linear-probe sets (mmsar build's chips/ folders).
CHIP_SCHEMA = pa.schema(
    [
        ("key", pa.string()),  # {parent key}#{instance index}
        ("parent_key", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("image", IMAGE_TYPE),
        ("image_format", pa.string()),
        ("width", pa.int32()),  # chip size in pixels
        ("height", pa.int32()),
        ("label", pa.string()),  # canonical class
        ("box", pa.list_(pa.float64())),  # hbb of the instance in the parent's pixels
        ("obb", pa.list_(pa.float64())),  # obb of the instance in the parent's pixels
        ("crop", pa.list_(pa.float64())),  # x_min, y_min, x_max, y_max of the crop in the parent
    ]
)


_HF_VALUES = {pa.string(): "string", pa.int32(): "int32", pa.int64(): "int64", pa.float64(): "float64",
              pa.bool_(): "bool", pa.binary(): "binary"}


def _hf_feature(name: str | None, typ: pa.DataType) -> Any:
    """The ``datasets`` feature (as ``Features.to_dict`` writes it) of one Arrow type; a column named
    ``image`` of :data:`IMAGE_TYPE` is the ``Image`` feature. Lists of structs are written ``[{...}]`` and
    other lists as ``Sequence``: the forms every ``datasets`` from 2.16 on reads as plain Arrow lists."""
    if name == "image" and typ == IMAGE_TYPE:
        return {"_type": "Image"}
    if pa.types.is_struct(typ):
        return {f.name: _hf_feature(None, f.type) for f in typ}
    if pa.types.is_list(typ):
        inner = _hf_feature(None, typ.value_type)
        return [inner] if pa.types.is_struct(typ.value_type) else {"feature": inner, "_type": "Sequence"}
    return {"dtype": _HF_VALUES[typ], "_type": "Value"}


def hf_metadata(schema: pa.Schema) -> bytes:
    """The ``huggingface`` schema metadata of ``schema`` (``{"info": {"features": ...}}``, as ``datasets``
    writes it), so that however the shards are loaded (``data_files=``, ``data_dir=``, a folder) the
    ``image`` column arrives as a PIL image. Built here, not by ``datasets``, which is not a dependency."""
    features = {f.name: _hf_feature(f.name, f.type) for f in schema}
    return json.dumps({"info": {"features": features}}, separators=(",", ":")).encode("utf-8")  # column order
