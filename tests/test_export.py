"""``d2c export``: shards -> COCO/DOTA/VOC (read back: same instances) and open_clip CSV / WebDataset."""

from __future__ import annotations

import shutil
import tarfile

import pandas as pd
import pytest
from click.testing import CliRunner
from test_convert import make_dota

import d2c
from d2c.cli import main
from d2c.model import Scene
from d2c.rows import scene_from_row
from d2c.shards import iter_rows


def run(*args, expect: int = 0):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    make_dota(tmp / "ds", n=5)
    out = tmp / "shards"
    run("convert", tmp / "ds", "--format", "dota", "--out", out, "--images-mode", "embed",
        "--captions-per-image", "2", "--shard-rows", "2", "--source", "toy", "--keep-partial-scenes")
    return out


def _instances(scenes) -> dict[str, list]:
    out = {}
    for s in scenes:
        stem = s.image_path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        out[stem] = sorted((i.category, tuple(round(v, 3) for v in i.hbb), tuple(round(v, 3) for v in i.obb))
                           for i in s.instances)
    return out


@pytest.mark.parametrize("fmt", ["coco", "dota", "voc"])
def test_detection_round_trip(shards, tmp_path, fmt):
    out = tmp_path / fmt
    run("export", shards, "--to", fmt, out)
    target = out / "annotations.json" if fmt == "coco" else out
    back = [s for s in d2c.read(target, format=fmt, source="toy") if isinstance(s, Scene)]
    rows = list(iter_rows(shards))
    assert _instances(back) == _instances(scene_from_row(r) for r in rows)
    assert sum(s.num_instances for s in back) == sum(len(r["objects"]) for r in rows) == 9
    image_dir = out / ("JPEGImages" if fmt == "voc" else "images")
    assert (image_dir / "P001.png").read_bytes() == rows[1]["image"]["bytes"]
    assert all("image_missing" not in s.flags for s in back)


def test_openclip_csv(shards, tmp_path):
    out = tmp_path / "csv"
    run("export", shards, "--to", "openclip-csv", out)
    df = pd.read_csv(out / "captions.csv", sep="\t")  # open_clip: --csv-separator defaults to a tab
    assert list(df.columns) == ["filepath", "title"]
    rows = list(iter_rows(shards))
    assert len(df) == sum(len(r["captions"]) for r in rows) == 10
    assert df["title"].tolist() == [c for r in rows for c in r["captions"]]
    first = df["filepath"].iloc[0]
    with open(first, "rb") as fh:
        assert fh.read() == rows[0]["image"]["bytes"]


def test_webdataset(shards, tmp_path):
    import json

    out = tmp_path / "wds"
    res = run("export", shards, "--to", "webdataset", out)
    assert "images 5, captions 10, tars 1" in res.output
    tars = sorted(out.glob("*.tar"))
    assert [t.name for t in tars] == ["toy-all-000000.tar"]  # source, split (none named: all), number
    assert json.loads((out / "sizes.json").read_text()) == {"toy-all-000000.tar": 5}
    rows = list(iter_rows(shards))
    with tarfile.open(tars[0]) as tf:
        assert len(tf.getnames()) == 3 * 5  # one sample per image, not one image copy per caption
        samples: dict[str, dict[str, bytes]] = {}
        for m in tf.getmembers():
            key, ext = m.name.split(".", 1)  # WebDataset splits at the first dot
            samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    assert all(set(s) == {"png", "txt", "json"} for s in samples.values())
    assert [s["txt"].decode() for s in samples.values()] == [r["captions"][0] for r in rows]
    meta = [json.loads(s["json"]) for s in samples.values()]
    assert [m["captions"] for m in meta] == [list(r["captions"]) for r in rows]
    assert [m["key"] for m in meta] == [r["key"] for r in rows]
    assert list(samples.values())[1]["png"] == rows[1]["image"]["bytes"]
    run("export", shards, "--to", "webdataset", out, "--samples-per-tar", "2")  # again, smaller tars
    assert json.loads((out / "sizes.json").read_text()) == {f"toy-all-00000{i}.tar": n for i, n in enumerate([2, 2, 1])}
    assert sorted(t.name for t in out.glob("*.tar")) == [f"toy-all-00000{i}.tar" for i in range(3)]


