"""Kill a run mid-way (2 loader workers), `--resume latest`, and get the uninterrupted run's weights exactly."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import torch
from train_helpers import make_shards

from sarclip_train import checkpoint as ckpt
from sarclip_train.config import load_config
from sarclip_train.train import run

torch.set_num_threads(1)


def _child(overrides: list[str], kill_at: int) -> None:
    """A training process that dies by SIGKILL right after optimizer step ``kill_at`` (no clean-up)."""

    def on_step(step: int) -> None:
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    run(load_config(None, overrides), on_step=on_step)


def _overrides(shards, out):
    return [f'data.train=["{shards}"]', f'run.out="{out}"', "data.workers=2", "run.batch_size=4",
            "run.accum_steps=2", "run.epochs=2", "run.checkpoint_every=2", "run.threads=1", "run.progress=false",
            "model.arch='sarclip-micro-vit'", "data.augment=true", "optim.warmup_steps=2", "optim.lr=2e-3"]


def test_kill_and_resume_is_bit_for_bit(tmp_path):
    shards = make_shards(tmp_path / "shards", 24, rows_per_group=5, size=(64, 48))
    ref = run(load_config(None, _overrides(shards, tmp_path / "ref")))
    assert ref.steps == 6

    out = tmp_path / "killed"
    # fork: the child inherits the imports (a fresh interpreter would spend seconds importing open_clip)
    child = mp.get_context("fork").Process(target=_child, args=(_overrides(shards, out), 5))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL
    assert ckpt.latest(out).name == "step-00000004.pt"  # epoch 1, mid-way
    assert not (out / "checkpoints" / "final.pt").exists()

    resumed = run(load_config(None, [*_overrides(shards, out), "run.resume='latest'"]))
    assert resumed.steps == 6
    a, b = ckpt.load(ref.checkpoint), ckpt.load(resumed.checkpoint)
    assert a["position"] == b["position"]
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])
    assert ref.losses[4:] == resumed.losses
