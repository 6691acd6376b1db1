"""`sarclip-train eval / predict / embed` through click's CliRunner on tiny synthetic data, with an
untrained open_clip baseline (``--openclip``) and an untrained SARCLIP checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from eval_synth import png, write_build, write_imagefolder

from sarclip_train.cli import main

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return write_build(root / "build", per_class=3), write_imagefolder(root / "folder", n=2)


@pytest.fixture(scope="module")
def openclip_weights(tmp_path_factory):
    from sarclip_train.model import resolve_arch

    torch.manual_seed(0)
    model = open_clip.create_model(resolve_arch("sarclip-micro-vit"), pretrained=None)
    path = tmp_path_factory.mktemp("w") / "micro.pt"
    torch.save(model.state_dict(), path)
    return f"sarclip-micro-vit:{path}"


def _ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_eval_openclip_baseline(data, openclip_weights, tmp_path):
    build, folder = data
    out = tmp_path / "out"
    text = _ok(CliRunner().invoke(main, ["eval", "--openclip", openclip_weights, "--data", str(build),
                                         "--imagefolder", str(folder), "--tasks", "retrieval,zeroshot,counting",
                                         "--out", str(out), "--batch-size", "8"]))
    res = json.loads((out / "results.json").read_text())
    assert res["model"]["kind"] == "open_clip" and res["model"]["arch"] == "sarclip-micro-vit"
    assert res["tasks"] == ["retrieval", "zeroshot", "counting"]
    ret = res["results"]["retrieval"]["metrics"]
    assert ret["num_images"] == 9 and 0.0 <= ret["mean_recall"] <= 1.0
    assert ret["text_retrieval_recall@1"] <= ret["text_retrieval_recall@5"] <= ret["text_retrieval_recall@10"]
    assert set(res["results"]["zeroshot"]) == {"chips", "imagefolder:folder"}
    cnt = res["results"]["counting"]["metrics"]
    assert np.array(cnt["words"]["confusion"]).sum() == cnt["num_items"] == 20
    assert "| Model |" in text and "openclip-sarclip-micro-vit-micro" in text
    assert (out / "plots" / "counting_confusion_digits.png").is_file()


def test_eval_usage_errors(data, tmp_path):
    build, _ = data
    r = CliRunner().invoke(main, ["eval", "--data", str(build)])
    assert r.exit_code == 2 and "--checkpoint or --openclip" in r.output
    r = CliRunner().invoke(main, ["eval", "--openclip", "sarclip-micro-vit", "--data", str(build),
                                  "--tasks", "retrieval,nope"])
    assert r.exit_code == 2 and "unknown task" in r.output


def test_predict_png_and_geotiff(openclip_weights, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    p = tmp_path / "chip.png"
    p.write_bytes(png(2, 3, size=(50, 30)))
    tif = tmp_path / "scene.tif"
    arr = np.random.default_rng(0).gamma(1.0, 100.0, (1, 40, 70)).astype(np.float32)
    with rasterio.open(tif, "w", driver="GTiff", width=70, height=40, count=1, dtype="float32") as ds:
        ds.write(arr)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    r = CliRunner().invoke(main, ["predict", "--openclip", openclip_weights, str(p), str(tif), str(bad),
                                  "--labels", "ship,aircraft,car", "--top", "2"])
    assert r.exit_code == 1  # the bad file fails, the others are still predicted
    lines = [line.split("\t") for line in r.stdout.splitlines()]
    assert [x[0] for x in lines] == [str(p)] * 2 + [str(tif)] * 2
    for _, label, prob, cos in lines:
        assert label in {"ship", "aircraft", "car"} and 0.0 <= float(prob) <= 1.0 and -1 <= float(cos) <= 1
    assert f"error: {bad}" in r.stderr


def test_embed_keys_like_shards(data, openclip_weights, tmp_path):
    build, _ = data
    out = tmp_path / "emb.parquet"
    _ok(CliRunner().invoke(main, ["embed", "--openclip", openclip_weights, "--data", str(build / "test"),
                                  "--out", str(out)]))
    table = pq.read_table(out)
    shard_keys = pq.read_table(sorted((build / "test").glob("*.parquet"))[0], columns=["key"])["key"].to_pylist()
    keys = table["key"].to_pylist()
    assert keys[: len(shard_keys)] == shard_keys and len(keys) == 9
    emb = np.array(table["embedding"].to_pylist())
    assert emb.shape == (9, 64)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert json.loads(table.schema.metadata[b"sarclip_model"])["kind"] == "open_clip"
    # A build folder: every shard folder below it, named in `set`.
    _ok(CliRunner().invoke(main, ["embed", "--openclip", openclip_weights, "--data", str(build),
                                  "--out", str(out)]))
    sets = set(pq.read_table(out)["set"].to_pylist())
    assert sets == {"chips/test", "chips/train", "chips/val", "sarcount", "sarcount_train", "test"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from sarclip_train import checkpoint as ckpt
    from sarclip_train.config import ModelConfig
    from sarclip_train.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="sarclip-micro-vit", max_tiles=4), mean=[0.2] * 3, std=[0.2] * 3)
    path = tmp_path_factory.mktemp("ck") / "sarclip-untrained.pt"
    ckpt.save(path, {"model": model.state_dict(), "model_info": model.info.to_dict()})
    return path


def test_eval_checkpoint_and_baseline_compared(data, checkpoint, openclip_weights, tmp_path):
    build, _ = data
    out = tmp_path / "cmp"
    _ok(CliRunner().invoke(main, ["eval", "--checkpoint", str(checkpoint), "--openclip", openclip_weights,
                                  "--data", str(build), "--tasks", "retrieval,fewshot,linear", "--out", str(out),
                                  "--fewshot-k", "2,1", "--fewshot-seeds", "2"]))
    mine = json.loads((out / "sarclip-untrained" / "results.json").read_text())
    assert mine["model"]["kind"] == "sarclip" and mine["model"]["arch"] == "sarclip-micro-vit"
    assert len(mine["model"]["sha256"]) == 64
    lp = mine["results"]["linear"]["chips"]["metrics"]
    assert 0.0 <= lp["lp_acc1"] <= 1.0 and lp["C"] in [float(c) for c in lp["val_acc1_by_C"]]
    fs = mine["results"]["fewshot"]["chips"]["metrics"]
    assert set(fs) == {"k=1", "k=2"} and fs["k=2"]["seeds"] == [0, 1] and len(fs["k=2"]["acc1_per_seed"]) == 2
    both = json.loads((out / "results.json").read_text())["models"]
    assert [m["model"]["kind"] for m in both] == ["sarclip", "open_clip"]
    md = (out / "report.md").read_text()
    assert "| sarclip-untrained |" in md and "| openclip-sarclip-micro-vit-micro |" in md
    assert (out / "openclip-sarclip-micro-vit-micro" / "report.md").is_file()


def test_predict_checkpoint_any_size(checkpoint, tmp_path):
    p = tmp_path / "wide.png"
    p.write_bytes(png(0, 2, size=(300, 70)))
    out = _ok(CliRunner().invoke(main, ["predict", "--checkpoint", str(checkpoint), str(p),
                                        "--labels", "ship,aircraft", "--top", "5"]))
    rows = [line.split("\t") for line in out.splitlines()]
    assert sorted(r[1] for r in rows) == ["aircraft", "ship"]
    assert sum(float(r[2]) for r in rows) == pytest.approx(1.0, abs=1e-3)
    assert float(rows[0][3]) >= float(rows[1][3])  # sorted by score


def test_bad_checkpoint_is_one_line_error(data, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    r = CliRunner().invoke(main, ["eval", "--checkpoint", str(bad), "--data", str(data[0]), "--tasks", "retrieval"])
    assert r.exit_code == 1 and r.output.startswith("error: ") and str(bad) in r.output
    assert "Traceback" not in r.output


@pytest.mark.realdata
def test_predict_real_sar_images(real_samples, checkpoint):
    images = [sorted(real_samples.rglob("*.png"))[0], sorted(real_samples.rglob("*.jpg"))[0]]
    out = _ok(CliRunner().invoke(main, ["predict", "--checkpoint", str(checkpoint), *map(str, images),
                                        "--labels", "ship,aircraft,car", "--top", "1"]))
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[0] for r in rows] == [str(p) for p in images]
    assert all(r[1] in {"ship", "aircraft", "car"} and 0.0 < float(r[2]) <= 1.0 for r in rows)
