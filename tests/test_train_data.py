"""Streaming shards: deterministic order, disjoint rank/worker splits, equal batches, true captions."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from train_helpers import make_shards

from d2c.captions import CaptionEngine
from d2c.model import Instance, Scene
from d2c.rows import scene_from_row
from d2c.shards import iter_rows
from sarclip_train.anyreader import ImageTransform
from sarclip_train.data import ShardStream, dihedral_image, dihedral_scene

torch.set_num_threads(1)
T = ImageTransform(32, (0.2, 0.2, 0.2), (0.2, 0.2, 0.2), anyreader=True, max_tiles=4)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"), 45, rows_per_group=7, files=3, bad=(5,))


def _stream(shards, **kw):
    args = {"batch_size": 4, "transform": T, "seed": 3, "shuffle_buffer": 10}
    args.update(kw)
    return ShardStream([str(shards)], **args)


def _rows(ds, workers=0, epoch=0, start=0):
    ds.set_epoch(epoch, start)
    loader = DataLoader(ds, batch_size=None, num_workers=workers)
    return [(b["batch_index"], b["rows"].tolist(), b["texts"]) for b in loader]


def test_order_is_a_function_of_seed_and_epoch_not_workers(shards):
    a = _rows(_stream(shards))
    assert a == _rows(_stream(shards), workers=2)  # same batches, same order, same captions
    assert a == _rows(_stream(shards))
    assert [r for _, r, _ in a] != [r for _, r, _ in _rows(_stream(shards), epoch=1)]
    assert [r for _, r, _ in a] != [r for _, r, _ in _rows(_stream(shards, seed=4))]
    flat = [i for _, r, _ in a for i in r]
    assert len(flat) == len(set(flat)) == 44  # 45 rows, batch 4, tail dropped
    assert flat != sorted(flat)  # shuffled


def test_ranks_and_workers_are_disjoint_with_equal_batches(shards):
    per_rank = [_rows(_stream(shards, rank=r, world_size=3), workers=2) for r in range(3)]
    counts = {len(p) for p in per_rank}
    assert counts == {3}  # 45 rows // (4 * 3) = 3 batches on every rank
    seen = [i for p in per_rank for _, r, _ in p for i in r]
    assert len(seen) == len(set(seen)) == 36
    # the union of the ranks' b-th batches is the b-th batch of one process with 3x the batch size
    single = _rows(_stream(shards, batch_size=12))
    for b in range(3):
        assert sorted(i for p in per_rank for i in p[b][1]) == sorted(single[b][1])


def test_wrap_tail_and_resume_skip(shards):
    ds = _stream(shards, rank=1, world_size=2, tail="wrap")
    assert len(ds) == 6  # ceil(45 / 8)
    full = _rows(ds)
    assert len(full) == 6 and all(len(r) == 4 for _, r, _ in full)
    assert _rows(ds, workers=2, start=4) == full[4:]


def test_decode_errors_are_counted_not_fatal(shards):
    ds = _stream(shards, batch_size=45, shuffle_buffer=0, tail="wrap")
    ds.set_epoch(0)
    batch = next(iter(ds))
    assert batch["decode_errors"] == 1 and batch["thumbs"].shape[0] == 45


def test_flip_moves_objects_and_rerenders_true_caption():
    scene = Scene(key="toy/a", source="toy", image_path="a.png", root="", width=300, height=200,
                  instances=[Instance.from_hbb(10, 90, 60, 110, "ship")])
    flipped = dihedral_scene(scene, True, 0)
    assert flipped.instances[0].hbb == pytest.approx((240, 90, 290, 110))
    turned = dihedral_scene(scene, False, 1)  # clockwise: left edge -> top edge
    assert (turned.width, turned.height) == (200, 300)
    assert turned.instances[0].hbb == pytest.approx((90, 10, 110, 60))
    engine = CaptionEngine(captions_per_image=50, seed=0)
    pos = [c.text for c in engine.caption(flipped) if c.family == "position"]
    assert pos and all("right" in t and "left" not in t for t in pos)


def test_augmented_sample_matches_its_caption(shards):
    ds = _stream(shards, augment=True, caption_seed=0)
    engine = CaptionEngine(seed=0)
    rows = [r for r in iter_rows(shards) if r["key"] != "toy/img00005"]
    moved = 0
    for row in rows[:12]:
        flip, rot = ds.augmentation(row["key"])
        arr, text = ds.sample(row)
        orig = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("L"))
        assert np.array_equal(arr, dihedral_image(orig, flip, rot))
        if flip or rot:
            moved += 1
            truth = [c.text for c in engine.caption(dihedral_scene(scene_from_row(row), flip, rot))]
            assert text in truth
        else:
            assert text in row["captions"]
    assert moved >= 6
