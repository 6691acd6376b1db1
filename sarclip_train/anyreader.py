"""AnyReader: read an image of any size through a fixed-size CLIP image encoder.

The image is letterboxed into a grid of ``rows x cols`` tiles of the encoder's input size S (the grid that
keeps the most of the image's resolution with the least padding, InternVL / LLaVA-AnyRes style), plus one
global thumbnail letterboxed to S x S. Thumbnail and tiles go through the shared open_clip visual encoder in
one batched pass; the tile embeddings (already projected by the encoder) get a position code from their
normalised centre, are pooled by learned queries plus a sum branch (totals survive, which counting needs),
and are added to the global embedding through a merger that starts at zero: at step 0 the model *is* the
global-thumbnail CLIP model. Two mergers (``MERGERS``): ``gate``, a learned scalar from 0 (the merger's own
weights get no gradient until it moves, so it has its own learning rate), and ``zero_out``, the output
layer initialised to zero with the gate fixed at 1 (LoRA-style: that layer gets gradient at step 0, the
rest from step 1).

The third merger, ``stitch`` (ResNet towers), merges before pooling instead of after, as LLaVA-AnyRes keeps
every tile's tokens: each tile goes through the encoder's convolutional trunk, the tiles' feature maps are
laid side by side in their grid into one map of the whole image, and the encoder's own attention pool reads
that map (its position embedding resized to the map). No thumbnail is encoded (the pool already sees the
whole image) and nothing is learned from scratch. Why: the ``gate`` and ``zero_out`` mergers pool each tile
into one embedding first, which throws away where in the tile things are; measured in docs/anyreader.md.

Padding: the image is resized by one factor (aspect kept) to fit inside the canvas and centred; the border
is filled with the normalisation mean, so it is zero after normalisation. Nothing is cropped. The resize
is bilinear and its size is computed as open_clip's ``resize_mode="longest"`` computes it (one ratio, the
larger of width/out_w and height/out_h), so a thumbnail equals open_clip's own preprocessing with
``interpolation="bilinear"``, ``resize_mode="longest"`` and ``fill_color`` = the fill below, pixel for pixel
(``sarclip-train export`` records these settings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sarclip_train.config import MERGERS


def choose_grid(width: int, height: int, tile: int, max_tiles: int) -> tuple[int, int]:
    """The (rows, cols) grid with at most ``max_tiles`` tiles that maximises the image's effective
    resolution (pixels kept after the aspect-preserving resize, never counting upscaling), then wastes the
    least canvas area, then uses the fewest tiles."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    best: tuple[float, float, int, int, int] | None = None
    for rows in range(1, max_tiles + 1):
        for cols in range(1, max_tiles // rows + 1):
            scale = min(cols * tile / width, rows * tile / height)
            effective = min(width * scale, width) * min(height * scale, height)
            waste = rows * cols * tile * tile - effective
            key = (-effective, waste, rows * cols, rows, cols)
            if best is None or key < best:
                best = key
    assert best is not None
    return best[3], best[4]


def letterbox(img: Image.Image, out_w: int, out_h: int, fill: int) -> Image.Image:
    """Resize ``img`` by one factor to fit ``out_w x out_h`` and centre it on a ``fill`` canvas."""
    w, h = img.size
    ratio = max(w / out_w, h / out_h)  # open_clip's ResizeKeepRatio(longest=1) arithmetic, tie for tie
    nw, nh = max(1, round(w / ratio)), max(1, round(h / ratio))
    resized = img.resize((nw, nh), Image.Resampling.BILINEAR) if (nw, nh) != (w, h) else img
    canvas = Image.new("L", (out_w, out_h), fill)
    canvas.paste(resized, ((out_w - nw) // 2, (out_h - nh) // 2))
    return canvas


def tile_coords(rows: int, cols: int) -> np.ndarray:
    """Per tile (row-major): centre x, centre y in [0, 1] and the tile's width, height as fractions."""
    ys, xs = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols, indexing="ij")
    out = np.stack([xs.ravel(), ys.ravel(), np.full(rows * cols, 1 / cols), np.full(rows * cols, 1 / rows)], 1)
    return out.astype(np.float32)


def cut_tiles(img: Image.Image, rows: int, cols: int, tile: int, fill: int) -> np.ndarray:
    """Letterbox to (rows*S, cols*S) and cut row-major S x S tiles: uint8 (rows*cols, S, S)."""
    canvas = np.asarray(letterbox(img, cols * tile, rows * tile, fill))
    return canvas.reshape(rows, tile, cols, tile).transpose(0, 2, 1, 3).reshape(rows * cols, tile, tile)


def cap_grids(sizes: list[tuple[int, int]], tile: int, max_tiles: int, cap: int) -> list[tuple[int, int]]:
    """Grids for a batch, shrinking the largest grids first until the batch holds at most ``cap`` tiles."""
    grids = [choose_grid(w, h, tile, max_tiles) for w, h in sizes]
    if cap <= 0:
        return grids
    if cap < len(sizes):
        raise ValueError(f"tile cap {cap} is below the batch size {len(sizes)} (each image needs a tile)")
    while sum(r * c for r, c in grids) > cap:
        i = max(range(len(grids)), key=lambda k: (grids[k][0] * grids[k][1], -k))
        budget = grids[i][0] * grids[i][1] - 1
        grids[i] = choose_grid(*sizes[i], tile, budget)
    return grids


@dataclass
class ImageTransform:
    """Turns a list of single-channel PIL images into the model's input tensors (a batch dict).

    ``anyreader``: thumbs (B,3,S,S), tiles (T,3,S,S), counts (B,), coords (T,4). Otherwise: images
    (B,3,s,s) letterboxed at ``image_size``. Single-channel input is replicated to three channels.
    """

    tile_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    anyreader: bool = True
    max_tiles: int = 6
    tile_cap: int = 0
    image_size: int = 0

    @property
    def fill(self) -> int:
        return int(round(255 * sum(self.mean) / 3))

    def _normalise(self, arr: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0).unsqueeze(1).expand(-1, 3, -1, -1)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()

    def __call__(self, images: list[Image.Image]) -> dict:
        if not self.anyreader:
            size = self.image_size or self.tile_size
            arr = np.stack([np.asarray(letterbox(im, size, size, self.fill)) for im in images])
            return {"images": self._normalise(arr), "num_tiles": len(images)}
        s = self.tile_size
        grids = cap_grids([im.size for im in images], s, self.max_tiles, self.tile_cap)
        thumbs = np.stack([np.asarray(letterbox(im, s, s, self.fill)) for im in images])
        tiles = np.concatenate([cut_tiles(im, r, c, s, self.fill) for im, (r, c) in zip(images, grids, strict=True)])
        coords = np.concatenate([tile_coords(r, c) for r, c in grids])
        return {
            "thumbs": self._normalise(thumbs),
            "tiles": self._normalise(tiles),
            "counts": torch.tensor([r * c for r, c in grids], dtype=torch.long),
            "coords": torch.from_numpy(coords),
            "num_tiles": int(len(tiles) + len(images)),
        }


class AnyReader(nn.Module):
    """Merges tile embeddings into the global-thumbnail embedding (see the module docstring)."""

    def __init__(self, embed_dim: int, pool_queries: int = 4, pos_hidden: int = 64, sum_scale: float = 6.0,
                 merger: str = "gate") -> None:
        super().__init__()
        self.merger = merger
        if merger == "stitch":  # nothing of its own to learn: the encoder's trunk and pool do the work
            self.register_buffer("gate", torch.ones(()))  # kept under the same name for the export's report
            return
        self.pos = nn.Sequential(nn.Linear(4, pos_hidden), nn.GELU(), nn.Linear(pos_hidden, embed_dim))
        self.norm = nn.LayerNorm(embed_dim)
        self.queries = nn.Parameter(torch.randn(pool_queries, embed_dim) * embed_dim**-0.5)
        self.sum_proj = nn.Linear(embed_dim, embed_dim)
        self.out = nn.Linear(embed_dim * (pool_queries + 1), embed_dim)
        if merger == "gate":
            self.gate = nn.Parameter(torch.zeros(()))
        elif merger == "zero_out":
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
            self.register_buffer("gate", torch.ones(()))  # fixed; kept under the same name for the export's report
        else:
            raise ValueError(f"unknown AnyReader merger {merger!r} (one of {', '.join(MERGERS)})")
        self.sum_scale = float(sum_scale)

    def merge(self, tile_feats, counts, coords):
        """Pads the flat (T, D) tile features per image, masks the padding and pools."""
        bsz, dim = counts.shape[0], tile_feats.shape[1]
        tmax = int(counts.max())
        mask = torch.arange(tmax, device=counts.device)[None, :] < counts[:, None]
        tokens = tile_feats + self.pos(coords.to(tile_feats.dtype))
        padded = tokens.new_zeros(bsz, tmax, dim)
        padded[mask] = tokens
        keys = self.norm(padded)
        logits = torch.einsum("qd,btd->bqt", self.queries.to(keys.dtype), keys) / math.sqrt(dim)
        attn = logits.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        pooled = torch.einsum("bqt,btd->bqd", attn, padded)
        summed = (self.sum_proj(padded) * mask[..., None]).sum(1) / self.sum_scale
        return self.out(torch.cat([pooled.flatten(1), summed], 1))

    def forward(self, encoder: nn.Module, thumbs, tiles, counts, coords):
        """``encoder`` is the shared open_clip visual tower (not owned here, so it is saved once)."""
        if self.merger == "stitch":
            return stitch_and_pool(encoder, tiles, counts, coords)
        feats = encoder(torch.cat([thumbs, tiles]))  # one batched pass, output already projected
        glob, tile_feats = feats[: thumbs.shape[0]], feats[thumbs.shape[0]:]
        return glob + self.gate.to(glob.dtype) * self.merge(tile_feats, counts, coords)


def stitch_and_pool(encoder: nn.Module, tiles, counts, coords):
    """(B, embed) embeddings: each image's tile feature maps laid out in its grid (rows and columns read
    from the tiles' sizes in ``coords``) and read by the encoder's attention pool. ``encoder`` is an open_clip
    ModifiedResNet (``build_model`` refuses any other tower for this merger)."""
    maps = encoder.layer4(encoder.layer3(encoder.layer2(encoder.layer1(encoder.stem(tiles)))))  # (T, C, h, w)
    starts = torch.cumsum(counts, 0) - counts
    grids = [(round(1 / float(coords[int(a), 3])), round(1 / float(coords[int(a), 2]))) for a in starts]
    out: list[torch.Tensor | None] = [None] * len(grids)
    for shape in sorted(set(grids)):  # one pooled pass per grid shape in the batch
        idx = [i for i, g in enumerate(grids) if g == shape]
        r, c = shape
        sel = torch.cat([maps[int(starts[i]): int(starts[i]) + r * c] for i in idx])
        n, (ch, h, w) = len(idx), sel.shape[1:]
        whole = sel.reshape(n, r, c, ch, h, w).permute(0, 3, 1, 4, 2, 5).reshape(n, ch, r * h, c * w)
        for i, emb in zip(idx, attention_pool(encoder.attnpool, whole), strict=True):
            out[i] = emb
    return torch.stack(out)  # type: ignore[arg-type]


def attention_pool(pool: nn.Module, x):
    """open_clip's ``AttentionPool2d`` on a feature map of any size: its square position grid resized
    (bilinear) to the map, the mean token's code kept; otherwise the same attention as its ``forward``."""
    n, ch, h, w = x.shape
    pe = pool.positional_embedding
    side = int(round(math.sqrt(pe.shape[0] - 1)))
    grid = pe[1:].reshape(1, side, side, ch).permute(0, 3, 1, 2)
    if (h, w) != (side, side):
        grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
    pos = torch.cat([pe[:1], grid.permute(0, 2, 3, 1).reshape(h * w, ch)])
    tokens = x.reshape(n, ch, h * w).permute(2, 0, 1)  # (HW, N, C)
    tokens = torch.cat([tokens.mean(0, keepdim=True), tokens]) + pos[:, None, :].to(x.dtype)
    res, _ = F.multi_head_attention_forward(
        query=tokens[:1], key=tokens, value=tokens, embed_dim_to_check=ch, num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias, use_separate_proj_weight=True, training=pool.training, need_weights=False)
    return res[0]
