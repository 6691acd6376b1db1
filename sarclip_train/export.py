"""``sarclip-train export``: the backbone as a model plain open_clip loads.

``open_clip`` (the default): a folder that ``open_clip.create_model_and_transforms("local-dir:FOLDER")``
and ``open_clip.get_tokenizer("local-dir:FOLDER")`` load with no registration step:

- ``open_clip_config.json``: ``model_cfg`` (the architecture, at the size it was trained) and
  ``preprocess_cfg``: the model's normalisation (shard statistics for a model trained from scratch) and the
  toolkit's letterbox as open_clip spells it (``resize_mode`` "longest", ``interpolation`` "bilinear",
  ``fill_color`` the mean-valued border), so open_clip's own transform gives the toolkit's pixels; plus a
  ``sarclip`` section saying where the weights came from and what plain open_clip does not see;
- ``open_clip_pytorch_model.bin``: the CLIP ``state_dict`` (tensors only: ``weights_only`` loads it);
- ``README.md``: the same in words.

``state-dict``: one file with the CLIP state_dict and ``<file>.json`` beside it (``model_cfg``,
``preprocess_cfg``), for ``open_clip.create_model(arch, pretrained=file)`` with a registered config.

AnyReader's merger (tile grid, position codes, pooling, gate) is not part of open_clip: the export holds
the shared visual encoder, which plain open_clip runs on the global thumbnail only. ``sarclip_train.load``
on the checkpoint stays the way to use the whole model.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from d2c.errors import UsageError
from sarclip_train import checkpoint as ckpt

FORMATS = ("open_clip", "state-dict")
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_pytorch_model.bin"


def clip_state_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The ``clip.*`` weights of a SARCLIP checkpoint, named as open_clip names them."""
    prefix = "clip."
    return {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}


def model_cfg(info: dict[str, Any]) -> dict[str, Any]:
    """The open_clip model config the weights fit: the recorded config at the trained input size."""
    cfg = info.get("arch_config")
    if cfg is None:
        import open_clip

        from sarclip_train.model import register_configs

        register_configs()
        cfg = open_clip.get_model_config(info["arch"])
        if cfg is None:
            raise UsageError(f"architecture {info['arch']!r}: no model config recorded in the checkpoint "
                             "nor known to open_clip")
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("vision_cfg", {})["image_size"] = int(info["tile_size"])
    if info.get("siglip"):
        cfg["init_logit_bias"] = -10.0  # the parameter exists; its trained value comes with the weights
    return cfg


def preprocess_cfg(info: dict[str, Any]) -> dict[str, Any]:
    """open_clip's preprocess settings equal to the toolkit's transform of the global thumbnail."""
    from sarclip_train.anyreader import ImageTransform

    fill = ImageTransform(info["tile_size"], tuple(info["mean"]), tuple(info["std"])).fill
    return {"size": int(info["tile_size"]), "mode": "RGB", "mean": [float(v) for v in info["mean"]],
            "std": [float(v) for v in info["std"]], "interpolation": "bilinear", "resize_mode": "longest",
            "fill_color": int(fill)}


def anyreader_note(info: dict[str, Any], state: dict[str, Any]) -> str | None:
    """What plain open_clip leaves out of an AnyReader model (None for a plain-resize model)."""
    if not info.get("anyreader"):
        return None
    if info.get("merger") == "stitch":
        return (f"AnyReader model (stitch merger): plain open_clip letterboxes the whole image to "
                f"{info['tile_size']}x{info['tile_size']} and pools that. The model reads it as a grid of up to "
                f"{info['max_tiles']} tiles of {info['tile_size']} px instead: each through the encoder's "
                f"convolutional trunk, the tile feature maps joined in their grid, read by the encoder's "
                f"attention pool with its position grid resized. For the whole model use "
                f"sarclip_train.load(CHECKPOINT).")
    gate = state["model"].get("reader.gate")
    g = f"{float(gate):.4g}" if gate is not None else "?"
    return (f"AnyReader model: plain open_clip sees only the global thumbnail path (the image letterboxed to "
            f"{info['tile_size']}x{info['tile_size']}). The merger it does not have reads the image as a grid of "
            f"up to {info['max_tiles']} tiles of {info['tile_size']} px through the same encoder, adds a position "
            f"code per tile, pools the tiles with {info['pool_queries']} learned queries plus a sum branch "
            f"(object totals, which counting needs) and adds the result to the thumbnail embedding scaled by "
            f"a learned gate (here {g}). For the whole model use sarclip_train.load(CHECKPOINT).")


