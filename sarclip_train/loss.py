"""Contrastive losses: open_clip's ClipLoss (features gathered with gradients under DDP, local loss) with
identical caption texts masked as non-negatives, or open_clip's SigLipLoss with them as positives.

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


class MaskedSigLipLoss(SigLipLoss):
    """open_clip's SigLipLoss, in which two different rows with the same caption text are a positive pair
    (label +1), not a negative one: the image of one scene captioned "two ships." matches the other's text
    as well as its own. Under DDP the texts are all-gathered with gradients (open_clip's ``gather``), so the
    labels can be read from the text ids of the whole global batch."""

    def __init__(self, rank: int = 0, world_size: int = 1, mask_duplicates: bool = True) -> None:
        super().__init__(rank=rank, world_size=world_size, dist_impl="gather")
        self.mask_duplicates = mask_duplicates

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, text_ids=None):
        if not self.mask_duplicates or text_ids is None:
            return super().forward(image_features, text_features, logit_scale, logit_bias)
        local = text_ids.to(image_features.device)
        texts, ids = text_features, local
        if self.world_size > 1:
            texts = torch.cat(torch.distributed.nn.all_gather(text_features))
            parts = [torch.zeros_like(local) for _ in range(self.world_size)]
            torch.distributed.all_gather(parts, local)
            ids = torch.cat(parts)
        logits = self.get_logits(image_features, texts, logit_scale, logit_bias)
        labels = (local[:, None] == ids[None, :]).to(logits.dtype) * 2 - 1  # own text and its duplicates: +1
        return -F.logsigmoid(labels * logits).sum() / image_features.shape[0]


def make_loss(cfg: LossConfig, rank: int = 0, world_size: int = 1) -> nn.Module:
    if cfg.kind == "siglip":
        return MaskedSigLipLoss(rank, world_size, cfg.mask_duplicate_texts)
    return MaskedClipLoss(rank, world_size, cfg.mask_duplicate_texts)
