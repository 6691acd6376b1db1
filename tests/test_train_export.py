"""`sarclip-train run` then `export --format state-dict`: the backbone loads with
open_clip.create_model(arch, pretrained=path) (the local-dir folder export: test_train_openclip_export.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from train_helpers import make_shards

import sarclip_train
from sarclip_train.cli import main
from sarclip_train.model import CONFIG_DIR

torch.set_num_threads(2)


def test_run_export_and_open_clip_load(tmp_path):
    shards = make_shards(tmp_path / "shards", 16, files=1)
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'[data]\ntrain = ["{shards}"]\nworkers = 0\n[model]\narch = "sarclip-micro-vit"\n'
                   f'[run]\nout = "{tmp_path / "run"}"\nbatch_size = 8\nprogress = false\n')
    res = CliRunner().invoke(main, ["run", "--config", str(cfg), "--set", "optim.lr=1e-3"])
    assert res.exit_code == 0, res.output
    assert "trained 2 steps" in res.output
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["samples_per_s"] > 0 for r in log)
    final = tmp_path / "run" / "checkpoints" / "final.pt"
    out = tmp_path / "export" / "backbone.pt"
    res = CliRunner().invoke(main, ["export", str(final), "--out", str(out), "--format", "state-dict"])
    assert res.exit_code == 0, res.output

    # register the tiny config under a new name, as a user without this package would
    conf_dir = tmp_path / "configs"
    conf_dir.mkdir()
    shutil.copy(CONFIG_DIR / "sarclip-micro-vit.json", conf_dir / "export-test-micro.json")
    open_clip.add_model_config(conf_dir / "export-test-micro.json")
    clip = open_clip.create_model("export-test-micro", pretrained=str(out)).eval()

    sar = sarclip_train.load(final)
    texts = ["two ships.", "an aircraft at the top."]
    tok = open_clip.get_tokenizer("export-test-micro")(texts)
    with torch.no_grad():
        ref = F.normalize(clip.encode_text(tok), dim=-1)
    torch.testing.assert_close(sar.encode_text(texts), ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        thumb = sar.transform([sarclip_train.inference.to_gray(np.full((40, 40), 90, np.uint8))])["thumbs"]
        torch.testing.assert_close(clip.encode_image(thumb), sar.model.clip.encode_image(thumb))
    assert json.loads((out.parent / "backbone.pt.json").read_text())["arch"] == "sarclip-micro-vit"


def test_cli_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(main, ["run", "--set", "model.max_tiles=99"])
    assert res.exit_code == 2 and "max_tiles must be in 1..36" in res.output
    res = CliRunner().invoke(main, ["run", "--set", "run.nope=1"])
    assert res.exit_code == 2 and "unknown key 'run.nope'" in res.output
    res = CliRunner().invoke(main, ["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")])
    assert res.exit_code == 1 and "checkpoint not found" in res.output
