"""Contrastive losses: identical captions are masked out of the negatives; SigLIP runs through open_clip."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarclip_train.config import LossConfig
from sarclip_train.loss import make_loss


def test_duplicate_captions_are_not_negatives():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(10.0)
    ids = torch.tensor([7, 7, 3, 5])  # rows 0 and 1 share a caption
    masked = make_loss(LossConfig())(img, txt, scale, None, text_ids=ids)
    logits = scale * img @ txt.T
    keep = torch.ones(4, 4, dtype=torch.bool)
    keep[0, 1] = keep[1, 0] = False
    li = logits.masked_fill(~keep, float("-inf"))
    lt = logits.T.masked_fill(~keep, float("-inf"))
    labels = torch.arange(4)
    expected = (F.cross_entropy(li, labels) + F.cross_entropy(lt, labels)) / 2
    torch.testing.assert_close(masked, expected)
    plain = make_loss(LossConfig(mask_duplicate_texts=False))(img, txt, scale, None, text_ids=ids)
    unmasked = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(plain, unmasked)
    assert not torch.allclose(masked, plain)


def test_siglip_loss():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    loss = make_loss(LossConfig(kind="siglip"))(img, txt, torch.tensor(10.0), torch.tensor(-10.0))
    assert loss.ndim == 0 and float(loss) > 0
    assert float(make_loss(LossConfig(kind="siglip"))(img, img, torch.tensor(10.0), torch.tensor(-5.0))) < float(loss)


def test_siglip_duplicate_captions_are_positives():
    """Distinct captions: exactly open_clip's SigLipLoss. Rows 0 and 1 sharing a caption: their cross pairs
    are labelled +1 (each image matches the other's identical text), not -1."""
    from open_clip.loss import SigLipLoss

    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    scale, bias = torch.tensor(10.0), torch.tensor(-3.0)
    loss = make_loss(LossConfig(kind="siglip"))
    reference = SigLipLoss()(img, txt, scale, bias)
    torch.testing.assert_close(loss(img, txt, scale, bias, text_ids=torch.tensor([7, 8, 3, 5])), reference)
    labels = 2 * torch.eye(4) - 1
    labels[0, 1] = labels[1, 0] = 1.0
    expected = -F.logsigmoid(labels * (scale * img @ txt.T + bias)).sum() / 4
    got = loss(img, txt, scale, bias, text_ids=torch.tensor([7, 7, 3, 5]))
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, reference)
    plain = make_loss(LossConfig(kind="siglip", mask_duplicate_texts=False))
    torch.testing.assert_close(plain(img, txt, scale, bias, text_ids=torch.tensor([7, 7, 3, 5])), reference)
