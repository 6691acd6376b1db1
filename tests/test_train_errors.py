"""`sarclip-train run` stays quiet about open_clip's internals and fails in one line, naming the fix, on
reference-mode shards and on a pretrained tag it cannot download offline."""

from __future__ import annotations

import logging

import torch
from click.testing import CliRunner
from test_convert import make_dota
from train_helpers import make_shards

from d2c.cli import main as d2c_main
from sarclip_train.cli import main

torch.set_num_threads(2)


def _run(tmp_path, shards, *sets):
    args = ["run", "--set", f'data.train=["{shards}"]', "--set", "model.arch='sarclip-micro-vit'",
            "--set", f"run.out='{tmp_path / 'run'}'", "--set", "run.progress=false", "--set", "run.batch_size=8",
            "--set", "data.workers=0"]
    for s in sets:
        args += ["--set", s]
    return CliRunner().invoke(main, args)


def test_training_logs_no_open_clip_lines(tmp_path, caplog):
    shards = make_shards(tmp_path / "shards", 16, files=1)
    with caplog.at_level(logging.INFO):
        res = _run(tmp_path, shards)
    assert res.exit_code == 0, res.output
    assert not [r.getMessage() for r in caplog.records if "open_clip" in r.pathname]
    mine = [r.getMessage() for r in caplog.records if r.name == "sarclip_train.train" and "normalisation" in r.message]
    assert len(mine) == 1 and "from the training shards" in mine[0] and "0.4815" not in mine[0]  # not OpenAI's


def test_reference_mode_shards_are_a_one_line_error(tmp_path):
    make_dota(tmp_path / "ds", n=3)
    res = CliRunner().invoke(d2c_main, ["convert", str(tmp_path / "ds"), "--format", "dota", "--out",
                                        str(tmp_path / "s"), "--source", "toy", "--images-mode", "reference"])
    assert res.exit_code == 0, res.output
    res = _run(tmp_path, tmp_path / "s")
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    assert "--images-mode reference" in res.output and "--images-mode embed" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_pretrained_tag_offline_is_a_one_line_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # never a cached copy
    shards = make_shards(tmp_path / "shards", 8, files=1)
    res = _run(tmp_path, shards, "model.arch='ViT-B-32'", "model.pretrained='openai'")
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert "model.pretrained 'openai'" in res.output and "not in open_clip's cache" in res.output
    assert 'model.pretrained = ""' in res.output
    assert len(res.output.strip().splitlines()) == 1
