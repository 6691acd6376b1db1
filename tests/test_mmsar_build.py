"""mmsar build end to end: two generated sources plus the real SSDD samples (VOC and DOTA label versions
of the same images), checked for dedupe, split leakage, SARCount balance, card, plots, accounting,
distributor independence (Dask vs local, byte for byte) and incremental reuse."""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from d2c.shards import iter_rows, read_metadata, verify
from mmsar.build import build
from mmsar.cli import main
from mmsar.config import load_config
from mmsar.sarcount import render

pytestmark = pytest.mark.realdata

CONFIG = """
name = "MMSAR-test"
seed = 3
[captions]
per_image = 2
[output]
shard_rows = 8
[splits]
ratios = [0.6, 0.2, 0.2]
[sarcount]
max_per_count = 3
[chips]
size = 32
min_crop = 16
[[chips.external]]
name = "folderset"
path = "{ext}"
licence = "test-only"

[[sources]]
name = "ssdd_voc"
format = "voc"
input = "{real}/SSDD_VOC_labelImg"
licence = "MIT"

[[sources]]
name = "ssdd_dota"
format = "dota"
class_map = "ssdd"
input = [{{path = "{real}/SSDD_mmrotate_DOTA_COCO/train"}},
         {{path = "{real}/SSDD_mmrotate_DOTA_COCO/test/all", split = "test"}}]
licence = "Apache-2.0"

[[sources]]
name = "synth_a"
format = "dota"
input = "{synth_a}"
licence = "CC0-1.0"

[[sources]]
name = "synth_b"
format = "coco"
input = {{path = "{synth_b}/coco.json", images = "{synth_b}/images"}}
ratios = [0.5, 0.25, 0.25]
weight = 0.5
licence = "CC0-1.0"
"""

EXTRA = """
[[sources]]
name = "synth_copy"
format = "dota"
input = "{copy}"
licence = "CC0-1.0"
"""


def _image_folder(root: Path) -> Path:
    for cls, value in (("ship", 200), ("tank", 60)):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (20 + i, 24), (value, value - i, value)).save(root / cls / f"{i}.png")
    ramp = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (40, 1))  # 16-bit: needs d2c's stretch
    Image.fromarray(ramp).save(root / "ship" / "wide.tif")
    return root


def _near_copy(src: Path, dst: Path) -> Path:
    """One synthetic scene re-encoded as JPEG: a near-duplicate, not an exact one."""
    (dst / "images").mkdir(parents=True)
    (dst / "labelTxt").mkdir()
    Image.open(src / "images" / "synth_000001.png").convert("RGB").save(dst / "images" / "copy.jpg", quality=95)
    shutil.copy(src / "labelTxt" / "synth_000001.txt", dst / "labelTxt" / "copy.txt")
    return dst


@pytest.fixture(scope="module")
def setup(tmp_path_factory, real_samples):
    from mmsar.synth import generate

    root = tmp_path_factory.mktemp("mmsar")
    generate(root / "synth_a", images=10, size=160, formats=("dota",), max_objects=8, seed=11)
    generate(root / "synth_b", images=8, size=160, formats=("coco",), max_objects=8, seed=12)
    text = CONFIG.format(real=real_samples, synth_a=root / "synth_a", synth_b=root / "synth_b",
                         ext=_image_folder(root / "ext"))
    (root / "mmsar.toml").write_text(text, encoding="utf-8")
    extra = text + EXTRA.format(copy=_near_copy(root / "synth_a", root / "copy"))
    (root / "mmsar_extra.toml").write_text(extra, encoding="utf-8")
    result = build(load_config(root / "mmsar.toml", out=root / "out"), workers=1)
    return root, result


def _rows(folder: Path) -> list[dict]:
    return list(iter_rows(folder))


