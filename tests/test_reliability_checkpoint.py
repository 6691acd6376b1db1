"""Checkpoints an attacker hands over, through every entry point that loads one: the weights-only loader
refuses pickled code (nothing runs) and damaged files, with a one-line error naming the file, never a
traceback. (The module-level refusal is in test_train_checkpoint.py and kill-and-resume training to the
same weights in test_train_resume.py; this file covers the other doors and damaged files.)"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from train_helpers import make_shards

import sarclip_train
from sarclip_train import checkpoint as ckpt
from sarclip_train.cli import main

pytestmark = pytest.mark.timeout(60)
torch.set_num_threads(1)


class Payload:
    """Unpickling this runs ``touch MARKER``: a checkpoint with code in it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def files(tmp_path: Path) -> tuple[dict[str, Path], Path]:
    """Hostile and damaged checkpoint files, and the marker their payloads would create."""
    marker = tmp_path / "pwned"
    out: dict[str, Path] = {}
    good = {"format": ckpt.FORMAT, "model": {"w": torch.zeros(64, 64)}, "position": {"step": 1}}
    out["nested_payload"] = tmp_path / "nested.pt"  # code deep inside an otherwise valid layout
    torch.save({**good, "optimizer": {"state": {0: {"exp_avg": Payload(str(marker))}}}}, out["nested_payload"])
    out["raw_pickle"] = tmp_path / "raw.pt"
    out["raw_pickle"].write_bytes(pickle.dumps({"format": ckpt.FORMAT, "model": Payload(str(marker))}))
    out["legacy_format"] = tmp_path / "legacy.pt"
    torch.save({"format": ckpt.FORMAT, "model": Payload(str(marker))}, out["legacy_format"],
               _use_new_zipfile_serialization=False)
    whole = tmp_path / "whole.pt"
    torch.save(good, whole)
    data = whole.read_bytes()
    out["truncated"] = tmp_path / "truncated.pt"
    out["truncated"].write_bytes(data[: len(data) // 2])
    out["empty"] = tmp_path / "empty.pt"
    out["empty"].write_bytes(b"")
    for seed in range(40):  # random bytes fail in the unpickler as UnpicklingError, IndexError, KeyError ...
        out[f"garbage{seed}"] = tmp_path / f"garbage{seed}.pt"
        out[f"garbage{seed}"].write_bytes(random.Random(seed).randbytes(4096))
    return out, marker


def test_loader_refuses_every_file(files):
    paths, marker = files
    for name, path in paths.items():
        with pytest.raises(ckpt.CheckpointError) as err:
            ckpt.load(path)
        msg = str(err.value)
        assert str(path) in msg and "\n" not in msg, (name, msg)
        with pytest.raises(ckpt.CheckpointError):
            sarclip_train.load(path)  # the public inference entry point
    assert not marker.exists()


def _cli(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (1, 2), (args, result.exit_code, result.output[-1500:])
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.output[-1500:]
    return result.output


def test_cli_entry_points_refuse_payloads(files, tmp_path):
    paths, marker = files
    shards = make_shards(tmp_path / "shards", 8, size=(32, 32))
    evil = paths["nested_payload"]
    base = [f'data.train=["{shards}"]', f'run.out="{tmp_path / "run"}"', "run.epochs=1", "run.batch_size=4",
            "run.progress=false", "model.arch='sarclip-micro-vit'", "data.workers=0"]
    # resume from a hostile checkpoint
    out = _cli(["run", *sum((["--set", o] for o in base), []), "--resume", str(evil)])
    assert str(evil) in out and "weights-only" in out
    # initial weights from a hostile file
    out = _cli(["run", *sum((["--set", o] for o in [*base, f'model.pretrained="{evil}"']), [])])
    assert str(evil) in out
    # export
    out = _cli(["export", str(evil), "--out", str(tmp_path / "x.pt")])
    assert str(evil) in out and not (tmp_path / "x.pt").exists()
    # evaluation: a SARCLIP checkpoint, and open_clip weights from a local file
    for flag, spec in (("--checkpoint", str(evil)), ("--openclip", f"sarclip-micro-vit:{evil}")):
        out = _cli(["eval", flag, spec, "--data", str(tmp_path), "--out", str(tmp_path / "eval")])
        assert str(evil) in out, out
    assert not marker.exists()
