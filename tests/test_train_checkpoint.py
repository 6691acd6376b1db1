"""Checkpoints load with weights_only=True; a pickle carrying code is refused, not run."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from sarclip_train import checkpoint as ckpt
from sarclip_train.config import ModelConfig, TrainConfig
from sarclip_train.model import build_model, model_from_info

torch.set_num_threads(1)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_round_trip_is_weights_only(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="sarclip-micro-vit"), mean=[0.3] * 3, std=[0.2] * 3)
    opt = torch.optim.AdamW(model.parameters())
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "model_info": model.info.to_dict(),
             "config": TrainConfig().to_json(), "rng": ckpt.rng_state(),
             "position": {"step": 3, "epoch": 0, "batch": 3}}
    path = ckpt.save(ckpt.step_path(tmp_path, 3), state)
    raw = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert raw["format"] == ckpt.FORMAT and raw["position"]["step"] == 3
    assert TrainConfig.from_json(raw["config"]).run.batch_size == 32
    rebuilt = model_from_info(raw["model_info"])
    rebuilt.load_state_dict(raw["model"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, rebuilt.state_dict()[k]), k
    assert rebuilt.info.mean == [0.3] * 3 and rebuilt.info.norm_source == "shards"
    assert ckpt.latest(tmp_path) == path
    assert not list(tmp_path.glob("checkpoints/.*tmp"))


def test_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "model": _Evil(str(marker))}, bad, pickle_protocol=2)
    with pytest.raises(ckpt.CheckpointError, match="refused by the weights-only loader"):
        ckpt.load(bad)
    assert not marker.exists()
    bad.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load(bad)
    assert not marker.exists()


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.load(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ckpt.CheckpointError, match="not a sarclip_train checkpoint"):
        ckpt.load(tmp_path / "other.pt")
