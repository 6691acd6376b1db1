"""``d2c convert`` end to end through the CLI: shards, accounting, rejects, determinism, resume, loaders."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from d2c.cli import main
from d2c.convert import convert
from d2c.imageio import decode_image
from d2c.options import ConvertOptions
from d2c.schema import SCHEMA_VERSION
from d2c.shards import iter_rows, read_metadata, shard_paths, verify

REPO = Path(__file__).resolve().parents[1]


def _png(path: Path, w: int, h: int, seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, size=(h, w), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def make_dota(root: Path, n: int = 6) -> dict:
    """A DOTA tree: n images with 1-3 ships each, one malformed line, one label file without image."""
    total = 0
    for i in range(n):
        _png(root / "images" / f"P{i:03d}.png", 64, 48, i)
        lines = []
        for j in range(1 + i % 3):
            x, y = 5 + 15 * j, 5 + 10 * j
            lines.append(f"{x} {y} {x + 12} {y} {x + 12} {y + 6} {x} {y + 6} ship 0")
            total += 1
        if i == 2:
            lines.append("1 2 3 oops ship 0")  # malformed: a reject naming the line
            total += 1
        (root / "labelTxt").mkdir(parents=True, exist_ok=True)
        (root / "labelTxt" / f"P{i:03d}.txt").write_text("\n".join(lines) + "\n")
    (root / "labelTxt" / "GHOST.txt").write_text("1 1 9 1 9 5 1 5 ship 0\n")  # image missing
    return {"instances": total + 1, "scenes": n}


def make_coco(root: Path, n: int = 12) -> Path:
    images, anns = [], []
    for i in range(n):
        _png(root / "images" / f"c{i:03d}.png", 40, 40, 100 + i)
        images.append({"id": 1000 - i, "file_name": f"c{i:03d}.png", "width": 40, "height": 40})
        for j in range(i % 4):
            anns.append({"id": len(anns) + 1, "image_id": 1000 - i, "category_id": 1 + j % 2,
                         "bbox": [2 + 8 * j, 3, 6, 5], "area": 30, "iscrowd": 0})
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": 1, "name": "ship"}, {"id": 2, "name": "aircraft"}]}
    path = root / "ann.json"
    path.write_text(json.dumps(doc))
    return path


def run(*args: str, expect: int = 0):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def test_dota_embed_end_to_end(tmp_path):
    truth = make_dota(tmp_path / "ds")
    out = tmp_path / "shards"
    run("convert", tmp_path / "ds", "--format", "dota", "--out", out, "--images-mode", "embed",
        "--shard-rows", "2", "--captions-per-image", "3", "--source", "toy", "--keep-partial-scenes")
    assert [p.name for p in shard_paths(out)] == ["toy-00000.parquet", "toy-00001.parquet", "toy-00002.parquet"]
    stats = json.loads((out / "_stats.json").read_text())
    assert stats["instances_in"] == truth["instances"]
    assert stats["instances_in"] == stats["instances_out"] + stats["instances_rejected"]
    assert stats["scenes_written"] == 6 and stats["rows"] == 6 and stats["invariant_holds"]
    rejects = [json.loads(line) for line in (out / "_rejects.jsonl").read_text().splitlines()]
    assert {r["file"] for r in rejects} >= {"labelTxt/P002.txt"}
    bad = next(r for r in rejects if r["file"] == "labelTxt/P002.txt")
    assert bad["record"] and "line" in bad["record"] and bad["instances"] == 1 and bad["code"]
    ghost = [r for r in rejects if "GHOST" in (r["scene_key"] or r["file"])]
    assert ghost and ghost[0]["instances"] == 1
    rows = list(iter_rows(out))
    assert [r["key"] for r in rows] == [f"toy/images/P{i:03d}" for i in range(6)] or \
        [r["key"].rsplit("/", 1)[1] for r in rows] == [f"P{i:03d}" for i in range(6)]
    assert all(len(r["captions"]) == 3 and len(r["template_ids"]) == 3 for r in rows)
    original = (tmp_path / "ds" / "images" / "P001.png").read_bytes()
    assert rows[1]["image"]["bytes"] == original and rows[1]["image_format"] == "png"
    assert decode_image(rows[1]["image"]["bytes"]).shape == (48, 64, 3)
    assert rows[1]["counts"] == [{"category": "ship", "count": 2}] and len(rows[1]["objects"]) == 2
    assert [("objects_rejected" in r["flags"]) for r in rows] == [k == 2 for k in range(6)]  # P002's bad line
    meta = read_metadata(shard_paths(out)[0])
    assert meta["source"] == "toy" and meta["seed"] == 0 and meta["images_mode"] == "embed"
    assert Path(meta["dataset_root"]) == (tmp_path / "ds").resolve() and meta["template_set_hash"]
    assert verify(out) == []


def test_workers_give_byte_identical_shards(tmp_path):
    ann = make_coco(tmp_path / "ds")
    for w in (1, 4):
        run("convert", ann, "--format", "coco", "--out", tmp_path / f"w{w}", "--shard-rows", "5",
            "--workers", str(w), "--images-mode", "embed", "--seed", "3")
    a, b = shard_paths(tmp_path / "w1"), shard_paths(tmp_path / "w4")
    assert len(a) == 3 and [p.name for p in a] == [p.name for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))
    for name in ("_manifest.json", "_stats.json", "_rejects.jsonl"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w4" / name).read_bytes()


def test_resume_after_deleted_shard_and_after_crash(tmp_path):
    ann = make_coco(tmp_path / "ds")
    ref = tmp_path / "ref"
    args = ["--format", "coco", "--shard-rows", "4", "--images-mode", "embed"]
    run("convert", ann, "--out", ref, *args)
    expected = {p.name: p.read_bytes() for p in shard_paths(ref)}
    # 1. a shard deleted after a complete run is rewritten; the others are kept
    res = tmp_path / "res"
    run("convert", ann, "--out", res, *args)
    (res / "ann-00001.parquet").unlink()
    run("convert", ann, "--out", res, *args, expect=2)  # refuses to mix without --resume
    run("convert", ann, "--out", res, *args, "--resume")
    assert {p.name: p.read_bytes() for p in shard_paths(res)} == expected
    # 2. a run killed in the middle of a shard, then resumed
    crash = tmp_path / "crash"
    env = {**os.environ, "D2C_CRASH_AT": "after_rows:6"}
    cmd = [sys.executable, "-c", "from d2c.cli import main; main()", "convert", str(ann), "--out", str(crash), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, cwd=REPO, timeout=60)
    assert proc.returncode == 137, proc.stderr.decode()[-500:]
    assert [p.name for p in shard_paths(crash)] == ["ann-00000.parquet"]
    run("convert", ann, "--out", crash, *args, "--resume")
    assert {p.name: p.read_bytes() for p in shard_paths(crash)} == expected
    keys = [r["key"] for r in iter_rows(crash, columns=["key"])]
    assert len(keys) == len(set(keys)) == 12
    assert json.loads((crash / "_stats.json").read_text())["instances_out"] == \
        json.loads((ref / "_stats.json").read_text())["instances_out"]


def test_exit_codes_strict_and_usage(tmp_path):
    make_dota(tmp_path / "ds")
    run("convert", tmp_path / "ds", "--format", "dota", "--out", tmp_path / "s", "--strict", expect=1)
    assert (tmp_path / "s" / "_rejects.jsonl").read_text().strip()  # the report is still written
    res = run("convert", tmp_path / "nope", "--out", tmp_path / "x", expect=2)
    assert "nope" in res.output and "Traceback" not in res.output
    run("convert", tmp_path / "ds", "--format", "yolo9", "--out", tmp_path / "x", expect=2)
    assert "Usage" in run("convert", "--help").output or "INPUT" in run("convert", "--help").output


def test_partial_scene_rejected_whole_by_default(tmp_path, caplog):
    """P002 has one malformed line: its three valid ships are not written either (a caption would say "three
    ships" of a scene with four), and the reject says why and how many objects it takes; workers agree."""
    make_dota(tmp_path / "ds")
    outs = []
    for w in (1, 2):
        outs.append(tmp_path / f"w{w}")
        with caplog.at_level("WARNING"):
            convert(tmp_path / "ds", outs[-1], ConvertOptions(format="dota", workers=w, progress=False,
                                                              source="toy"))
    stats = json.loads((outs[0] / "_stats.json").read_text())
    assert stats["scenes_read"] == 6 and stats["scenes_written"] == 5 and stats["rows"] == 5
    assert stats["rejected_instances"]["partial_scene"] == 3 and stats["invariant_holds"]
    rejects = [json.loads(line) for line in (outs[0] / "_rejects.jsonl").read_text().splitlines()]
    (whole,) = [r for r in rejects if r["code"] == "partial_scene"]
    assert whole["scene_key"] == "toy/P002" and whole["instances"] == 3 and whole["file"] == "labelTxt/P002.txt"
    assert "1 of its 4 annotated objects were rejected (1 bad_record)" in whole["reason"]
    assert "--keep-partial-scenes" in caplog.text and "5 of 14 annotated objects were rejected" in caplog.text
    assert "toy/P002" not in {r["key"] for r in iter_rows(outs[0])}
    for name in [*(p.name for p in shard_paths(outs[0])), "_manifest.json", "_stats.json", "_rejects.jsonl"]:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_resume_refuses_the_other_partial_scene_policy(tmp_path):
    make_dota(tmp_path / "ds")
    run("convert", tmp_path / "ds", "--out", tmp_path / "s", "--shard-rows", "2")
    res = run("convert", tmp_path / "ds", "--out", tmp_path / "s", "--shard-rows", "2", "--resume",
              "--keep-partial-scenes", expect=2)
    assert "--keep-partial-scenes" in res.output and "written with other settings" in res.output
    run("convert", tmp_path / "ds", "--out", tmp_path / "s", "--shard-rows", "2", "--resume")


def test_numeric_class_refused_whole_suggests_the_class_map(tmp_path, caplog):
    """A COCO file whose only category is "0" (SSDD): every object is refused, every scene with one goes
    whole, and the summary names the fix."""
    path = make_coco(tmp_path / "c")
    doc = json.loads(path.read_text())
    doc["categories"] = [{"id": 1, "name": "0"}, {"id": 2, "name": "0"}]
    path.write_text(json.dumps(doc))
    with caplog.at_level("WARNING"):
        res = CliRunner().invoke(main, ["convert", str(path), "--out", str(tmp_path / "o")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "rejected: numeric_class" in res.output and "rejected: partial_scene" in res.output  # the table
    assert "objects rejected as numeric_class" in caplog.text and "--class-map ssdd" in caplog.text
    stats = json.loads((tmp_path / "o" / "_stats.json").read_text())
    assert stats["rows"] == 3 and stats["rejects"]["partial_scene"] == 9  # the three images without objects
    kept = tmp_path / "k"
    run("convert", path, "--out", kept, "--keep-partial-scenes")
    rows = list(iter_rows(kept))
    assert len(rows) == 12 and sum("objects_rejected" in r["flags"] for r in rows) == 9
    for r in rows:
        if "objects_rejected" in r["flags"]:
            assert r["template_ids"] == ["partial.annotated"], r
            assert r["captions"] == ["A SAR image with at least one annotated target."] or \
                "at least one annotated target" in r["captions"][0]
        else:
            assert not r["objects"] and any("no annotated" in c or "without any" in c for c in r["captions"])


def test_inspect_and_verify_cli(tmp_path):
    make_dota(tmp_path / "ds")
    out = tmp_path / "s"
    run("convert", tmp_path / "ds", "--out", out, "--shard-rows", "4")
    res = run("inspect", out, "--json")
    summary = json.loads(res.output)
    assert summary["rows"] == 5 and summary["classes"] == {"ship": 9} and summary["schema_version"] == SCHEMA_VERSION
    assert summary["captions_per_image"] == {"5": 5} and summary["rejects"] == {
        "bad_record": 1, "no_image_no_size": 1, "partial_scene": 1}
    assert "ok" in run("verify", out).output
    shard = shard_paths(out)[0]
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    assert "sha256" in run("verify", out, expect=1).output


def test_real_samples_all_formats(real_samples, tmp_path):
    ssdd = real_samples / "SSDD_mmrotate_DOTA_COCO"
    run("convert", ssdd / "test" / "all", "--format", "dota", "--out", tmp_path / "dota", "--images-mode", "embed")
    dota = json.loads((tmp_path / "dota" / "_stats.json").read_text())
    assert dota["scenes_written"] == 25 and dota["invariant_holds"]
    run("convert", real_samples / "SSDD_VOC_labelImg", "--out", tmp_path / "voc", "--images-mode", "embed")
    voc = json.loads((tmp_path / "voc" / "_stats.json").read_text())
    assert voc["scenes_written"] == 50 and voc["classes"].get("ship", 0) > 0 and voc["invariant_holds"]
    coco_json = ssdd / "test" / "all" / "test.json"
    run("convert", coco_json, "--out", tmp_path / "coco", "--class-map", REPO / "templates/classmaps/ssdd.toml")
    coco = json.loads((tmp_path / "coco" / "_stats.json").read_text())
    assert coco["scenes_written"] == 232 and coco["rejects_total"] == 0 and coco["invariant_holds"]
    rows = list(iter_rows(tmp_path / "coco", columns=["flags", "image", "sha256"]))
    assert sum("image_missing" in r["flags"] for r in rows) == 232 - 25
    assert sum(r["sha256"] is not None for r in rows) == 25
    run("convert", real_samples / "DOTA_v1_devkit_example", "--out", tmp_path / "v1")
    v1 = json.loads((tmp_path / "v1" / "_stats.json").read_text())
    assert v1["invariant_holds"] and v1["scenes_read"] >= 2


@pytest.mark.parametrize("mode", ["reference"])
def test_reference_mode_paths_are_relative_to_root(tmp_path, mode):
    make_dota(tmp_path / "ds", n=2)
    out = tmp_path / "s"
    run("convert", tmp_path / "ds", "--out", out, "--images-mode", mode)
    root = Path(read_metadata(shard_paths(out)[0])["dataset_root"])
    for row in iter_rows(out):
        assert row["image"]["bytes"] is None and (root / row["image"]["path"]).is_file()


def test_tiled_conversion_resume_and_accounting(tmp_path):
    root = tmp_path / "big"
    _png(root / "images" / "S0.png", 300, 200, 7)
    lines = [f"{x} {y} {x + 20} {y} {x + 20} {y + 8} {x} {y + 8} ship 0"
             for x, y in ((10, 10), (120, 60), (200, 150), (250, 20), (90, 110))]
    (root / "labelTxt").mkdir()
    (root / "labelTxt" / "S0.txt").write_text("\n".join(lines) + "\n")
    args = ["--format", "dota", "--tile", "128", "--overlap", "32", "--images-mode", "embed", "--shard-rows", "2"]
    run("convert", root, "--out", tmp_path / "a", *args)
    stats = json.loads((tmp_path / "a" / "_stats.json").read_text())
    assert stats["instances_in"] == 5 and stats["invariant_holds"] and stats["scenes_read"] == 1
    rows = list(iter_rows(tmp_path / "a"))
    assert len(rows) >= 4 and all(r["parent_key"] == "big/S0" and len(r["tile_offset"]) == 2 for r in rows)
    assert all(r["width"] <= 128 and r["height"] <= 128 for r in rows)
    assert decode_image(rows[0]["image"]["bytes"]).shape == (rows[0]["height"], rows[0]["width"], 3)
    expected = {p.name: p.read_bytes() for p in shard_paths(tmp_path / "a")}
    run("convert", root, "--out", tmp_path / "b", *args, "--workers", "2")
    assert {p.name: p.read_bytes() for p in shard_paths(tmp_path / "b")} == expected
    # one scene's tiles straddle shards: resume after losing the later ones rewrites exactly those
    for p in shard_paths(tmp_path / "b")[1:]:
        p.unlink()
    run("convert", root, "--out", tmp_path / "b", *args, "--resume")
    assert {p.name: p.read_bytes() for p in shard_paths(tmp_path / "b")} == expected
    assert (tmp_path / "b" / "_stats.json").read_bytes() == (tmp_path / "a" / "_stats.json").read_bytes()


def _tiling_scene(root: Path, boxes: list[tuple[int, int, int, int]]) -> Path:
    """A 300x200 DOTA scene; with --tile 128 --overlap 32 its tiles start at x 0/96/172, y 0/72."""
    _png(root / "images" / "S0.png", 300, 200, 7)
    (root / "labelTxt").mkdir(parents=True)
    lines = [f"{x0} {y0} {x1} {y0} {x1} {y1} {x0} {y1} ship 0" for x0, y0, x1, y1 in boxes]
    (root / "labelTxt" / "S0.txt").write_text("\n".join(lines) + "\n")
    return root


def test_tiling_policy_options_through_the_cli(tmp_path):
    # a 140 px wide ship is at most 74% inside one 128 px tile (tile x=96); a small one sits in tile (0, 0)
    root = _tiling_scene(tmp_path / "big", [(60, 10, 200, 18), (10, 150, 30, 158)])
    args = ["--format", "dota", "--tile", "128", "--overlap", "32"]
    run("convert", root, "--out", tmp_path / "keep", *args, "--tile-negative-rate", "0")
    kept = json.loads((tmp_path / "keep" / "_stats.json").read_text())
    assert kept["instances_out"] == 2 and kept["rejects_total"] == 0
    assert (tmp_path / "keep" / "_rejects.jsonl").read_text() == ""

    drop = tmp_path / "drop"
    run("convert", root, "--out", drop, *args, "--tile-below", "drop", "--tile-min-visible", "0.9",
        "--tile-negative-rate", "0")
    stats = json.loads((drop / "_stats.json").read_text())
    assert stats["instances_in"] == 2 and stats["instances_out"] == 1 and stats["invariant_holds"]
    assert stats["tiling"] == {"tile": 128, "overlap": 32, "min_visible": 0.9, "below": "drop",
                               "negative_rate": 0.0}
    (rej,) = [json.loads(line) for line in (drop / "_rejects.jsonl").read_text().splitlines()]
    assert rej["code"] == "tile_dropped" and "90%" in rej["reason"] and rej["scene_key"] == "big/S0"
    meta = read_metadata(shard_paths(drop)[0])
    assert (meta["tile_min_visible"], meta["tile_below"], meta["tile_negative_rate"]) == (0.9, "drop", 0.0)
    assert {r["key"] for r in iter_rows(drop, columns=["key"])} == {"big/S0__0_72"}
    # a resume with other tiling settings is refused rather than mixing the two
    result = run("convert", root, "--out", drop, *args, "--tile-below", "difficult", "--tile-min-visible",
                 "0.9", "--tile-negative-rate", "0", "--resume", expect=2)
    assert "written with other settings" in result.output


def test_tile_negative_rate_decides_how_many_empty_tiles_are_written(tmp_path):
    root = _tiling_scene(tmp_path / "big", [(10, 10, 30, 18)])  # in tile (0, 0) only: 5 empty tiles
    args = ["--format", "dota", "--tile", "128", "--overlap", "32"]
    counts = {}
    for rate in ("0", "1"):
        run("convert", root, "--out", tmp_path / rate, *args, "--tile-negative-rate", rate)
        rows = list(iter_rows(tmp_path / rate, columns=["key", "objects"]))
        counts[rate] = (len(rows), sum(not r["objects"] for r in rows))
    assert counts == {"0": (1, 0), "1": (6, 5)}


@pytest.mark.parametrize(("option", "value"), [("--tile-min-visible", "0"), ("--tile-min-visible", "1.5"),
                                               ("--tile-below", "keep"), ("--tile-negative-rate", "-0.1")])
def test_bad_tiling_options_are_usage_errors(tmp_path, option, value):
    root = _tiling_scene(tmp_path / "big", [(10, 10, 30, 18)])
    result = run("convert", root, "--out", tmp_path / "o", "--tile", "128", option, value, expect=2)
    assert option in result.output and not (tmp_path / "o").exists()


def test_convert_api_refuses_bad_tiling_options(tmp_path):
    from d2c.convert import convert
    from d2c.errors import UsageError

    root = _tiling_scene(tmp_path / "big", [(10, 10, 30, 18)])
    for kwargs, name in (({"tile_min_visible": float("nan")}, "--tile-min-visible"),
                         ({"tile_negative_rate": "0.5"}, "--tile-negative-rate"),
                         ({"tile_below": "keep"}, "--tile-below")):
        with pytest.raises(UsageError, match=name):
            convert(root, tmp_path / "o", ConvertOptions(format="dota", tile=128, **kwargs))


def test_no_default_templates_captions_with_the_given_folder_alone(tmp_path):
    make_dota(tmp_path / "ds")
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    (tpl / "only_count.j2").write_text(
        "{#-\nid: mine.count\nfamily: count\nweight: 1.0\nrequires: [main]\n-#}\n"
        "{{ modality|article|capfirst }} with {{ main|quantity }}.\n", encoding="utf-8")
    run("convert", tmp_path / "ds", "--format", "dota", "--out", tmp_path / "mine", "--templates", tpl,
        "--no-default-templates")
    rows = [r for r in iter_rows(tmp_path / "mine") if r["objects"]]
    assert rows and all(set(r["template_ids"]) == {"mine.count"} for r in rows)
    assert all("ship" in c for r in rows for c in r["captions"])
    run("convert", tmp_path / "ds", "--format", "dota", "--out", tmp_path / "both", "--templates", tpl)
    ids = {t for r in iter_rows(tmp_path / "both") for t in r["template_ids"]}
    assert len(ids - {"mine.count"}) > 1  # the built-in templates are in play again
    res = run("convert", tmp_path / "ds", "--format", "dota", "--out", tmp_path / "x", "--no-default-templates",
              expect=2)
    assert "needs --templates" in res.output


def test_class_map_by_name_or_file(real_samples, tmp_path):
    """SSDD's COCO file names its class "0": the built-in ``ssdd`` map (by name, as the Python API takes
    it, or by file) makes it a ship; an unknown name is a usage error naming the built-in maps."""
    ann = real_samples / "SSDD_mmrotate_DOTA_COCO" / "train" / "train.json"
    from d2c.classes import CLASSMAP_DIR

    for k, spec in enumerate(["ssdd", str(CLASSMAP_DIR / "ssdd.toml")]):
        run("convert", ann, "--format", "coco", "--out", tmp_path / f"out{k}", "--class-map", spec)
        stats = json.loads((tmp_path / f"out{k}" / "_stats.json").read_text())
        assert stats["instances_rejected"] == 0 and stats["instances_out"] > 0
        assert stats["classes"] == {"ship": stats["instances_out"]}
    res = run("convert", ann, "--format", "coco", "--out", tmp_path / "bad", "--class-map", "nosuch", expect=2)
    assert "class map 'nosuch' not found" in res.output and "ssdd" in res.output
