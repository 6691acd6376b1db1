"""Contrastive losses: open_clip's ClipLoss (features gathered with gradients under DDP, local loss) with
identical caption texts masked as non-negatives, or open_clip's SigLipLoss.

With ``local_loss`` + ``gather_with_grad`` each rank's loss covers its own rows against the whole global
batch; DDP's gradient average then equals the gradient of a single process holding the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss
from torch import nn

from sarclip_train.config import LossConfig


class MaskedClipLoss(ClipLoss):
    """ClipLoss whose logits between two different rows with the same caption text are removed (-inf):
    a batch may hold several scenes captioned "two ships.", none of which is a negative for the others."""

    def __init__(self, rank: int = 0, world_size: int = 1, mask_duplicates: bool = True) -> None:
        super().__init__(local_loss=True, gather_with_grad=True, rank=rank, world_size=world_size)
        self.mask_duplicates = mask_duplicates

    def _all_ids(self, text_ids: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return text_ids
        parts = [torch.zeros_like(text_ids) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, text_ids)
        return torch.cat(parts)

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, text_ids=None):
        logits_i, logits_t = self.get_logits(image_features, text_features, logit_scale, logit_bias)
        n = logits_i.shape[0]
        labels = torch.arange(n, device=logits_i.device) + n * self.rank
        if self.mask_duplicates and text_ids is not None:
            local = text_ids.to(logits_i.device)
            every = self._all_ids(local)
            same = local[:, None] == every[None, :]
            same[torch.arange(n), labels] = False
            logits_i = logits_i.masked_fill(same, float("-inf"))
            logits_t = logits_t.masked_fill(same, float("-inf"))
        return (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels)) / 2


class SigLip(nn.Module):
    """open_clip's SigLipLoss behind the same call signature (duplicate captions are not masked)."""

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.inner = SigLipLoss(rank=rank, world_size=world_size)

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, text_ids=None):
        return self.inner(image_features, text_features, logit_scale, logit_bias)


def make_loss(cfg: LossConfig, rank: int = 0, world_size: int = 1) -> nn.Module:
    if cfg.kind == "siglip":
        return SigLip(rank, world_size)
    return MaskedClipLoss(rank, world_size, cfg.mask_duplicate_texts)
