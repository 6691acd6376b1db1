"""`sarclip-train run` closes with the evaluation step when the config names [eval] data."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner
from eval_synth import write_build
from train_helpers import make_shards

from sarclip_train.cli import main

torch.set_num_threads(2)


def test_run_then_evaluates_the_trained_checkpoint(tmp_path):
    shards = make_shards(tmp_path / "shards", 16, files=1)
    build = write_build(tmp_path / "build", per_class=3)
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'[data]\ntrain = ["{shards}"]\nworkers = 0\n[model]\narch = "sarclip-micro-vit"\n'
                   f'[run]\nout = "{tmp_path / "run"}"\nbatch_size = 8\nprogress = false\n'
                   f'[eval]\ndata = "{build}"\ntasks = "retrieval,counting"\n')
    res = CliRunner().invoke(main, ["run", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    report = tmp_path / "run" / "eval" / "report.md"
    assert f"evaluation report: {report}" in res.output
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert results["tasks"] == ["retrieval", "counting"]
    assert results["model"]["checkpoint"].endswith("final.pt") or "final" in json.dumps(results["model"])
    assert 0.0 <= results["results"]["retrieval"]["metrics"]["mean_recall"] <= 1.0
    assert not results["skipped"]


def test_eval_section_rejects_unknown_keys(tmp_path):
    res = CliRunner().invoke(main, ["run", "--set", "eval.nope=1"])
    assert res.exit_code == 2 and "eval.nope" in res.output
