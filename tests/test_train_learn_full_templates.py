"""It learns from the captions the toolkit really writes: d2c's full template set (every family, five
captions per scene, paraphrased nouns), `mmsar synth` scenes, the demo's recipe (sarclip_train.demo.RECIPE,
the sarclip-tiny-rn backbone, AnyReader). Held-out image-to-text R@5 must reach 2x chance and the loss must
fall well below log(batch).

The demo (``make demo``) measures the same recipe at scale against every baseline; this test keeps it from
rotting in a minute of CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from train_helpers import recall_at_5

from d2c.convert import convert
from d2c.options import ConvertOptions
from d2c.shards import iter_rows
from mmsar.synth import generate
from sarclip_train import load
from sarclip_train.demo import recipe_config
from sarclip_train.train import run

torch.set_num_threads(2)


def make_split(tmp: Path, name: str, images: int, seed: int) -> Path:
    src = tmp / f"{name}-synth"
    generate(src, images=images, size_range=(128, 256), formats=("coco",), seed=seed)
    out = tmp / f"{name}-shards"
    convert(src / "coco.json", out, ConvertOptions(format="coco", images=src / "images", captions_per_image=3,
                                                   images_mode="embed", seed=seed))
    return out


def test_recipe_learns_full_template_captions(tmp_path):
    train = make_split(tmp_path, "train", 300, 11)
    held = make_split(tmp_path, "held", 80, 12)
    cfg = recipe_config(train, tmp_path / "run", steps=64, anyreader=True, workers=0)  # R@5 ~3.5x chance
    cfg.run.threads = 2
    result = run(cfg)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-10:])
    rows = [r for r in iter_rows(held) if r["captions"]]
    r5, chance = recall_at_5(load(result.checkpoint), rows)
    assert r5 >= 2 * chance, (r5, chance, first, last)
    assert last < 0.9 * first, (first, last)