@pytest.mark.parametrize("fmt", ["yolo", "yolo-obb"])
@pytest.mark.parametrize("mode", ["embed", "reference"])
def test_yolo_round_trip(tmp_path, fmt, mode):
    """``--to yolo|yolo-obb`` read back with d2c's own YOLO reader: the same boxes and classes per image,
    the images beside the labels (copied from the dataset for reference-mode rows: labels name no file)."""
    import numpy as np

    make_dota(tmp_path / "ds", n=4)
    shards = tmp_path / "s"
    run("convert", tmp_path / "ds", "--format", "dota", "--out", shards, "--source", "toy", "--images-mode", mode,
        "--keep-partial-scenes")  # make_dota has a scene with a rejected object: keep all 4
    out = tmp_path / fmt
    res = run("export", shards, "--to", fmt, out)
    assert "rows 4, images 4" in res.output
    assert (out / "classes.txt").read_text() == "ship\n" and (out / "data.yaml").is_file()
    back = {s.image_path.rsplit("/", 1)[-1]: s
            for s in d2c.read(out, format=fmt.replace("-", "_"), source="toy") if isinstance(s, Scene)}
    rows = {r["key"].split("/", 1)[1]: scene_from_row(r) for r in iter_rows(shards)}
    assert sorted(back) == sorted(f"{k}.png" for k in rows)
    for stem, want in rows.items():
        got = back[f"{stem}.png"]
        assert (got.width, got.height) == (want.width, want.height)
        assert [i.category for i in got.instances] == [i.category for i in want.instances]
        np.testing.assert_allclose([i.hbb for i in got.instances], [i.hbb for i in want.instances], atol=1e-3)
        if fmt == "yolo-obb":
            np.testing.assert_allclose(sorted(map(tuple, np.concatenate([i.polygon for i in got.instances]))),
                                       sorted(map(tuple, np.concatenate([i.polygon for i in want.instances]))),
                                       atol=1e-3)
        assert (out / "images" / f"{stem}.png").read_bytes() == (tmp_path / "ds" / "images" / f"{stem}.png").read_bytes()


def test_export_usage_errors(shards, tmp_path):
    run("export", shards, "--to", "yolov9", tmp_path / "x", expect=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run("export", empty, "--to", "coco", tmp_path / "y", expect=2)
    assert "no shard files" in res.output


def test_reference_mode_export_keeps_original_images(tmp_path):
    make_dota(tmp_path / "ds", n=3)
    run("convert", tmp_path / "ds", "--format", "dota", "--out", tmp_path / "s", "--source", "toy", "--keep-partial-scenes")
    run("export", tmp_path / "s", "--to", "dota", tmp_path / "d")
    assert not (tmp_path / "d" / "images").exists()  # nothing to copy: rows reference the originals
    shutil.copytree(tmp_path / "ds" / "images", tmp_path / "d" / "images")  # the user brings the images
    back = [s for s in d2c.read(tmp_path / "d", format="dota", source="toy") if isinstance(s, Scene)]
    assert len(back) == 3 and sum(s.num_instances for s in back) == 1 + 2 + 3
    assert all("image_missing" not in s.flags for s in back)


def _openclip_args(**kw):
    """The fields of open_clip_train's argparse namespace that its data loaders read."""
    import argparse

    base = {"train_data": None, "val_data": None, "train_num_samples": None, "val_num_samples": None,
            "train_data_upsampling_factors": None, "batch_size": 4, "workers": 0, "world_size": 1, "seed": 0,
            "distributed": False, "csv_separator": "\t", "csv_img_key": "filepath", "csv_caption_key": "title"}
    return argparse.Namespace(**{**base, **kw})


def test_open_clip_trainer_loads_the_exports(shards, tmp_path):
    """open_clip's own trainer data code (open_clip_train.data: --dataset-type csv and webdataset) reads
    what ``d2c export`` writes, with open_clip's defaults: every caption arrives with its image."""
    import numpy as np
    import open_clip
    import torch
    from open_clip_train.data import get_csv_dataset, get_wds_dataset

    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    sizes: list[tuple[int, int]] = []

    def preprocess(image):
        sizes.append(image.size)
        return torch.from_numpy(np.asarray(image.convert("L").resize((16, 16)), dtype=np.float32))

    rows = list(iter_rows(shards))
    captions = [c for r in rows for c in r["captions"]]
    want_tokens = tokenizer(captions)
    want_sizes = [(r["width"], r["height"]) for r in rows for _ in r["captions"]]

    run("export", shards, "--to", "openclip-csv", tmp_path / "csv")
    args = _openclip_args(val_data=str(tmp_path / "csv" / "captions.csv"))
    info = get_csv_dataset(args, preprocess, is_train=False, tokenizer=tokenizer)
    assert torch.equal(torch.cat([t for _, t in info.dataloader]), want_tokens)
    assert sizes == want_sizes and len(captions) == 10

    run("export", shards, "--to", "webdataset", tmp_path / "wds", "--samples-per-tar", "3")
    firsts = tokenizer([r["captions"][0] for r in rows])
    sizes.clear()
    tars = sorted((tmp_path / "wds").glob("*.tar"))
    args = _openclip_args(val_data="::".join(map(str, tars)), val_num_samples=len(rows))
    info = get_wds_dataset(args, preprocess, is_train=False, tokenizer=tokenizer)
    assert torch.equal(torch.cat([t for _, t in info.dataloader]), firsts)
    assert sizes == [(r["width"], r["height"]) for r in rows]  # each image once

    # training: the sample count comes from sizes.json (no --train-num-samples), shuffled, every image once
    sizes.clear()
    args = _openclip_args(train_data="::".join(map(str, tars)), batch_size=1, workers=1)
    info = get_wds_dataset(args, preprocess, is_train=True, epoch=0, tokenizer=tokenizer)
    assert info.dataloader.num_samples == len(rows) == 5
    got = torch.cat([t for _, t in info.dataloader])
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, firsts.tolist()))


