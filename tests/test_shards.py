"""ShardWriter, manifest, verify and the reader API, on rows built from hand-made scenes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from d2c.model import Instance, Provenance, Scene
from d2c.rows import ImageRecord, scene_from_row, scene_to_row
from d2c.schema import METADATA_KEY, SCHEMA, SCHEMA_VERSION
from d2c.shards import (
    ShardWriter,
    iter_rows,
    read_manifest,
    read_metadata,
    shard_paths,
    to_pandas,
    verify,
    write_manifest,
)

META = {"schema_version": SCHEMA_VERSION, "seed": 7, "source": "toy", "class_map": {"boat": "ship"}}


def _row(i: int, image_bytes: bytes | None = None) -> dict:
    scene = Scene(key=f"toy/img{i:03d}", source="toy", image_path=f"images/img{i:03d}.png", root="/data",
                  width=100, height=80, provenance=Provenance("labelTxt/a.txt", f"line {i}"),
                  instances=[Instance.from_hbb(10, 10, 30 + i % 5, 20, "boat", "ship")])
    image = ImageRecord(bytes=image_bytes, path=scene.image_path, format="png", sha256="ab" * 32)
    return scene_to_row(scene, [f"caption {i}"], ["count/one"], image)


def _write(out, n: int, shard_rows: int = 4, **kw) -> list:
    w = ShardWriter(out, "toy", shard_rows=shard_rows, metadata=META, **kw)
    for i in range(n):
        w.write(_row(i), item=i)
    return w.close()


def test_shard_boundaries_names_and_metadata(tmp_path):
    infos = _write(tmp_path, 10)
    assert [p.name for p in shard_paths(tmp_path)] == ["toy-00000.parquet", "toy-00001.parquet",
                                                      "toy-00002.parquet"]
    assert [i.rows for i in infos] == [4, 4, 2]
    assert [(i.first_item, i.next_item) for i in infos] == [(0, 4), (4, 8), (8, 10)]
    meta = read_metadata(infos[1].path)
    assert meta["seed"] == 7 and meta["class_map"] == {"boat": "ship"} and meta["shard_index"] == 1
    assert json.loads(pq.read_schema(infos[0].path).metadata[METADATA_KEY])["seed"] == 7
    assert pq.read_schema(infos[0].path).remove_metadata().equals(SCHEMA)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_bytes_bound_closes_shards_early(tmp_path):
    w = ShardWriter(tmp_path, "toy", shard_rows=100, max_bytes=5000, metadata=META)
    for i in range(6):
        w.write(_row(i, image_bytes=bytes(2000)), item=i)
    assert [i.rows for i in w.close()] == [2, 2, 2]


def test_identical_inputs_give_identical_bytes(tmp_path):
    a, b = _write(tmp_path / "a", 9), _write(tmp_path / "b", 9)
    assert [i.sha256 for i in a] == [i.sha256 for i in b]
    assert (tmp_path / "a" / "toy-00000.parquet").read_bytes() == (tmp_path / "b" / "toy-00000.parquet").read_bytes()


def test_manifest_verify_and_tamper(tmp_path):
    _write(tmp_path, 6)
    manifest = write_manifest(tmp_path)
    assert manifest["rows"] == 6 and [s["rows"] for s in manifest["shards"]] == [4, 2]
    assert read_manifest(tmp_path) == manifest
    assert verify(tmp_path) == []
    shard = tmp_path / "toy-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify(tmp_path)
    assert any("sha256" in p and "toy-00001" in p for p in problems)
    shard.unlink()
    assert any("missing" in p for p in verify(tmp_path))
    (tmp_path / "_manifest.json").unlink()
    assert any("no manifest" in p for p in verify(tmp_path))


def test_reader_api_round_trip(tmp_path):
    _write(tmp_path, 5)
    rows = list(iter_rows(tmp_path))
    assert [r["key"] for r in rows] == [f"toy/img{i:03d}" for i in range(5)]
    scene = scene_from_row(rows[2], root="/data")
    assert scene.instances[0].category == "ship" and scene.instances[0].hbb == (10.0, 10.0, 32.0, 20.0)
    bare = scene_from_row(rows[2], root="/data", instances=False)  # for image loading only
    assert bare.instances == [] and (bare.key, bare.image_path, bare.root, bare.width) == (
        scene.key, scene.image_path, scene.root, scene.width)
    assert rows[2]["counts"] == [{"category": "ship", "count": 1}]
    df = to_pandas(tmp_path)
    assert len(df) == 5 and list(df.columns) == SCHEMA.names
    assert [r["captions"] for r in iter_rows(tmp_path / "toy-00001.parquet", columns=["captions"])] == [
        ["caption 4"]]


def test_crash_before_rename_leaves_no_final_file(tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import pathlib; "
            f"from test_shards import _write; _write(pathlib.Path({str(tmp_path)!r}), 10)")
    env = {**os.environ, "D2C_CRASH_AT": "before_rename:2"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert proc.returncode == 137, proc.stderr.decode()
    assert [p.name for p in shard_paths(tmp_path)] == ["toy-00000.parquet"]
    assert [p.name for p in tmp_path.glob(".*.tmp")] == [".toy-00001.parquet.tmp"]


def test_manifest_is_json_with_checksums(tmp_path):
    _write(tmp_path, 3)
    write_manifest(tmp_path)
    doc = json.loads((tmp_path / "_manifest.json").read_text())
    assert set(doc["shards"][0]) == {"file", "rows", "bytes", "sha256"} and len(doc["shards"][0]["sha256"]) == 64


def test_bad_shard_rows_refused(tmp_path):
    with pytest.raises(ValueError, match="shard_rows"):
        ShardWriter(tmp_path, "toy", shard_rows=0, metadata=META)


def test_write_table_matches_row_by_row(tmp_path):
    import pyarrow as pa

    rows = [_row(i, image_bytes=bytes(100 * (i % 3))) for i in range(11)]
    w = ShardWriter(tmp_path / "rows", "toy", shard_rows=4, max_bytes=1200, metadata=META)
    for i, r in enumerate(rows):
        w.write(r, item=i)
    a = w.close()
    w = ShardWriter(tmp_path / "tables", "toy", shard_rows=4, max_bytes=1200, metadata=META)
    for start in (0, 3, 8):  # uneven chunks, as workers hand them back
        chunk = rows[start:{0: 3, 3: 8, 8: 11}[start]]
        w.write_table(pa.Table.from_pylist(chunk, schema=SCHEMA), list(range(start, start + len(chunk))))
    b = w.close()
    assert [i.rows for i in a] == [i.rows for i in b] and len(a) >= 3
    assert [i.sha256 for i in a] == [i.sha256 for i in b]


def test_write_table_runs_match_row_by_row(tmp_path, monkeypatch):
    """Rows taken a run at a time (up to the next row-group, shard or byte boundary) give the same
    shards, byte for byte, as rows written one by one: varied image sizes, budgets and chunking."""
    import numpy as np
    import pyarrow as pa

    from d2c import shards

    groups = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        monkeypatch.setattr(shards, "ROW_GROUP_ROWS", int(rng.integers(2, 40)))
        # row estimates are 352 + 100 k bytes and the budgets sums of such, so rows often meet them exactly
        monkeypatch.setattr(shards, "ROW_GROUP_BYTES", 352 * int(rng.integers(2, 4)) + 100 * int(rng.integers(0, 4)))
        rows = [_row(i, image_bytes=bytes(100 * int(rng.integers(0, 2)))) for i in range(120)]
        budget = 352 * int(rng.integers(4, 12)) + 100 * int(rng.integers(0, 4))
        opts = {"shard_rows": int(rng.integers(5, 30)), "max_bytes": budget, "metadata": META}
        w = ShardWriter(tmp_path / f"rows{seed}", "toy", **opts)
        for i, r in enumerate(rows):
            w.write(r, item=i)
        a = w.close()
        w = ShardWriter(tmp_path / f"tables{seed}", "toy", **opts)
        cuts = sorted({0, len(rows), *rng.integers(1, len(rows), size=8).tolist()})
        for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
            chunk = rows[start:stop]
            w.write_table(pa.Table.from_pylist(chunk, schema=SCHEMA), list(range(start, stop)))
        b = w.close()
        assert len(a) >= 3
        assert [(i.rows, i.first_item, i.next_item, i.sha256) for i in a] == \
            [(i.rows, i.first_item, i.next_item, i.sha256) for i in b], seed
        groups += [pq.ParquetFile(i.path).metadata.num_row_groups for i in b]
    assert max(groups) > 1  # row-group boundaries were exercised too


def test_manifest_from_the_writer_equals_the_manifest_from_disk(tmp_path):
    import dataclasses

    from d2c.shards import write_manifest

    infos = _write(tmp_path, 10)
    from_disk = write_manifest(tmp_path)
    assert write_manifest(tmp_path, infos) == from_disk
    stale = [dataclasses.replace(infos[0], sha256="0" * 64, bytes=infos[0].bytes + 1), *infos[1:]]
    assert write_manifest(tmp_path, stale) == from_disk  # a size that does not match is read again
    assert from_disk["rows"] == 10 and [s["rows"] for s in from_disk["shards"]] == [4, 4, 2]


def test_every_column_is_zstd_but_the_image_bytes(tmp_path):
    w = ShardWriter(tmp_path, "toy", shard_rows=4, metadata=META)
    for i in range(3):
        w.write(_row(i, image_bytes=b"\x89PNG" + bytes(range(256)) * 40), item=i)
    (info,) = w.close()
    meta = pq.ParquetFile(info.path).metadata
    codecs = {meta.row_group(0).column(k).path_in_schema: meta.row_group(0).column(k).compression
              for k in range(meta.num_columns)}
    assert codecs.pop("image.bytes") == "UNCOMPRESSED"
    assert len(codecs) == 28 and set(codecs.values()) == {"ZSTD"}
    assert [r["image"]["bytes"][:4] for r in iter_rows(tmp_path)] == [b"\x89PNG"] * 3
