"""One set of weights scores the same as a SARCLIP checkpoint and through `eval --openclip` on its
open_clip export (the recorded preprocessing); CLIP_benchmark's result files; model names and
one-line errors of `sarclip-train eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from eval_synth import write_build

from sarclip_train import checkpoint as ckpt
from sarclip_train.cli import main
from sarclip_train.config import ModelConfig
from sarclip_train.eval.clip_benchmark import KEYS
from sarclip_train.model import build_model

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return write_build(tmp_path_factory.mktemp("ev") / "build", per_class=3)


def _save(path, seed=1, anyreader=False):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch="sarclip-micro-vit", anyreader=anyreader, max_tiles=4),
                        mean=[0.1] * 3, std=[0.1] * 3)
    return ckpt.save(path, {"model": model.state_dict(), "model_info": model.info.to_dict()})


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("run-plain") / "checkpoints" / "final.pt")


def _ok(res):
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def _features(spec):
    from sarclip_train.eval import as_eval_model

    return as_eval_model(spec, "cpu")


def test_checkpoint_and_its_open_clip_export_score_the_same(build, plain, tmp_path):
    export = tmp_path / "exported"
    _ok(CliRunner().invoke(main, ["export", str(plain), "--out", str(export)]))
    state_dict = tmp_path / "sd" / "weights.pt"
    _ok(CliRunner().invoke(main, ["export", str(plain), "--out", str(state_dict), "--format", "state-dict"]))
    out = tmp_path / "out"
    _ok(CliRunner().invoke(main, ["eval", "--checkpoint", str(plain), "--openclip", f"local-dir:{export}",
                                  "--openclip", f"sarclip-micro-vit:{state_dict}", "--data", str(build),
                                  "--tasks", "retrieval,zeroshot,linear", "--out", str(out)]))
    models = json.loads((out / "results.json").read_text())["models"]
    names = [m["model"]["name"] for m in models]
    assert names[0] == plain.parent.parent.name  # the run folder, not "final"
    assert models[1]["model"]["preprocess"]["resize_mode"] == "longest"
    mine, *theirs = (m["results"] for m in models)
    for other in theirs:
        assert other["retrieval"]["metrics"] == pytest.approx(mine["retrieval"]["metrics"], abs=1e-9)
        for task, key in (("zeroshot", "acc1"), ("zeroshot", "mean_per_class_recall"), ("linear", "lp_acc1")):
            assert other[task]["chips"]["metrics"][key] == pytest.approx(mine[task]["chips"]["metrics"][key])
    # the features themselves: equal within 1e-5 on the build's images
    from sarclip_train.eval.datasets import shard_source

    src, _ = shard_source(build / "chips" / "test", "chips/test")
    imgs = [src.load(i) for i in range(len(src.ids))]
    a = _features(str(plain)).encode_images(imgs)
    for spec in (f"openclip:{export}", f"openclip:sarclip-micro-vit:{state_dict}"):  # a bare folder works too
        np.testing.assert_allclose(_features(spec).encode_images(imgs), a, atol=1e-5)
    res = CliRunner().invoke(main, ["eval", "--openclip", f"local-dir:{tmp_path}", "--data", str(build)])
    assert res.exit_code == 1 and "no open_clip_config.json" in res.output


def test_clip_benchmark_files(build, plain, tmp_path):
    out = tmp_path / "out"
    _ok(CliRunner().invoke(main, ["eval", "--checkpoint", str(plain), "--data", str(build), "--out", str(out),
                                  "--fewshot-k", "1,2", "--fewshot-seeds", "1"]))
    res = json.loads((out / "results.json").read_text())
    files = sorted((out / "clip_benchmark").glob("*.json"))
    run = plain.parent.parent.name
    got = {f.name: json.loads(f.read_text()) for f in files}
    assert sorted(got) == sorted([
        f"mmsar_test_{run}_sarclip-micro-vit_en_zeroshot_retrieval.json",
        f"mmsar_chips_{run}_sarclip-micro-vit_en_zeroshot_classification.json",
        f"mmsar_chips_{run}_sarclip-micro-vit_en_linear_probe.json",
        f"mmsar_chips_{run}_sarclip-micro-vit_en_linear_probe_k1.json",
        f"mmsar_chips_{run}_sarclip-micro-vit_en_linear_probe_k2.json",
        f"mmsar_sarcount_{run}_sarclip-micro-vit_en_counting.json"])
    for name, rec in got.items():
        assert tuple(k for k in rec if k != "fewshot_k") == KEYS, name  # clip_benchmark eval's dump keys
        assert rec["model"] == "sarclip-micro-vit" and rec["pretrained"] == run and rec["language"] == "en"
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rec["metrics"].values())
    ret = got[f"mmsar_test_{run}_sarclip-micro-vit_en_zeroshot_retrieval.json"]
    assert ret["task"] == "zeroshot_retrieval" and ret["dataset"] == "mmsar_test"
    assert ret["metrics"]["image_retrieval_recall@5"] == res["results"]["retrieval"]["metrics"][
        "image_retrieval_recall@5"]
    zs = got[f"mmsar_chips_{run}_sarclip-micro-vit_en_zeroshot_classification.json"]["metrics"]
    assert zs["acc1"] == res["results"]["zeroshot"]["chips"]["metrics"]["acc1"] and "per_class_recall" not in zs
    k2 = got[f"mmsar_chips_{run}_sarclip-micro-vit_en_linear_probe_k2.json"]
    assert k2["fewshot_k"] == 2
    assert k2["metrics"]["lp_acc1"] == res["results"]["fewshot"]["chips"]["metrics"]["k=2"]["acc1_mean"]
    cnt = got[f"mmsar_sarcount_{run}_sarclip-micro-vit_en_counting.json"]["metrics"]
    assert cnt["words_mae"] == res["results"]["counting"]["metrics"]["words"]["mae"]
    # CLIP_benchmark's `build` aggregation (clip_benchmark.cli.main_build): one CSV row per file, metrics
    # and the other keys as columns, plus model_fullname
    rows = []
    for rec in got.values():
        row = dict(rec["metrics"])
        row.update(rec)
        del row["metrics"]
        row["model_fullname"] = row["model"] + " " + row["pretrained"]
        rows.append(row)
    assert {r["model_fullname"] for r in rows} == {f"sarclip-micro-vit {run}"}
    # a second evaluation with fewer tasks leaves only its own files
    _ok(CliRunner().invoke(main, ["eval", "--checkpoint", str(plain), "--data", str(build), "--out", str(out),
                                  "--tasks", "zeroshot"]))
    assert [f.name for f in (out / "clip_benchmark").glob("*.json")] == [
        f"mmsar_chips_{run}_sarclip-micro-vit_en_zeroshot_classification.json"]


def test_two_final_checkpoints_get_unique_names(build, tmp_path):
    a = _save(tmp_path / "run-a" / "checkpoints" / "final.pt", seed=1)
    b = _save(tmp_path / "run-b" / "checkpoints" / "final.pt", seed=2)
    out = tmp_path / "out"
    text = _ok(CliRunner().invoke(main, ["eval", "--checkpoint", str(a), "--checkpoint", str(b), "--data", str(build),
                                         "--tasks", "zeroshot", "--out", str(out)]))
    assert "| run-a |" in text and "| run-b |" in text
    assert (out / "run-a" / "results.json").is_file() and (out / "run-b" / "results.json").is_file()
    text = _ok(CliRunner().invoke(main, ["eval", "--checkpoint", str(a), "--checkpoint", str(b), "--data", str(build),
                                         "--tasks", "zeroshot", "--out", str(out), "--name", "A", "--name", "B"]))
    assert "| A |" in text and "| B |" in text
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    c, d = _save(tmp_path / "x" / "final.pt"), _save(tmp_path / "y" / "final.pt")
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(c), "--checkpoint", str(d), "--data", str(build),
                                    "--tasks", "zeroshot", "--out", str(out)])
    assert res.exit_code == 2 and "both named 'final'" in res.output and "--name" in res.output
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(c), "--checkpoint", str(d), "--data", str(build),
                                    "--name", "only-one"])
    assert res.exit_code == 2 and "1 names for 2 models" in res.output


def test_eval_on_a_split_folder_or_with_nothing_to_run_fails_in_one_line(build, plain, tmp_path):
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(plain), "--data", str(build / "test"),
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "this is a shard folder" in res.output and str(build.resolve()) in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(plain), "--data", str(empty),
                                    "--out", str(tmp_path / "o2")])
    assert res.exit_code == 1 and "no task could run" in res.output and "no test shard folder" in res.output