def _readme(cfg: dict[str, Any], source: str, note: str | None) -> str:
    pp = cfg["preprocess_cfg"]
    lines = [
        "# SARCLIP backbone for open_clip\n",
        f"Exported by `sarclip-train export` from `{source}`.\n",
        "```python",
        "import open_clip",
        "model, _, preprocess = open_clip.create_model_and_transforms('local-dir:PATH_TO_THIS_FOLDER')",
        "tokenizer = open_clip.get_tokenizer('local-dir:PATH_TO_THIS_FOLDER')",
        "```\n",
        f"Preprocessing (in `{CONFIG_NAME}`): letterbox to {pp['size']}x{pp['size']} (resize_mode "
        f"`{pp['resize_mode']}`, `{pp['interpolation']}` interpolation, border filled with {pp['fill_color']}, "
        f"nothing cropped), mean {pp['mean']}, std {pp['std']}. Single-channel SAR images are replicated to "
        "three channels (PIL `convert('RGB')`).\n",
    ]
    if note:
        lines.append(note + "\n")
    return "\n".join(lines)


def _replace_folder(staging: Path, out: Path) -> None:
    """Move the finished ``staging`` folder to ``out``; an earlier export there is replaced whole."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / CONFIG_NAME).is_file()):
            raise UsageError(f"{out}: exists and is not an earlier export (no {CONFIG_NAME}); choose a new "
                             "folder or remove it")
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def export_open_clip(checkpoint: str | Path, out: str | Path) -> tuple[Path, str | None]:
    """The ``open_clip`` folder (see the module docstring); returns it and the AnyReader note, if any."""
    state = ckpt.load(checkpoint)
    info = state["model_info"]
    note = anyreader_note(info, state)
    cfg = {"model_cfg": model_cfg(info), "preprocess_cfg": preprocess_cfg(info),
           "sarclip": {"source_checkpoint": str(checkpoint), "arch": info["arch"],
                       "norm_source": info.get("norm_source"), "anyreader": bool(info.get("anyreader")),
                       "anyreader_note": note,
                       "full_model": "sarclip_train.load(source_checkpoint)"}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        torch.save(clip_state_dict(state), staging / WEIGHTS_NAME)
        (staging / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(_readme(cfg, str(checkpoint), note), encoding="utf-8")
        _replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out, note


def export_state_dict(checkpoint: str | Path, out: str | Path) -> tuple[Path, str | None]:
    """One state_dict file plus ``<out>.json`` (``arch``, ``model_cfg``, ``preprocess_cfg``)."""
    state = ckpt.load(checkpoint)
    info = state["model_info"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(clip_state_dict(state), tmp)
    os.replace(tmp, out)
    note = anyreader_note(info, state)
    side = {"arch": info["arch"], "model_cfg": model_cfg(info), "preprocess_cfg": preprocess_cfg(info),
            "source_checkpoint": str(checkpoint), "anyreader_note": note}
    sidecar = out.with_name(out.name + ".json")
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp.write_text(json.dumps(side, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, sidecar)
    return out, note


def export(checkpoint: str | Path, out: str | Path, fmt: str = "open_clip") -> Path:
    """Export in ``fmt`` (one of :data:`FORMATS`); returns the folder or file written."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    fn = export_open_clip if fmt == "open_clip" else export_state_dict
    return fn(checkpoint, out)[0]