def test_dedupe_finds_the_ssdd_label_versions(setup):
    root, result = setup
    report = json.loads((root / "out" / "_dedupe.json").read_text())
    dropped = {e["key"]: e for e in report["exact"]}
    assert len(dropped) == 50 and all(e["source"] == "ssdd_dota" and e["kept_source"] == "ssdd_voc"
                                      for e in dropped.values())
    assert any(e["labels_disagree"] for e in dropped.values())
    assert all(e["objects"] and e["sha256"] for e in dropped.values())
    assert result.stats["sources"]["ssdd_dota"]["kept"]["scenes"] == 0
    # The DOTA test input's configured split binds the VOC copies of those 25 images.
    test_keys = {r["key"] for r in iter_rows(root / "out" / "test", columns=["key"])}
    inherited = {e["kept_key"] for e in dropped.values() if e.get("inherited_split") == "test"}
    assert len(inherited) == 25 and inherited <= test_keys


def test_no_split_leakage(setup):
    root, _ = setup
    out = root / "out"
    seen_keys: dict[str, str] = {}
    seen_sha: dict[str, str] = {}
    for split in ("train", "val", "test"):
        for row in iter_rows(out / split, columns=["key", "split", "sha256"]):
            assert row["split"] == split
            assert seen_keys.setdefault(row["key"], split) == split
            assert seen_sha.setdefault(row["sha256"], split) == split
    assert len(seen_keys) == 50 + 10 + 8
    chip_parents = {s: {r["parent_key"] for r in iter_rows(out / "chips" / s, columns=["parent_key"])} - {None}
                    for s in ("train", "val", "test")}
    for split, parents in chip_parents.items():
        assert all(seen_keys[p] == split for p in parents)


def test_sarcount_items_are_true_and_balanced(setup):
    root, result = setup
    for folder, split in (("sarcount", "test"), ("sarcount_train", "train")):
        items = json.loads((root / "out" / folder / "_index.json").read_text())
        rows = {r["key"]: r for r in _rows(root / "out" / folder)}
        assert {it["key"] for it in items} == set(rows) and len(items) == len(rows)
        split_rows = {r["key"]: r for r in _rows(root / "out" / split)}
        for it in items:
            row = rows[it["key"]]
            assert it["split"] == split and row["split"] == split
            objs = [o for o in row["objects"] if o["category"] == it["class"]]
            assert len(objs) == it["count"] and 1 <= it["count"] <= 10 and not any(o["difficult"] for o in objs)
            assert "{n}" in it["template"] and it["singular"] in render(it, 1)
        hist = Counter(it["count"] for it in items)
        assert max(hist.values()) <= 3
        used = {it["key"] for it in items}
        for n in range(1, 11):  # a count below the cap took every scene it could
            if hist.get(n, 0) < 3:
                for key, r in split_rows.items():
                    counts = Counter(o["category"] for o in r["objects"])
                    if any(c == n for c in counts.values()) and not any(o["difficult"] for o in r["objects"]):
                        assert key in used
        assert result.stats["sarcount"][folder]["items"] == len(items)


def test_chips_have_fixed_size_labels_and_boxes(setup):
    root, result = setup
    chips = _rows(root / "out" / "chips" / "train")
    scene_rows = {r["key"]: r for r in _rows(root / "out" / "train")}
    ext = [c for c in chips if c["source"] == "folderset"]
    own = [c for c in chips if c["source"] != "folderset"]
    assert own and ext
    assert sum(len(r["objects"]) for r in scene_rows.values()) == len(own)
    for c in own[:20]:
        parent = scene_rows[c["parent_key"]]
        idx = int(c["key"].rsplit("#", 1)[1])
        assert c["label"] == parent["objects"][idx]["category"] and c["box"] == parent["objects"][idx]["hbb"]
        assert Image.open(io.BytesIO(c["image"]["bytes"])).size == (32, 32)
    all_ext = [c for s in ("train", "val", "test") for c in _rows(root / "out" / "chips" / s)
               if c["source"] == "folderset"]
    assert Counter(c["label"] for c in all_ext) == {"ship": 6, "tank": 5}
    wide = next(c for c in all_ext if c["key"] == "folderset/ship/wide")
    pixels = np.asarray(Image.open(io.BytesIO(wide["image"]["bytes"])))
    assert pixels.shape == (32, 32, 3) and pixels.min() < 20 and pixels.max() > 235  # stretched, not clipped
    assert result.stats["chips"]["train"]["chips"] == len(chips)


