"""It learns from `mmsar synth` scenes: a tiny SARCLIP trained on generated SAR scenes converted by d2c shows a
falling loss and held-out image-to-text R@5 of at least 3x chance.

Each 64 px scene holds at most one target of six classes; a single test template captions it with its
class and grid cell ("Ship top-left."), so the held-out pool has about 30 distinct captions and each image
has exactly one positive. Scenes with no target get no caption and are left out of the held-out pool.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from train_helpers import recall_at_5

from d2c.convert import convert
from d2c.options import ConvertOptions
from d2c.shards import iter_rows
from mmsar.synth import generate
from sarclip_train import load
from sarclip_train.config import load_config
from sarclip_train.train import run

torch.set_num_threads(2)

TEMPLATE = ("{#-\nid: test.cell\nfamily: position\nweight: 1.0\nrequires: [main, single_cell]\n-#}\n"
            "{{ main[0] }} {{ single_cell }}.\n")
CLASSES = ["ship", "aircraft", "car", "tank", "bridge", "harbor"]
# A micro ViT whose 3x3 patch grid is the caption grid: each 8 px patch of the 24 px input is one cell.
ARCH = {"embed_dim": 64,
        "vision_cfg": {"image_size": 24, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def make_split(tmp: Path, name: str, images: int, seed: int, templates: Path) -> Path:
    """Generate ``images`` synthetic scenes and convert them to embedded-image shards with the test template."""
    src = tmp / f"{name}-synth"
    generate(src, images=images, size=64, formats=("coco",), classes=CLASSES, max_objects=1, seed=seed)
    out = tmp / f"{name}-shards"
    convert(src / "coco.json", out, ConvertOptions(format="coco", images=src / "images", templates=templates,
                                                   include_default_templates=False, captions_per_image=1,
                                                   images_mode="embed", seed=seed))
    return out


def test_tiny_model_learns_synth_scenes(tmp_path):
    tpl = tmp_path / "templates"
    tpl.mkdir()
    (tpl / "cell.j2").write_text(TEMPLATE)
    arch = tmp_path / "cell-micro.json"
    arch.write_text(json.dumps(ARCH))
    train = make_split(tmp_path, "train", 900, 1, tpl)
    held = make_split(tmp_path, "held", 200, 2, tpl)
    cfg = load_config(None, [f'data.train=["{train}"]', f'run.out="{tmp_path / "run"}"', "run.batch_size=24",
                             "run.epochs=14", f"model.arch='{arch}'", "model.anyreader=false",
                             "optim.lr=2e-3", "optim.warmup_steps=8", "optim.weight_decay=0.01",
                             "data.workers=0", "run.threads=2", "run.progress=false", "data.shuffle_buffer=256"])
    result = run(cfg)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.8 * first, (first, last)
    rows = [r for r in iter_rows(held) if r["captions"]]
    r5, chance = recall_at_5(load(result.checkpoint), rows)
    assert r5 >= 3 * chance, (r5, chance)
