"""``sarclip_train.load(checkpoint)``: a trained model for inference on images of any size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sarclip_train import checkpoint as ckpt
from sarclip_train.model import SarClipModel, model_from_info
from sarclip_train.openclip_quiet import quiet_open_clip


def to_gray(image: np.ndarray | Image.Image) -> Image.Image:
    """Any 2-D/3-D array or PIL image -> single-channel 8-bit PIL image. 8-bit colour becomes its luminance
    (PIL ``convert("L")``, as training decodes shard images); other dtypes are min-max stretched."""
    if isinstance(image, Image.Image):
        return image.convert("L")
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.dtype == np.uint8 and arr.shape[2] in (3, 4):  # luminance, as training decodes
        return Image.fromarray(np.ascontiguousarray(arr[..., :3])).convert("L")
    if arr.ndim == 3:
        arr = arr.mean(axis=2) if arr.shape[2] in (3, 4) else arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        lo, hi = np.nanmin(arr), np.nanmax(arr)
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        arr = np.nan_to_num(arr).round().astype(np.uint8)
    return Image.fromarray(arr)


class SarClip:
    """Encodes images (any size, through AnyReader when the model has it) and texts; outputs L2-normalised."""

    def __init__(self, model: SarClipModel, device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        import open_clip

        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        with quiet_open_clip():
            self.tokenizer = open_clip.get_tokenizer(model.info.arch)
        self.transform = model.transform()
        self.info = model.info

    @property
    def preprocess(self) -> dict[str, Any]:
        """How images are prepared: letterbox (no crop), tile size, grid budget, normalisation."""
        i = self.info
        return {"resize": "letterbox", "tile_size": i.tile_size, "image_size": i.image_size,
                "anyreader": i.anyreader, "max_tiles": i.max_tiles, "mean": i.mean, "std": i.std,
                "norm_source": i.norm_source, "channels": "single channel replicated to 3"}

    @torch.no_grad()
    def encode_image(self, images: list[np.ndarray | Image.Image]) -> torch.Tensor:
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = self.transform([to_gray(im) for im in images[start:start + self.batch_size]])
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            out.append(F.normalize(self.model.encode_images(batch).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, self.info.embed_dim)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start:start + self.batch_size])).to(self.device)
            out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, self.info.embed_dim)


def load(checkpoint: str | Path, device: str | torch.device = "cpu", batch_size: int = 32) -> SarClip:
    state = ckpt.load(checkpoint)
    model = model_from_info(state["model_info"])
    model.load_state_dict(state["model"])
    return SarClip(model, device, batch_size)
