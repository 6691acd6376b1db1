"""sarclip_train: train and evaluate SARCLIP (an open_clip backbone with the AnyReader any-size image
reader) on MMSAR shards. Heavy modules (torch, open_clip) are imported lazily."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(checkpoint: str, **kwargs: Any):
    """Load a trained SARCLIP checkpoint for inference (``encode_image`` of any size, ``encode_text``)."""
    from sarclip_train.inference import load as _load

    return _load(checkpoint, **kwargs)
