"""What the image encoder actually sees: a picture of a batch's inputs after letterboxing, tiling and
normalisation, undone back to 8-bit grey.

Why: a target that is a few pixels long in a 2,000 px scene is gone after the resize to the encoder's 64 px
input. No loss curve shows that; a picture does. ``sarclip-train run`` saves one for its first batch
(``RUN/encoder_views.png``): per sample, the thumbnail (AnyReader) or the resized image (plain), then its
tiles in row-major order, each in a grey frame, with the sample's caption underneath.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from d2c.writers import atomic_write_bytes

FRAME = 2  # pixels of grey frame around each encoder input
CAPTION_H = 12


def denormalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(N, 3, S, S) normalised inputs -> (N, S, S) uint8 grey (the first channel; all three are equal)."""
    arr = x[:, 0].detach().float().cpu().numpy() * float(std[0]) + float(mean[0])
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def sample_views(batch: dict, mean: Sequence[float], std: Sequence[float], limit: int = 6,
                 thumbnail: bool = True) -> list[list[np.ndarray]]:
    """Per sample (at most ``limit``): [thumbnail or resized image, tile 1, tile 2, ...] as uint8 arrays;
    ``thumbnail=False`` for a merger that does not encode it (``stitch``): the tiles alone."""
    if "images" in batch:
        return [[v] for v in denormalise(batch["images"][:limit], mean, std)]
    thumbs = denormalise(batch["thumbs"][:limit], mean, std)
    counts = [int(c) for c in batch["counts"].tolist()]
    starts = np.concatenate([[0], np.cumsum(counts)])
    tiles = denormalise(batch["tiles"][: int(starts[min(limit, len(counts))])], mean, std)
    return [([thumbs[i]] if thumbnail else []) + [*tiles[starts[i]:starts[i + 1]]] for i in range(len(thumbs))]


def views_image(views: list[list[np.ndarray]], captions: Sequence[str] = ()) -> Image.Image:
    """One row per sample: its encoder inputs side by side, caption below."""
    size = views[0][0].shape[0] + 2 * FRAME
    cols = max(len(v) for v in views)
    row_h = size + CAPTION_H
    width = max(cols * size, 320)
    canvas = Image.new("L", (width, row_h * len(views)), 128)
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(views):
        for c, v in enumerate(row):
            canvas.paste(Image.fromarray(v), (c * size + FRAME, r * row_h + FRAME))
        if r < len(captions):
            draw.text((2, r * row_h + size), captions[r][:90], fill=255)
    return canvas


def save_encoder_views(batch: dict, path: Path, mean: Sequence[float], std: Sequence[float],
                       limit: int = 6, thumbnail: bool = True) -> Path:
    """Write the picture of ``batch``'s first ``limit`` samples to ``path`` (PNG, atomically)."""
    import io

    img = views_image(sample_views(batch, mean, std, limit, thumbnail), list(batch.get("texts", []))[:limit])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
