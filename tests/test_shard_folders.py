"""A shard folder opens by its path alone in every common Parquet reader (the side files start with "_"),
the ``image`` column is a picture in Hugging Face ``datasets`` however it is loaded (the ``huggingface``
schema metadata), an old folder (side files without "_") is refused with one line saying what to do, and
``d2c verify`` / ``d2c inspect`` take a dataset root as well as one folder."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from test_convert import make_coco

from d2c.cli import main
from d2c.convert import convert
from d2c.options import ConvertOptions
from d2c.schema import HF_METADATA_KEY, SCHEMA_VERSION
from d2c.shards import MANIFEST, REJECTS, STATS, OldFolderError, shard_paths

ROWS = 7


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loaders")
    ann = make_coco(root / "ds", n=ROWS)
    out = root / "shards"
    convert(ann, out, ConvertOptions(format="coco", images_mode="embed", shard_rows=3, progress=False))
    assert len(shard_paths(out)) == 3 and {MANIFEST, STATS, REJECTS} <= {p.name for p in out.iterdir()}
    return out


def test_pandas_and_pyarrow_read_the_folder(folder):
    import pandas as pd

    assert len(pd.read_parquet(folder)) == ROWS
    assert pq.read_table(folder).num_rows == ROWS
    table = pads.dataset(folder, format="parquet").to_table()
    assert table.num_rows == ROWS and table.schema.field("counts").type.value_type.names == ["category", "count"]


def test_polars_and_duckdb_read_the_folder(folder):
    import duckdb
    import polars as pl

    # polars lists every file of a folder unless told the Hadoop convention (its unstable hidden_file_prefix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert pl.scan_parquet(folder, hidden_file_prefix="_").select(pl.len()).collect().item() == ROWS
    assert pl.read_parquet(folder / "*.parquet").height == ROWS
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}')").fetchall() == [(ROWS,)]


HF_WAYS = {
    "folder": {"path": "{folder}"},  # the folder alone: the builder is inferred from the files' extension
    # datasets treats only dot-files as hidden: the parquet builder given data_dir is told to skip the side files
    "data_dir": {"path": "parquet", "data_dir": "{folder}", "on_bad_files": "skip"},
    "data_files": {"path": "parquet", "data_files": "{folder}/*.parquet"},
    "data_files_list": {"path": "parquet", "data_files": None},
}


@pytest.mark.parametrize("how", sorted(HF_WAYS))
def test_hf_datasets_gives_pictures(folder, how, tmp_path):
    import datasets
    from PIL import Image

    kw = {k: v.format(folder=folder) if isinstance(v, str) else [str(p) for p in shard_paths(folder)]
          for k, v in HF_WAYS[how].items()}
    ds = datasets.load_dataset(split="train", cache_dir=str(tmp_path / "cache"), **kw)
    assert ds.num_rows == ROWS and isinstance(ds.features["image"], datasets.Image)
    img = ds[0]["image"]
    assert isinstance(img, Image.Image) and img.size == (40, 40)
    assert isinstance(ds[0]["captions"], list) and ds[0]["counts"] is not None


def test_every_shard_carries_the_huggingface_features(folder):
    import datasets

    for path in shard_paths(folder):
        schema = pq.read_schema(path)
        assert json.loads(schema.metadata[HF_METADATA_KEY])["info"]["features"]["image"] == {"_type": "Image"}
        features = datasets.Features.from_arrow_schema(schema)
        assert isinstance(features["image"], datasets.Image)
        assert features.arrow_schema.remove_metadata().equals(schema.remove_metadata())


def _old(folder: Path, tmp_path: Path) -> Path:
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    for new, name in ((MANIFEST, "manifest.json"), (STATS, "stats.json"), (REJECTS, "rejects.jsonl")):
        (old / new).rename(old / name)
    return old


def test_old_folder_gets_one_clear_line(folder, tmp_path):
    old = _old(folder, tmp_path)
    for args in (["verify", old], ["inspect", old], ["convert", old, "--out", old, "--resume"]):
        res = CliRunner().invoke(main, [str(a) for a in args])
        assert res.exit_code == 1, res.output
        line = res.output.strip().splitlines()[-1]
        assert "older d2c" in line and "convert the input again" in line and "Traceback" not in res.output, args
    with pytest.raises(OldFolderError, match="_manifest.json"):
        shard_paths(old)
    from sarclip_train.data import index_shards

    with pytest.raises(OldFolderError):
        index_shards([old])


def test_verify_and_inspect_take_a_dataset_root(folder, tmp_path):
    root = tmp_path / "root"
    for split in ("train", "val"):
        shutil.copytree(folder, root / split)
    ok = CliRunner().invoke(main, ["verify", str(root)])
    assert ok.exit_code == 0 and f"ok: 6 shard(s) in 2 folders, {2 * ROWS} rows" in ok.output, ok.output
    res = CliRunner().invoke(main, ["inspect", str(root), "--json"])
    summary = json.loads(res.output)
    assert summary["rows"] == 2 * ROWS and summary["folders"] == 2 and set(summary["by_folder"]) == {"train", "val"}
    assert summary["by_folder"]["val"]["schema_version"] == SCHEMA_VERSION
    shard = shard_paths(root / "val")[0]
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    bad = CliRunner().invoke(main, ["verify", str(root)])
    assert bad.exit_code == 1 and "val" in bad.output and "sha256" in bad.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(main, ["verify", str(empty)])
    assert res.exit_code == 1 and "no shard folder below it" in res.output


def test_a_root_holding_an_old_folder_is_refused(folder, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(folder, root / "train")
    shutil.copytree(_old(folder, tmp_path), root / "val")
    res = CliRunner().invoke(main, ["verify", str(root)])
    assert res.exit_code == 1 and "val: written by an older d2c" in res.output
    res = CliRunner().invoke(main, ["inspect", str(root)])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1 and "older d2c" in res.output
