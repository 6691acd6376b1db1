"""It learns: a tiny SARCLIP trained on generated scenes shows a falling loss and held-out image-to-text
R@5 of at least 3x chance.

The scenes are drawn (bright ships and aircraft, 1-3 of one class clustered in one cell of a 3x3 grid) and
captioned by d2c's CaptionEngine restricted to two position templates ("Two ships in the top-left part."):
d2c's full template set paraphrases too freely for a text tower trained from scratch in under a minute.
Settings checked over training seeds 1, 5 and 9 (2026-11-27): loss ratio 0.32-0.37, R@5 4.7-6.5x chance;
at lr 4e-3 / 8 epochs one seed in three did not learn at all.
"""

from __future__ import annotations

import numpy as np
import torch
from train_helpers import make_shards, recall_at_5

from d2c.shards import iter_rows
from sarclip_train import load
from sarclip_train.config import load_config
from sarclip_train.train import run

torch.set_num_threads(2)

TEMPLATES = {
    "one.j2": "{#-\nid: test.one\nfamily: position\nweight: 1.0\nrequires: [main, single_cell]\n-#}\n"
              "{{ main|quantity }} {{ single_cell|place }}.\n",
    "many.j2": "{#-\nid: test.many\nfamily: position\nweight: 1.0\nrequires: [main, region]\n-#}\n"
               "{{ main|quantity }} {{ region|place }}.\n",
}


def test_tiny_model_learns_generated_scenes(tmp_path):
    tpl = tmp_path / "templates"
    tpl.mkdir()
    for name, text in TEMPLATES.items():
        (tpl / name).write_text(text)
    kw = {"size": (64, 64), "files": 1, "cell": True, "max_objects": 3, "templates": tpl, "captions_per_image": 1}
    train = make_shards(tmp_path / "train", 320, seed=1, rows_per_group=64, **kw)
    held = make_shards(tmp_path / "held", 64, seed=2, **kw)
    cfg = load_config(None, [f'data.train=["{train}"]', f'run.out="{tmp_path / "run"}"', "run.batch_size=32",
                             "run.epochs=12", "model.arch='sarclip-micro-vit'", "model.max_tiles=4",
                             "optim.lr=2e-3", "optim.warmup_steps=8", "optim.weight_decay=0.01",
                             "data.workers=1", "run.progress=false", "data.shuffle_buffer=64"])
    result = run(cfg)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.8 * first, (first, last)
    r5, chance = recall_at_5(load(result.checkpoint), list(iter_rows(held)))
    assert r5 >= 3 * chance, (r5, chance)
