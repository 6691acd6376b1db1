"""`sarclip-train export` (open_clip format): a folder plain open_clip loads as ``local-dir:``, whose image
embeddings through open_clip's own preprocessing equal the toolkit's; and `eval --openclip local-dir:` scores
what `eval --checkpoint` scores."""

from __future__ import annotations

import json
import logging

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

import sarclip_train
import sarclip_train.export
from sarclip_train import checkpoint as ckpt
from sarclip_train.cli import main
from sarclip_train.config import ModelConfig
from sarclip_train.model import build_model

torch.set_num_threads(2)


def _checkpoint(path, anyreader: bool, mean=0.3, std=0.25):
    torch.manual_seed(1)
    model = build_model(ModelConfig(arch="sarclip-micro-vit", anyreader=anyreader, max_tiles=4),
                        mean=[mean] * 3, std=[std] * 3)
    if anyreader:
        with torch.no_grad():
            model.reader.gate.fill_(0.25)
    return ckpt.save(path, {"model": model.state_dict(), "model_info": model.info.to_dict()})


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("plain") / "plain-resize.pt", anyreader=False)


def _images() -> list[Image.Image]:
    """Odd sizes and aspect ratios (ties in the resize arithmetic among them), single channel."""
    rng = np.random.default_rng(0)
    sizes = [(35, 224), (147, 224), (55, 352), (40, 40), (200, 61), (9, 300), (31, 32)]
    return [Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)) for w, h in sizes]


def test_local_dir_loads_and_matches_the_toolkit(plain, tmp_path, caplog):
    out = tmp_path / "openclip"
    res = CliRunner().invoke(main, ["export", str(plain), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"local-dir:{out}" in res.output and "note:" not in res.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "open_clip_config.json",
                                                      "open_clip_pytorch_model.bin"]
    cfg = json.loads((out / "open_clip_config.json").read_text())
    pp = cfg["preprocess_cfg"]
    assert pp == {"size": 32, "mode": "RGB", "mean": [0.3] * 3, "std": [0.25] * 3, "interpolation": "bilinear",
                  "resize_mode": "longest", "fill_color": round(255 * 0.3)}

    # plain open_clip, no registration: the folder alone
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    model.eval()
    sar = sarclip_train.load(plain)
    images = _images()
    with torch.no_grad():
        ref = F.normalize(model.encode_image(torch.stack([preprocess(im) for im in images])), dim=-1)
    torch.testing.assert_close(sar.encode_image(images), ref, atol=1e-5, rtol=0)
    texts = ["two ships.", "an aircraft at the top.", "a harbor"]
    with torch.no_grad():
        tref = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    torch.testing.assert_close(sar.encode_text(texts), tref, atol=1e-5, rtol=0)

    # re-export over the same folder replaces it whole; nothing half-written stays beside it
    assert CliRunner().invoke(main, ["export", str(plain), "--out", str(out)]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["openclip"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    res = CliRunner().invoke(main, ["export", str(plain), "--out", str(tmp_path / "other")])
    assert res.exit_code == 2 and "is not an earlier export" in res.output


def test_anyreader_export_says_what_open_clip_leaves_out(tmp_path):
    path = _checkpoint(tmp_path / "anyreader.pt", anyreader=True)
    out = tmp_path / "openclip"
    res = CliRunner().invoke(main, ["export", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "only the global thumbnail path" in res.output and "gate (here 0.25)" in res.output
    assert "sarclip_train.load" in res.output
    cfg = json.loads((out / "open_clip_config.json").read_text())
    assert cfg["sarclip"]["anyreader"] is True and "4 tiles" in cfg["sarclip"]["anyreader_note"]
    assert "only the global thumbnail path" in (out / "README.md").read_text()
    # what open_clip computes is the toolkit's thumbnail path, exactly
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    sar = sarclip_train.load(path)
    images = _images()
    batch = sar.transform(images)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().encode_image(torch.stack([preprocess(im) for im in images])),
                                   sar.model.clip.encode_image(batch["thumbs"]), atol=1e-5, rtol=0)


def test_loading_a_checkpoint_prints_no_open_clip_noise(plain, caplog):
    with caplog.at_level(logging.INFO):
        sarclip_train.load(plain)
        build_model(ModelConfig(arch="sarclip-micro-vit"), mean=[0.2] * 3, std=[0.2] * 3)
    assert not [r for r in caplog.records if "open_clip" in r.pathname], [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("size", [48, 224])
def test_letterbox_is_open_clips_transform_pixel_for_pixel(size):
    """Sizes where rounding w * (S / w_max) and w / (w_max / S) differ (ties): the toolkit uses open_clip's
    arithmetic, so its transform equals open_clip's with the exported preprocess_cfg."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from sarclip_train.anyreader import ImageTransform

    rng = np.random.default_rng(size)
    sizes = [(35, 224), (55, 352), (99, 352), (147, 224), (9, 576), (45, 320), (81, 576), (300, 120), (48, 48)]
    images = [Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)) for w, h in sizes]
    mine = ImageTransform(size, (0.3,) * 3, (0.25,) * 3, anyreader=False)
    info = {"tile_size": size, "mean": [0.3] * 3, "std": [0.25] * 3}
    theirs = image_transform_v2(PreprocessCfg(**sarclip_train.export.preprocess_cfg(info)), is_train=False)
    torch.testing.assert_close(mine(images)["images"], torch.stack([theirs(im) for im in images]),
                               atol=1e-6, rtol=0)
