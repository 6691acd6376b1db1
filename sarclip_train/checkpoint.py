"""Checkpoints that hold only tensors and plain containers, so they load with ``torch.load(weights_only=True)``.

Layout (a dict): ``format`` ("sarclip_train/1"), ``model`` (state_dict), ``optimizer`` (state_dict),
``model_info`` (dict, see :class:`sarclip_train.model.ModelInfo`), ``config`` (the TrainConfig as a JSON
string), ``rng`` (torch CPU/CUDA generator states as uint8 tensors), ``position`` (``step``, ``epoch``,
``batch``: the next micro-batch of ``epoch`` to train on), ``stats`` (samples seen, decode errors).
Files are written to a temporary name and renamed, so a kill never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from d2c.errors import D2CError

FORMAT = "sarclip_train/1"
_STEP = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(D2CError):
    """A checkpoint that is missing, not ours, or refused by the weights-only loader."""


def save(path: str | Path, state: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``: a file with pickled code in it is refused, not executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused by the weights-only loader: {first}") from None
    except (OSError, ValueError, LookupError) as e:  # a truncated or damaged file (random bytes: IndexError too)
        raise CheckpointError(f"{path}: cannot read the checkpoint (truncated or damaged?): {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a sarclip_train checkpoint (format {FORMAT!r} expected)")
    return state


def link_final(src: Path, final: Path) -> Path:
    """``final`` names the same file as ``src`` (a hard link, or a copy where links are not possible)."""
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, final)
    return final


def step_path(out: str | Path, step: int) -> Path:
    return Path(out) / "checkpoints" / f"step-{step:08d}.pt"


def list_steps(out: str | Path) -> list[tuple[int, Path]]:
    folder = Path(out) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.pt") if (m := _STEP.match(p.name))]
    return sorted(found)


def latest(out: str | Path) -> Path | None:
    steps = list_steps(out)
    return steps[-1][1] if steps else None


def prune(out: str | Path, keep: int, protect: Path | None = None) -> None:
    """Delete all but the newest ``keep`` step checkpoints (never ``protect``)."""
    for _, p in list_steps(out)[:-keep] if keep > 0 else []:
        if protect is None or p != protect:
            p.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