def _tiled_shards(tmp_path, mode: str):
    """A 300 x 200 DOTA scene with 5 ships, cut into 128 px tiles (6 rows)."""
    from test_convert import _png

    root = tmp_path / f"big-{mode}"
    _png(root / "images" / "S0.png", 300, 200, 7)
    lines = [f"{x} {y} {x + 20} {y} {x + 20} {y + 8} {x} {y + 8} ship 0"
             for x, y in ((10, 10), (120, 60), (200, 150), (250, 20), (90, 110))]
    (root / "labelTxt").mkdir()
    (root / "labelTxt" / "S0.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / f"tiles-{mode}"
    run("convert", root, "--format", "dota", "--tile", "128", "--overlap", "32", "--images-mode", mode, "--out", out)
    return out


@pytest.mark.parametrize("fmt", ["coco", "dota", "voc"])
def test_tiles_export_as_images_of_their_own(tmp_path, fmt):
    """Embedded tiles share their parent's file name: each is written under its own key (no file
    overwrites another) with its own boxes, and reads back tile by tile."""
    shards = _tiled_shards(tmp_path, "embed")
    rows = list(iter_rows(shards))
    out = tmp_path / fmt
    res = run("export", shards, "--to", fmt, out)
    assert f"images {len(rows)}" in res.output and len(rows) == 6
    target = out / "annotations.json" if fmt == "coco" else out
    back = {s.key.split("/", 1)[1]: s for s in d2c.read(target, format=fmt, source="t") if isinstance(s, Scene)}
    assert sorted(back) == sorted(r["key"].split("/", 1)[1] for r in rows)
    image_dir = out / ("JPEGImages" if fmt == "voc" else "images")
    for r in rows:
        stem = r["key"].split("/", 1)[1]
        assert (image_dir / f"{stem}.png").read_bytes() == r["image"]["bytes"]
        assert back[stem].num_instances == len(r["objects"])
        assert (back[stem].width, back[stem].height) == (r["width"], r["height"])


def test_reference_mode_tiles_are_left_out_with_a_warning(tmp_path, caplog):
    """A tile row in reference mode names its parent's file: exporting it would pair the parent image
    with the tile's boxes or captions, so it is left out, counted and warned about."""
    shards = _tiled_shards(tmp_path, "reference")
    for fmt in ("dota", "openclip-csv", "webdataset"):
        with caplog.at_level("WARNING", logger="d2c.export"):
            res = run("export", shards, "--to", fmt, tmp_path / f"out-{fmt}")
        assert "skipped 6" in res.output, (fmt, res.output)
        assert "has no image of its own" in caplog.text
        caplog.clear()


def test_same_file_name_in_two_folders_does_not_overwrite(tmp_path):
    import json

    from test_convert import _png

    root = tmp_path / "ds"
    data = {name: _png(root / name, 32, 24, k) for k, name in enumerate(["a/x.png", "b/x.png"])}
    images = [{"id": k + 1, "file_name": name, "width": 32, "height": 24} for k, name in enumerate(data)]
    anns = [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [2, 2, 10, 6]}]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": [{"id": 1, "name": "ship"}]}))
    shards = tmp_path / "shards"
    run("convert", root / "ann.json", "--format", "coco", "--images-mode", "embed", "--out", shards)
    run("export", shards, "--to", "dota", tmp_path / "out")
    files = sorted((tmp_path / "out" / "images").iterdir())
    assert [p.name for p in files] == ["b_x.png", "x.png"]
    assert {p.read_bytes() for p in files} == set(data.values())


@pytest.mark.parametrize("fmt", ["coco", "dota"])
def test_failed_detection_export_leaves_nothing(shards, tmp_path, monkeypatch, fmt):
    """An export that fails part way (here: a row that cannot be turned into a scene, after images were
    written) leaves no file of its own in the output folder; what was there before stays."""
    import d2c.export as export_mod

    out = tmp_path / fmt
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    real, seen = export_mod.scene_from_row, []

    def failing(row, root=""):
        seen.append(row["key"])
        if len(seen) == 4:
            raise OSError("disk went away")
        return real(row, root=root)

    monkeypatch.setattr(export_mod, "scene_from_row", failing)
    with pytest.raises(OSError, match="disk went away"):
        export_mod.export(shards, fmt, out)
    assert sorted(p.name for p in out.rglob("*")) == ["notes.txt"]
    monkeypatch.undo()
    export_mod.export(shards, fmt, out)  # the same folder, complete this time
    assert (out / "images" / "P001.png").is_file() and not list(out.glob(".export-partial-*"))
