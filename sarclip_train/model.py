"""Model construction: an open_clip CLIP (any architecture name or JSON config) plus the AnyReader merger.

Weights: random (``pretrained = ""``), an open_clip pretrained tag (downloads; for users online) or a local
open_clip checkpoint file. A from-scratch model normalises with statistics of the training shards; a
pretrained one keeps its own. Everything needed to rebuild the model is in :class:`ModelInfo`, which the
checkpoint stores.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from d2c.errors import UsageError
from sarclip_train.anyreader import AnyReader, ImageTransform
from sarclip_train.config import ModelConfig
from sarclip_train.openclip_quiet import quiet_open_clip

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).parent / "model_configs"
_registered: set[str] = set()


def register_configs(path: Path = CONFIG_DIR) -> None:
    """Make the shipped (or a user's) JSON model configs known to open_clip by file stem."""
    import open_clip

    key = str(Path(path).resolve())
    if key not in _registered:
        open_clip.add_model_config(Path(path))
        _registered.add(key)


def resolve_arch(arch: str) -> str:
    """An open_clip model name for ``arch`` (a registered name or a path to a JSON config)."""
    import open_clip

    register_configs()
    if arch.endswith(".json"):
        path = Path(arch)
        if not path.is_file():
            raise UsageError(f"model.arch: JSON model config {path} not found")
        register_configs(path)
        return path.stem
    if arch not in open_clip.list_models():
        raise UsageError(f"model.arch: unknown architecture {arch!r} (an open_clip name, or a .json config path)")
    return arch


@dataclass
class ModelInfo:
    """What a checkpoint records to rebuild the model and its input transform."""

    arch: str
    anyreader: bool
    tile_size: int  # the encoder's input size S
    image_size: int  # baseline input size (== tile_size unless overridden)
    max_tiles: int
    tile_cap: int
    pool_queries: int
    pos_hidden: int
    embed_dim: int
    mean: list[float]
    std: list[float]
    norm_source: str  # "pretrained" or "shards"
    siglip: bool = False
    merger: str = "gate"  # AnyReader's merger (checkpoints from before it have the gate)
    arch_config: dict | None = None  # the open_clip JSON config, so a checkpoint rebuilds without the file

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def create_clip(arch: str, pretrained: str = "", image_size: int = 0, siglip: bool = False) -> nn.Module:
    import open_clip

    name = resolve_arch(arch)
    kwargs: dict[str, Any] = {}
    if image_size:
        kwargs["force_image_size"] = image_size
    if siglip:
        kwargs["init_logit_bias"] = -10.0
    if pretrained and not Path(pretrained).is_file() and not open_clip.get_pretrained_cfg(name, pretrained):
        raise UsageError(f"model.pretrained: {pretrained!r} is neither a file nor an open_clip tag for {name}")
    try:
        with quiet_open_clip():
            return open_clip.create_model(name, pretrained=pretrained or None, **kwargs)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        if not pretrained:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if not Path(pretrained).is_file():  # a tag whose weights are not in open_clip's cache (offline)
            raise UsageError(f"model.pretrained {pretrained!r}: the {name} weights are not in open_clip's cache "
                             "and cannot be downloaded here (offline: HF_HUB_OFFLINE=1, or no network); fetch them once online with "
                             f"open_clip.create_model({name!r}, pretrained={pretrained!r}), give a local weights "
                             f"file, or set model.pretrained = \"\" to train from scratch ({first})") from None
        raise UsageError(f"model.pretrained {pretrained}: refused by the weights-only loader or unreadable: "
                         f"{first}") from None


class SarClipModel(nn.Module):
    """open_clip CLIP + optional AnyReader. ``forward`` returns L2-normalised features and the logit scale."""

    def __init__(self, clip: nn.Module, info: ModelInfo) -> None:
        super().__init__()
        self.clip = clip
        self.info = info
        self.reader = AnyReader(info.embed_dim, info.pool_queries, info.pos_hidden, float(info.max_tiles),
                                info.merger) \
            if info.anyreader else None

    def transform(self) -> ImageTransform:
        i = self.info
        return ImageTransform(i.tile_size, tuple(i.mean), tuple(i.std), i.anyreader, i.max_tiles, i.tile_cap,
                              i.image_size)

    def encode_images(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.reader is None:
            return self.clip.encode_image(batch["images"])
        return self.reader(self.clip.visual, batch["thumbs"], batch["tiles"], batch["counts"], batch["coords"])

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)

    def forward(self, batch: dict[str, torch.Tensor], tokens: torch.Tensor):
        img = F.normalize(self.encode_images(batch), dim=-1)
        txt = F.normalize(self.encode_text(tokens), dim=-1)
        bias = getattr(self.clip, "logit_bias", None)
        return img, txt, self.clip.logit_scale.exp(), bias

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.clip.set_grad_checkpointing(enable)


def _tile_size(clip: nn.Module) -> int:
    size = clip.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def build_model(mcfg: ModelConfig, *, mean: list[float] | None = None, std: list[float] | None = None,
                siglip: bool = False) -> SarClipModel:
    """A new model from the config; ``mean``/``std`` (shard statistics) are required from scratch."""
    import open_clip

    clip = create_clip(mcfg.arch, mcfg.pretrained, mcfg.image_size, siglip)
    if mcfg.pretrained:
        pp = open_clip.get_model_preprocess_cfg(clip)
        mean, std, source = list(pp.get("mean")), list(pp.get("std")), "pretrained"
    else:
        if mean is None or std is None:
            raise ValueError("a model trained from scratch needs mean/std computed from the training shards")
        source = "shards"
    name = resolve_arch(mcfg.arch)
    if mcfg.anyreader and mcfg.merger == "stitch" and not hasattr(clip.visual, "attnpool"):
        raise UsageError(f"model.merger 'stitch' needs a ResNet image tower (its attention pool reads the "
                         f"stitched tile maps); {name} has {type(clip.visual).__name__}")
    size = _tile_size(clip)
    info = ModelInfo(
        arch=name, anyreader=mcfg.anyreader, tile_size=size, image_size=size, max_tiles=mcfg.max_tiles,
        tile_cap=mcfg.tile_cap, pool_queries=mcfg.pool_queries, pos_hidden=mcfg.pos_hidden,
        embed_dim=int(clip.text_projection.shape[1] if hasattr(clip, "text_projection") else clip.visual.output_dim),
        mean=[float(v) for v in mean], std=[float(v) for v in std], norm_source=source, siglip=siglip, merger=mcfg.merger,
        arch_config=open_clip.get_model_config(name),
    )
    model = SarClipModel(clip, info)
    if mcfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if mcfg.freeze_image:
        clip.lock_image_tower()
    if mcfg.freeze_text:
        clip.lock_text_tower()
    return model


def model_from_info(info: dict[str, Any]) -> SarClipModel:
    """An uninitialised model with the recorded architecture (weights come from the checkpoint)."""
    import open_clip

    mi = ModelInfo(**info)
    if mi.arch not in open_clip.list_models():
        register_configs()
    if mi.arch not in open_clip.list_models() and mi.arch_config:
        kwargs = {"init_logit_bias": -10.0} if mi.siglip else {}
        with quiet_open_clip():
            clip = open_clip.CLIP(**mi.arch_config, **kwargs)
    else:
        clip = create_clip(mi.arch, "", mi.tile_size if mi.tile_size != _default_size(mi.arch) else 0, mi.siglip)
    return SarClipModel(clip, mi)


def _default_size(arch: str) -> int:
    import open_clip

    size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)
