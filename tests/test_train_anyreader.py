"""AnyReader: grid choice, tiling, padding masks, gate=0 equivalence with the global model, sum branch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sarclip_train.anyreader import AnyReader, ImageTransform, cap_grids, choose_grid, cut_tiles, tile_coords
from sarclip_train.config import ModelConfig
from sarclip_train.model import build_model

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("size", "max_tiles", "grid"),
    [
        ((64, 64), 6, (1, 1)),  # fits one tile at full resolution: no bigger grid
        ((128, 64), 6, (1, 2)),  # 2:1 landscape
        ((64, 192), 6, (3, 1)),  # 1:3 portrait
        ((1000, 1000), 6, (2, 2)),  # square, 4 tiles beat 2x3 (same resolution, less waste)
        ((1000, 1000), 36, (6, 6)),
        ((3000, 1000), 6, (1, 3)),  # 1x3 matches 3:1 exactly; 2x3 gives no more resolution
        ((3000, 1000), 12, (2, 6)),
    ],
)
def test_choose_grid(size, max_tiles, grid):
    assert choose_grid(*size, tile=64, max_tiles=max_tiles) == grid


def test_cut_tiles_letterbox_and_order():
    # 128x64 image: left half 10, right half 200 -> a 1x2 grid of 64px tiles, in row-major order
    arr = np.zeros((64, 128), np.uint8)
    arr[:, :64], arr[:, 64:] = 10, 200
    tiles = cut_tiles(Image.fromarray(arr), 1, 2, 64, fill=0)
    assert tiles.shape == (2, 64, 64)
    assert (tiles[0] == 10).all() and (tiles[1] == 200).all()
    # a 64x32 image in a 1x1 grid of 64: centred, padded above and below with the fill value
    img = Image.fromarray(np.full((32, 64), 255, np.uint8))
    t = cut_tiles(img, 1, 1, 64, fill=7)[0]
    assert (t[:16] == 7).all() and (t[48:] == 7).all() and (t[16:48] == 255).all()
    c = tile_coords(2, 3)
    assert c.shape == (6, 4)
    np.testing.assert_allclose(c[0], [1 / 6, 1 / 4, 1 / 3, 1 / 2])
    np.testing.assert_allclose(c[5], [5 / 6, 3 / 4, 1 / 3, 1 / 2])


def test_tile_cap_shrinks_largest_grids():
    grids = cap_grids([(640, 640), (64, 64), (640, 320)], 64, 6, cap=6)
    assert sum(r * c for r, c in grids) <= 6 and grids[1] == (1, 1)
    with pytest.raises(ValueError, match="below the batch size"):
        cap_grids([(64, 64)] * 3, 64, 6, cap=2)


def _model(anyreader=True):
    torch.manual_seed(0)
    mcfg = ModelConfig(arch="sarclip-micro-vit", anyreader=anyreader, max_tiles=6)
    return build_model(mcfg, mean=[0.2] * 3, std=[0.2] * 3).eval()


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)) for w, h in [(40, 90), (200, 64), (32, 32)]]


def test_gate_zero_equals_global_thumbnail_model():
    model = _model()
    batch = model.transform()(_images())
    assert int(batch["counts"].sum()) == batch["tiles"].shape[0] and batch["counts"].tolist()[2] == 1
    with torch.no_grad():
        out = model.encode_images(batch)
        glob = model.clip.encode_image(batch["thumbs"])
        joint = model.clip.visual(torch.cat([batch["thumbs"], batch["tiles"]]))[:3]
    assert float(model.reader.gate.detach()) == 0.0
    assert torch.equal(out, joint)  # exactly the global embedding of the same pass
    torch.testing.assert_close(out, glob, atol=1e-5, rtol=1e-5)  # and of a thumbnail-only pass
    with torch.no_grad():
        model.reader.gate.fill_(0.5)
        assert not torch.allclose(model.encode_images(batch), glob, atol=1e-4)


def test_padding_is_masked():
    """An image's merged output does not depend on what else is in the batch (padding and neighbours)."""
    reader = AnyReader(16, pool_queries=3, pos_hidden=8)
    torch.manual_seed(1)
    feats = torch.randn(7, 16)
    coords = torch.rand(7, 4)
    both = reader.merge(feats, torch.tensor([2, 5]), coords)
    alone = reader.merge(feats[:2], torch.tensor([2]), coords[:2])
    torch.testing.assert_close(both[:1], alone, atol=1e-6, rtol=1e-6)


def test_sum_branch_preserves_totals():
    """With the attention output switched off, the merged vector is linear in the tile total: two copies of
    a tile give twice the (bias-free) sum contribution, which a softmax average could not."""
    reader = AnyReader(8, pool_queries=2, pos_hidden=4, sum_scale=1.0)
    with torch.no_grad():
        reader.pos[2].weight.zero_()
        reader.pos[2].bias.zero_()
        reader.sum_proj.bias.zero_()
        reader.out.bias.zero_()
        reader.out.weight[:, : 8 * 2].zero_()  # drop the query-pooled part, keep the sum branch
    tile = torch.randn(1, 8)
    one = reader.merge(tile, torch.tensor([1]), torch.zeros(1, 4))
    two = reader.merge(tile.repeat(2, 1), torch.tensor([2]), torch.zeros(2, 4))
    torch.testing.assert_close(two, 2 * one, atol=1e-6, rtol=1e-5)


def test_baseline_plain_resize_and_larger_image_size():
    model = _model(anyreader=False)
    assert model.reader is None
    batch = model.transform()(_images())
    assert batch["images"].shape == (3, 3, 32, 32)
    big = build_model(ModelConfig(arch="sarclip-micro-vit", anyreader=False, image_size=64), mean=[0.2] * 3,
                      std=[0.2] * 3).eval()
    b2 = big.transform()(_images())
    assert b2["images"].shape == (3, 3, 64, 64)
    with torch.no_grad():
        assert big.encode_images(b2).shape == (3, 64)


def test_transform_replicates_single_channel():
    t = ImageTransform(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), anyreader=True, max_tiles=4)
    b = t([Image.fromarray(np.full((32, 64), 255, np.uint8))])
    assert b["tiles"].shape == (2, 3, 32, 32)
    assert torch.equal(b["tiles"][:, 0], b["tiles"][:, 2])
    assert torch.allclose(b["tiles"], torch.full_like(b["tiles"], 2.0))
    assert torch.allclose(b["thumbs"][0, :, 0, 0], torch.zeros(3), atol=0.01)  # padding -> 0 after norm
