"""``mmsar build`` with inputs and output as fsspec URLs, on fsspec's in-process ``memory://`` filesystem
(never a network service): remote inputs are fetched to local folders named after their URLs, the output
is built locally and uploaded, ``_manifest.json`` last; the rows are those of the same build from local
paths, and the manifest records the URLs."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
from mmsar_helpers import coco_input, config, source

from d2c.errors import UsageError
from mmsar.build import build
from mmsar.config import load_config, parse_config
from mmsar.options import BuildOptions

CONFIG = config("MMSAR-remote", 2, 4, source("dota", "dota", '"{dota}"'), source("coco", "coco", coco_input("{coco}")),
                top="{out}", ratios=None)


def _put_tree(fs, local: Path, url: str) -> None:
    for p in sorted(local.rglob("*")):
        if p.is_file():
            fs.pipe_file(f"{url}/{p.relative_to(local).as_posix()}", p.read_bytes())


def _rows_by_file(files: dict[str, bytes]) -> dict[str, list]:
    """Rows per shard; a COCO file outside its images folder is named by its absolute (local) path in
    the provenance, so that one field is left out of the comparison."""
    import io

    out = {}
    for k, v in files.items():
        if k.endswith(".parquet"):
            rows = pq.read_table(io.BytesIO(v)).to_pylist()
            for r in rows:
                if str((r.get("provenance") or {}).get("file", "")).endswith("coco.json"):
                    r["provenance"]["file"] = "coco.json"
            out[k] = rows
    return out


@pytest.mark.timeout(60)
def test_memory_urls_in_and_out(tmp_path):
    from mmsar.synth import generate

    generate(tmp_path / "dota", images=5, size=96, formats=("dota",), max_objects=4, seed=31)
    generate(tmp_path / "coco", images=4, size=96, formats=("coco",), max_objects=4, seed=32)
    (tmp_path / "local.toml").write_text(CONFIG.format(out="", dota=tmp_path / "dota", coco=tmp_path / "coco"))
    local = build(load_config(tmp_path / "local.toml", out=tmp_path / "out_local"), BuildOptions(workers=1))

    fs = fsspec.filesystem("memory")
    import uuid

    base = f"memory://mmsar-test-{uuid.uuid4().hex[:12]}"  # local copies are named after the URL: a fresh one
    _put_tree(fs, tmp_path / "dota", f"{base}/in/dota")
    _put_tree(fs, tmp_path / "coco", f"{base}/in/coco")
    fs.pipe_file(f"{base}/out/stale.txt", b"kept: not a build output name")
    fs.pipe_file(f"{base}/out/train/old-00099.parquet", b"an older build's shard")
    text = CONFIG.format(out=f'out = "{base}/out"', dota=f"{base}/in/dota", coco=f"{base}/in/coco")
    (tmp_path / "remote.toml").write_text(text)
    cfg = load_config(tmp_path / "remote.toml")
    assert cfg.out_url == f"{base}/out" and len(cfg.remote_inputs) == 3  # the COCO file and its images apart
    res = build(cfg, BuildOptions(workers=2, unit_scenes=2))
    assert res.url == f"{base}/out"

    root = fs._strip_protocol(f"{base}/out")
    remote = {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)}
    assert "_manifest.json" in remote and "train/old-00099.parquet" not in remote and "stale.txt" in remote
    mine = {p.relative_to(local.out).as_posix(): p.read_bytes() for p in local.out.rglob("*") if p.is_file()}
    assert set(remote) - {"stale.txt"} == set(mine)
    assert _rows_by_file(remote) == _rows_by_file(mine)  # the shards' metadata name the local dataset root
    for name in ("_stats.json", "_dedupe.json", "sarcount/_index.json"):  # folder stats hold byte counts
        assert remote[name] == mine[name], name
    manifest = json.loads(remote["_manifest.json"])
    assert manifest["config"]["sources"][0]["inputs"][0]["path"] == f"{base}/in/dota"


def test_file_urls_are_local_paths_and_bad_urls_are_clear(tmp_path):
    (tmp_path / "ds").mkdir()
    cfg = parse_config({"sources": [{"name": "a", "format": "dota", "input": f"file://{tmp_path / 'ds'}"}]},
                       tmp_path, out=f"file://{tmp_path / 'o'}")
    assert cfg.sources[0].inputs[0].path == tmp_path / "ds" and cfg.out == tmp_path / "o" and not cfg.remote_inputs
    missing = parse_config({"sources": [{"name": "a", "format": "dota", "input": "memory://nothing-here/x"}]},
                           tmp_path, out=tmp_path / "o2")
    with pytest.raises(UsageError, match="memory://nothing-here/x: not found"):
        build(missing)
    with pytest.raises(UsageError, match="staging must be a local folder"):
        parse_config({"sources": [{"name": "a", "input": "x"}], "work": "memory://w"}, tmp_path)