def test_card_plots_and_stats_add_up(setup):
    import yaml

    root, result = setup
    out = root / "out"
    text = (out / "README.md").read_text()
    head = yaml.safe_load(text.split("---")[1])
    assert [c["config_name"] for c in head["configs"]] == ["default", "sarcount", "chips"]
    default = head["dataset_info"][0]
    assert {f["name"] for f in default["features"]} >= {"key", "image", "captions", "objects"}
    assert {s["name"]: s["num_examples"] for s in default["splits"]} == {
        "train": result.manifest["folders"]["train"]["rows"], "validation": result.manifest["folders"]["val"]["rows"],
        "test": result.manifest["folders"]["test"]["rows"]}
    for needle in ("ssdd_voc", "ssdd_dota", "synth_a", "synth_b", "MIT", "Apache-2.0", "CC0-1.0", "0 -> ship",
                   "2 captions per image"):
        assert needle in text
    assert head["license"] == "other" and head["license_name"] == "mixed-apache-2.0-cc0-1.0-mit"
    assert head["size_categories"] == ["n<1K"]
    assert "```bibtex\n@misc{mmsar_test," in text and 'load_dataset("path/to/MMSAR-test", "chips")' in text
    assert "![gallery](gallery.png)" in text
    from d2c.gallery import PALETTE

    gallery = np.asarray(Image.open(out / "gallery.png").convert("RGB"))
    sources = {r["source"] for s in ("train", "val", "test") for r in iter_rows(out / s, columns=["source"])}
    assert sources == {"ssdd_voc", "synth_a", "synth_b"}
    assert gallery.shape[0] == 40 + len(sources) * (224 + 14 * 4 + 16) + 8  # a row per source
    for colour in PALETTE[:3]:  # boxes of three classes are drawn (below the header's colour key)
        assert (gallery[40:] == colour).all(axis=2).sum() > 50
    for name in ("class_histogram", "objects_per_image", "caption_lengths", "image_sizes"):
        data = (out / "plots" / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        Image.open(io.BytesIO(data)).verify()
    stats = json.loads((out / "_stats.json").read_text())
    assert stats["total"]["invariant_holds"]
    for name, s in stats["sources"].items():
        assert s["instances_in"] == (s["kept"]["instances"] + s["instances_rejected"]
                                     + s["exact_duplicates"]["instances"] + s["near_duplicates_dropped"]["instances"])
        assert s["kept"]["scenes"] == sum(v["scenes"] for v in s["splits"].values()), name
    for split in ("train", "val", "test"):
        assert stats["splits"][split]["scenes"] == sum(s["splits"][split]["scenes"] for s in stats["sources"].values())
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows"] == sum(f["rows"] for f in manifest["folders"].values())
    assert manifest["config"]["sources"][3]["weight"] == 0.5
    for folder in manifest["folders"]:
        assert verify(out / folder) == []
        assert json.loads((out / folder / "_stats.json").read_text())["rows"] == manifest["folders"][folder]["rows"]
        assert (out / folder / "_rejects.jsonl").is_file()
    assert read_metadata(next((out / "train").glob("*.parquet")))["mmsar_folder"] == "train"
    # the build output as a dataset root: every folder verified, and the root manifest's row counts
    from click.testing import CliRunner

    from d2c.cli import main as d2c_main

    res = CliRunner().invoke(d2c_main, ["verify", str(out)])
    assert res.exit_code == 0 and f"in {len(manifest['folders'])} folders, {manifest['rows']} rows" in res.output, res.output
    summary = json.loads(CliRunner().invoke(d2c_main, ["inspect", str(out), "--json"]).output)
    assert summary["rows"] == manifest["rows"] and set(summary["by_folder"]) == set(manifest["folders"])
    import pandas as pd

    assert len(pd.read_parquet(out / "sarcount")) == manifest["folders"]["sarcount"]["rows"]  # _index.json skipped


def test_dask_cluster_output_is_byte_identical(setup):
    from dask.distributed import LocalCluster

    root, _ = setup
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        build(load_config(root / "mmsar.toml", out=root / "out_dask"), distributor="dask",
              scheduler=cluster.scheduler_address)
    files = sorted(p.relative_to(root / "out") for p in (root / "out").rglob("*")
                   if p.is_file() and p.name != "_tasks.json")  # per-task seconds vary
    other = sorted(p.relative_to(root / "out_dask") for p in (root / "out_dask").rglob("*")
                   if p.is_file() and p.name != "_tasks.json")
    assert files == other and len(files) > 40
    for rel in files:
        assert (root / "out" / rel).read_bytes() == (root / "out_dask" / rel).read_bytes(), rel


def test_incremental_build_reuses_finished_sources(setup):
    root, first = setup
    (root / "out_inc").mkdir()
    assert not (root / "out" / "work").exists()  # staging lies beside the output, not in it
    shutil.copytree(root / "out.work", root / "out_inc.work")
    stage = root / "out_inc.work" / "synth_a" / "stage.json"
    mtime = stage.stat().st_mtime_ns
    runner = CliRunner()
    res = runner.invoke(main, ["build", "--config", str(root / "mmsar_extra.toml"), "--out", str(root / "out_inc")])
    assert res.exit_code == 0, res.output
    assert "converted synth_copy, reused ssdd_voc, ssdd_dota, synth_a, synth_b" in res.output
    assert stage.stat().st_mtime_ns == mtime
    before = {r["key"]: r["split"] for s in ("train", "val", "test")
              for r in iter_rows(root / "out" / s, columns=["key", "split"])}
    after = {r["key"]: r["split"] for s in ("train", "val", "test")
             for r in iter_rows(root / "out_inc" / s, columns=["key", "split"])}
    assert all(after[k] == v for k, v in before.items())
    report = json.loads((root / "out_inc" / "_dedupe.json").read_text())
    group = next(g for g in report["near_groups"] if "synth_copy/copy" in g)
    assert group[0] == "synth_a/synth_000001" and len({after[k] for k in group}) == 1


def test_cli_reports_config_errors_in_one_line(tmp_path):
    bad = tmp_path / "mmsar.toml"
    bad.write_text('[[sources]]\nname = "a"\ninput = "missing"\n', encoding="utf-8")
    res = CliRunner().invoke(main, ["build", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "sources[0].input[0].path" in res.output
    res = CliRunner().invoke(main, ["build", "--config", str(bad), "--distributor", "dask"])
    assert res.exit_code == 2


def test_missing_dask_is_a_clear_usage_error(monkeypatch):
    import sys

    from d2c.errors import UsageError
    from mmsar.distributor import make_distributor

    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(UsageError, match=r"needs dask\.distributed: pip install"):
        make_distributor("dask", scheduler="tcp://127.0.0.1:1")
    with pytest.raises(UsageError, match="only used with --distributor dask"):
        make_distributor("local", scheduler="tcp://x:1")


def test_chip_geometry_centres_the_box_and_pads_outside_the_image():
    from mmsar.chips import crop_box, cut_chip

    assert crop_box((10, 10, 30, 20), 0.5, 8) == (5.0, 0.0, 35.0, 30.0)
    assert crop_box((10, 10, 12, 12), 0.5, 16) == (3.0, 3.0, 19.0, 19.0)
    image = np.full((20, 20, 3), 200, dtype=np.uint8)
    chip = cut_chip(image, (-10, -10, 10, 10), 20)
    assert chip.shape == (20, 20, 3)
    assert (chip[:10, :10] == 0).all() and (chip[10:, 10:] == 200).all()
    assert cut_chip(image, (0, 0, 20, 20), 8).shape == (8, 8, 3)


def test_card_loading_snippet_runs_with_datasets(setup, tmp_path, monkeypatch, capsys):
    """The card's Loading section is code that works: run with Hugging Face datasets on the build."""
    root, result = setup
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    text = (root / "out" / "README.md").read_text()
    code = text.split("## Loading")[1].split("```python\n")[1].split("```")[0]
    exec(code.replace("path/to/MMSAR-test", str(root / "out")), {})  # noqa: S102 - our own card's snippet
    printed = capsys.readouterr().out
    first = next(iter_rows(root / "out" / "train", columns=["captions"]))
    assert str(first["captions"]) in printed
