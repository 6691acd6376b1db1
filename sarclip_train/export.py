"""``sarclip-train export``: the backbone as a plain open_clip checkpoint.

The file holds the CLIP model's state_dict only (AnyReader's merger is not part of open_clip), so
``open_clip.create_model(arch, pretrained=path)`` loads it. A JSON sidecar (``<out>.json``) records the
open_clip model config and the normalisation statistics the model was trained with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from sarclip_train import checkpoint as ckpt


def export(checkpoint: str | Path, out: str | Path) -> Path:
    state = ckpt.load(checkpoint)
    prefix = "clip."
    clip_sd = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(clip_sd, tmp)
    os.replace(tmp, out)
    info = state["model_info"]
    side = {"arch": info["arch"], "model_cfg": info.get("arch_config"),
            "preprocess_cfg": {"mean": info["mean"], "std": info["std"], "size": info["tile_size"],
                               "resize_mode": "longest"},
            "source_checkpoint": str(checkpoint)}
    sidecar = out.with_name(out.name + ".json")
    sidecar.write_text(json.dumps(side, indent=2), encoding="utf-8")
    return out
