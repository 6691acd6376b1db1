"""Image embeddings of shard folders, written as Parquet keyed like the shards (for users' own search)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from sarclip_train.eval.datasets import shard_source
from sarclip_train.eval.features import EvalModel, FeatureCache, image_features
from sarclip_train.eval.report import write_atomic


def write_embeddings(model: EvalModel, root: Path, folders: list[Path], out: Path, batch_size: int = 64) -> int:
    """One row per decodable image: ``set`` (folder relative to ``root``), ``key``, ``embedding``
    (float32 list). The model is recorded in the file's metadata. Returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sets, keys, embs = [], [], []
    for folder in folders:
        src, _ = shard_source(folder, folder.name)
        ids, emb = image_features(model, src, FeatureCache(None), batch_size)
        rel = folder.relative_to(root).as_posix() if folder != root else "."
        sets += [rel] * len(ids)
        keys += ids
        embs.append(emb)
    emb = np.concatenate(embs) if embs else np.zeros((0, 0), np.float32)
    dim = emb.shape[1] if emb.ndim == 2 else 0
    table = pa.table({
        "set": pa.array(sets, pa.string()),
        "key": pa.array(keys, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim),
    })
    table = table.replace_schema_metadata({b"sarclip_model": orjson.dumps(model.info),
                                           b"sarclip_fingerprint": str(model.fingerprint).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_atomic(out, sink.getvalue().to_pybytes())
    return len(keys)
