"""DDP with gloo on 2 CPU processes: the ranks train on disjoint rows, and after a few steps the weights
match one process trained at the same global batch size."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from train_helpers import make_shards

from sarclip_train import checkpoint as ckpt
from sarclip_train.config import load_config
from sarclip_train.train import run


def _overrides(shards, out, batch, loss="clip"):
    return [f'loss.kind="{loss}"', f'data.train=["{shards}"]', f'run.out="{out}"', f"run.batch_size={batch}", "run.max_steps=3",
            "data.workers=0", "run.threads=1", "run.progress=false", "model.arch='sarclip-micro-vit'",
            "optim.lr=1e-4", "optim.warmup_steps=1", "data.shuffle_buffer=8"]


def _rank(rank: int, world: int, port: int, shards: str, out: str, loss: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = run(load_config(None, _overrides(shards, out, 4, loss)))
    with open(f"{out}/rows-{rank}.json", "w") as f:
        json.dump({"rows": result.rows, "steps": result.steps}, f)
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_two_gloo_ranks_match_one_process(tmp_path, loss):
    """Both losses gather the texts of the global batch with gradients and mask duplicate captions by
    their ids across ranks (make_shards' captions repeat, so the masks are exercised)."""
    torch.set_num_threads(1)
    shards = make_shards(tmp_path / "shards", 30, rows_per_group=6, size=(64, 48))
    single = run(load_config(None, _overrides(shards, tmp_path / "single", 8, loss)))
    out = tmp_path / "ddp"
    out.mkdir()
    # fork: the children inherit the imported modules (spawn would re-import torch and open_clip twice)
    mp.start_processes(_rank, args=(2, _free_port(), str(shards), str(out), loss), nprocs=2, join=True,
                       start_method="fork")
    r0, r1 = (json.loads((out / f"rows-{r}.json").read_text()) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == single.steps == 3
    assert len(r0["rows"]) == len(r1["rows"]) == 12
    assert not set(r0["rows"]) & set(r1["rows"])
    assert sorted(r0["rows"] + r1["rows"]) == sorted(single.rows)
    a = ckpt.load(single.checkpoint)["model"]
    b = ckpt.load(out / "checkpoints" / "final.pt")["model"]
    worst = max((float((a[k] - b[k]).abs().max()), k) for k in a)
    assert worst[0] < 1e-5, worst
