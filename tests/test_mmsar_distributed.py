"""``mmsar build`` in tasks of N scenes: byte-identical output for local 1 and 2 workers, a 2-worker Dask
LocalCluster and two task sizes; a killed worker's task is retried (same bytes); a task that keeps failing
fails the build naming its units; dedupe still finds a near-duplicate and an exact copy that fall in other
tasks than their originals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from mmsar_helpers import coco_input, config, source
from PIL import Image

from mmsar.build import build
from mmsar.cli import main
from mmsar.config import load_config
from mmsar.options import BuildOptions

CONFIG = config("MMSAR-tasks", 5, 5, source("big", "dota", '"{big}"'), source("cocos", "coco", coco_input("{cocos}")),
                ratios=(0.6, 0.2, 0.2))


def _tree(out: Path) -> dict[str, bytes]:
    """Every output file but _tasks.json (per-task seconds)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "_tasks.json"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 14-scene DOTA source whose last two scenes copy scene 0 (a re-encoded near copy and an exact one),
    and a small COCO source."""
    from mmsar.synth import generate

    root = tmp_path_factory.mktemp("tasks")
    generate(root / "big", images=12, size=96, formats=("dota",), max_objects=5, seed=21)
    generate(root / "cocos", images=6, size=96, formats=("coco",), max_objects=5, seed=22)
    big = root / "big"
    first = sorted((big / "labelTxt").glob("*.txt"))[0]
    image = next((big / "images").glob(first.stem + ".*"))
    Image.open(image).convert("RGB").save(big / "images" / "zz_near.jpg", quality=95)
    shutil.copy(first, big / "labelTxt" / "zz_near.txt")
    shutil.copy(image, big / "images" / f"zz_exact{image.suffix}")
    shutil.copy(first, big / "labelTxt" / "zz_exact.txt")
    (root / "mmsar.toml").write_text(CONFIG.format(big=big, cocos=root / "cocos"), encoding="utf-8")
    return root


def _build(root: Path, name: str, **opts) -> Path:
    build(load_config(root / "mmsar.toml", out=root / name), BuildOptions(**opts))
    return root / name


@pytest.fixture(scope="module")
def reference(inputs):
    out = _build(inputs, "one", workers=1, unit_scenes=4)
    return out, _tree(out)


@pytest.mark.timeout(60)
def test_two_workers_and_another_task_size_give_the_same_bytes(inputs, reference):
    out, expected = reference
    tasks = json.loads((out / "_tasks.json").read_text())
    assert tasks["unit_scenes"] == 4 and len(tasks["staging"]) == 4 + 2  # 14 scenes in 4s, 6 in 4s
    assert all({"scenes", "instances", "rejects", "seconds", "units"} <= set(t) for t in tasks["staging"])
    assert sum(t["scenes"] for t in tasks["staging"]) == 20
    assert _tree(_build(inputs, "two", workers=2, unit_scenes=4)) == expected
    assert _tree(_build(inputs, "two_n7", workers=2, unit_scenes=7)) == expected
    assert _tree(_build(inputs, "one_task", workers=2, unit_scenes=1000)) == expected


@pytest.mark.timeout(60)
def test_dask_local_cluster_gives_the_same_bytes(inputs, reference):
    _, expected = reference
    out = _build(inputs, "dask", distributor="dask", workers=2, unit_scenes=3)
    assert _tree(out) == expected
    assert json.loads((out / "_tasks.json").read_text())["distributor"] == "dask"


def test_cross_task_duplicates_are_found(inputs, reference):
    out, _ = reference
    report = json.loads((out / "_dedupe.json").read_text())
    spans = {t["units"][0] for t in json.loads((out / "_tasks.json").read_text())["staging"] if t["source"] == "big"}
    assert spans == {0, 4, 8, 12}  # scene 0 in the first task, its copies (units 12, 13) in the last
    assert [e["key"] for e in report["exact"]] == ["big/zz_exact"]
    assert any("big/zz_near" in g and len(g) == 2 for g in report["near_groups"])
    splits = {}
    for folder in ("train", "val", "test"):
        import pyarrow.parquet as pq

        for p in (out / folder).glob("*.parquet"):
            for k in pq.read_table(p, columns=["key"]).column("key").to_pylist():
                splits[k] = folder
    group = next(g for g in report["near_groups"] if "big/zz_near" in g)
    assert len({splits[k] for k in group}) == 1  # a near-duplicate group shares one split


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("distributor", "task"), [("local", "2"), ("dask", "1")])
def test_a_killed_worker_is_retried_and_the_bytes_stay(inputs, reference, monkeypatch, tmp_path, distributor, task):
    _, expected = reference
    marker = tmp_path / "crashed"
    monkeypatch.setenv("MMSAR_CRASH_TASK", task)
    monkeypatch.setenv("MMSAR_CRASH_MARKER", str(marker))
    out = _build(inputs, f"crashed_{distributor}", distributor=distributor, workers=2, unit_scenes=4)
    assert marker.exists()  # the task's worker really died once
    assert _tree(out) == expected


@pytest.mark.timeout(60)
def test_a_task_that_keeps_failing_fails_the_build_naming_its_units(inputs, monkeypatch, tmp_path):
    monkeypatch.setenv("MMSAR_CRASH_TASK", "1:always")
    res = CliRunner().invoke(main, ["build", "--config", str(inputs / "mmsar.toml"), "--out",
                                    str(tmp_path / "fails"), "--workers", "2", "--unit-scenes", "4",
                                    "--retries", "1"])
    assert res.exit_code == 1
    line = res.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "source 'big', input 0, units 4..7" in line and "failed 2 time(s)" in line and "died" in line
    assert not (tmp_path / "fails" / "_manifest.json").exists()


def test_bad_task_options_are_usage_errors(inputs, tmp_path):
    res = CliRunner().invoke(main, ["build", "--config", str(inputs / "mmsar.toml"), "--out", str(tmp_path / "x"),
                                    "--unit-scenes", "0"])
    assert res.exit_code == 2
    from d2c.errors import UsageError

    with pytest.raises(UsageError, match="--unit-scenes"):
        build(load_config(inputs / "mmsar.toml", out=tmp_path / "y"), BuildOptions(unit_scenes=0))


@pytest.mark.timeout(60)
def test_a_coco_key_repeated_in_a_later_task_is_the_same_reject(tmp_path, caplog):
    """A COCO image whose file (scene key) an image of an earlier task has: each task reads only its own
    images, so the later task meets the key, is staged again with it taken, and the build's bytes are
    those of one task reading the file in order (one duplicate_image reject); on Dask the span is staged
    again as a task of the cluster."""
    from mmsar.synth import generate

    generate(tmp_path / "c", images=6, size=96, formats=("coco",), max_objects=3, seed=23)
    coco = json.loads((tmp_path / "c" / "coco.json").read_text())
    ann = next(a for a in coco["annotations"] if a["image_id"] in {im["id"] for im in coco["images"][:3]})
    first = next(im for im in coco["images"] if im["id"] == ann["image_id"])  # in the first task of three
    coco["images"].append({**first, "id": 1000})
    coco["annotations"].append({**ann, "id": 5000, "image_id": 1000})
    (tmp_path / "c" / "coco.json").write_text(json.dumps(coco))
    text = config("MMSAR-dup", 5, 5, source("c", "coco", coco_input("{c}")))
    (tmp_path / "mmsar.toml").write_text(text.format(c=tmp_path / "c"), encoding="utf-8")
    with caplog.at_level("INFO", logger="mmsar.staging"):
        trees = [_tree(_build(tmp_path, name, workers=w, unit_scenes=n, distributor=d))
                 for name, w, n, d in (("whole", 1, 1000, "local"), ("threes", 1, 3, "local"),
                                       ("threes2", 2, 3, "local"), ("threes_dask", 2, 3, "dask"))]
    assert trees[1] == trees[0] and trees[2] == trees[0] and trees[3] == trees[0]
    assert "staging it again with them taken" in caplog.text
    stats = json.loads((tmp_path / "whole" / "_stats.json").read_text())["sources"]["c"]
    assert stats["rejects_by_code"] == {"duplicate_image": 1} and stats["scenes_written"] == 6


@pytest.mark.timeout(60)
@pytest.mark.parametrize("distributor", ["local", "dask"])
def test_a_killed_chip_part_is_retried_before_its_join(inputs, reference, monkeypatch, tmp_path, distributor):
    """The join of a chips folder takes its parts' results: a part whose worker dies runs again, and the
    join still gets every part (same bytes); plots and gallery are writing tasks of their own."""
    out, expected = reference
    writing = json.loads((out / "_tasks.json").read_text())["writing"]
    kinds = [w["kind"] for w in writing]
    assert kinds[-2:] == ["plots", "gallery"] and "chips_assemble" in kinds
    part = kinds.index("chip_part")
    assert part < kinds.index("chips_assemble")
    marker = tmp_path / "crashed"
    monkeypatch.setenv("MMSAR_CRASH_TASK", f"write:{part}")
    monkeypatch.setenv("MMSAR_CRASH_MARKER", str(marker))
    got = _build(inputs, f"part_crashed_{distributor}", distributor=distributor, workers=2, unit_scenes=4)
    assert marker.exists()
    assert _tree(got) == expected
