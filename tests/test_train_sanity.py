"""The checks a CLIP engineer runs before trusting a training run (docs/training.md, "Sanity checks").

Each is small and fast: a model overfits 64 image-caption pairs; every parameter gets gradient; the logit
scale and the learning-rate schedule behave; identical captions in a batch carry the same text id (which is
what the loss masks); the picture of what the encoder sees still shows the targets.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import make_shards

from d2c.model import stable_digest
from sarclip_train.config import ModelConfig, load_config
from sarclip_train.data import ShardStream
from sarclip_train.encoder_views import sample_views
from sarclip_train.loss import MaskedClipLoss
from sarclip_train.model import build_model
from sarclip_train.train import lr_at, make_optimizer, run

torch.set_num_threads(2)


def _pairs(tmp_path, n=64):
    shards = make_shards(tmp_path / "pairs", n, seed=3, size=(64, 64), files=1, captions_per_image=1)
    return shards


def test_overfits_64_pairs_to_near_zero_loss(tmp_path):
    """One batch of 64 fixed pairs, seen again and again: the loss must fall from about log(64) to near 0.
    A model that cannot memorise 64 pairs has a bug (masking, normalisation, a frozen tower, the lr)."""
    shards = _pairs(tmp_path)
    cfg = load_config(None, [f'data.train=["{shards}"]', f'run.out="{tmp_path / "run"}"', "run.batch_size=64",
                             "run.epochs=60", "model.arch='sarclip-micro-vit'", "model.anyreader=false",
                             "optim.lr=3e-3", "optim.warmup_steps=5", "optim.weight_decay=0.0",
                             "data.workers=0", "run.progress=false", "data.shuffle_buffer=0",
                             "loss.mask_duplicate_texts=true"])
    result = run(cfg)
    assert result.losses[0] > 0.8 * math.log(64)  # starts at chance
    assert np.mean(result.losses[-3:]) < 0.15, result.losses[-10:]


def _batch(model, n=8, seed=0):
    rng = np.random.default_rng(seed)
    imgs = [Image.fromarray(rng.integers(0, 255, (int(rng.integers(40, 200)), int(rng.integers(40, 200))),
                                         dtype=np.uint8)) for _ in range(n)]
    texts = [f"{i} ships near the left edge." for i in range(n)]
    batch = model.transform()(imgs)
    import open_clip

    tokens = open_clip.get_tokenizer(model.info.arch)(texts)
    ids = torch.tensor([stable_digest(t, 7) for t in texts])
    return batch, tokens, ids


def _step_then_backward(model, cfg, batch, tokens, ids, first=None) -> None:
    """One optimizer step, then one more backward pass (its gradients stay for the test to read):
    zero-initialised paths (the gate, open_clip's ResNet blocks' last norm) open with the first step.
    ``first(model)`` looks at the gradients of the first pass."""
    opt = make_optimizer(model, cfg)
    loss_fn = MaskedClipLoss()
    for step in range(2):
        opt.zero_grad(set_to_none=True)
        img, txt, scale, _bias = model(batch, tokens)
        loss_fn(img, txt, scale, text_ids=ids).backward()
        if step == 0:
            if first is not None:
                first(model)
            opt.step()


@pytest.mark.parametrize("anyreader", [True, False])
def test_every_parameter_gets_gradient(anyreader):
    """After one optimizer step (so that zero-initialised paths have opened), one backward pass gives every
    trainable parameter of both towers, the logit scale and the AnyReader merger a finite, non-zero gradient."""
    torch.manual_seed(0)
    cfg = load_config(None, ["model.arch='sarclip-micro-vit'", f"model.anyreader={str(anyreader).lower()}",
                             "optim.lr=1e-3"])
    model = build_model(cfg.model, mean=[0.3] * 3, std=[0.2] * 3)
    batch, tokens, ids = _batch(model)
    _step_then_backward(model, cfg, batch, tokens, ids)
    dead = [n for n, p in model.named_parameters() if p.requires_grad
            and (p.grad is None or not torch.isfinite(p.grad).all() or float(p.grad.abs().sum()) == 0.0)]
    assert not dead, dead
    groups = {n.split(".")[0] + "." + n.split(".")[1] for n, _ in model.named_parameters()}
    assert {"clip.visual", "clip.transformer", "clip.logit_scale"} <= groups | {"clip.logit_scale"}
    if anyreader:
        assert any(n.startswith("reader.") for n, _ in model.named_parameters())


def test_zero_out_merger_starts_as_the_thumbnail_model_and_gets_gradient_at_once(tmp_path):
    """``model.merger='zero_out'``: at step 0 the embedding is the thumbnail's alone (the output layer is
    zero), yet that layer's weight gets gradient in the very first backward pass (the gate's design gives the
    merger none until the gate moves); after one step every merger parameter has gradient, the fixed gate is
    not trained, and a checkpoint rebuilds the same merger."""
    from sarclip_train.model import model_from_info

    torch.manual_seed(0)
    cfg = load_config(None, ["model.arch='sarclip-micro-vit'", "model.anyreader=true", "model.merger='zero_out'",
                             "optim.lr=1e-3"])
    model = build_model(cfg.model, mean=[0.3] * 3, std=[0.2] * 3)
    batch, tokens, ids = _batch(model)
    with torch.no_grad():
        thumbs_only = model.clip.encode_image(batch["thumbs"])
        assert torch.equal(model.encode_images(batch), thumbs_only)
    assert "reader.gate" not in dict(model.named_parameters()) and float(model.reader.gate) == 1.0
    seen = []
    _step_then_backward(model, cfg, batch, tokens, ids,
                        first=lambda m: seen.append(float(m.reader.out.weight.grad.abs().sum())))
    assert seen[0] > 0
    dead = [n for n, p in model.named_parameters() if n.startswith("reader.")
            and (p.grad is None or float(p.grad.abs().sum()) == 0.0)]
    assert not dead, dead
    rebuilt = model_from_info(model.info.to_dict())
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.info.merger == "zero_out" and float(rebuilt.reader.gate) == 1.0
    with torch.no_grad():
        assert torch.allclose(rebuilt.encode_images(batch), model.encode_images(batch))


def test_unknown_merger_is_a_config_error():
    with pytest.raises(Exception, match="model.merger must be one of gate/zero_out/stitch"):
        load_config(None, ["model.merger='sum'"])


class _Identity(torch.nn.Module):
    """A stand-in ResNet tower whose trunk changes nothing, to see the stitched map itself."""

    def __init__(self, seen):
        super().__init__()
        self.stem = self.layer1 = self.layer2 = self.layer3 = self.layer4 = torch.nn.Identity()
        self.attnpool, self.seen = torch.nn.Identity(), seen


def test_stitch_lays_the_tile_maps_out_as_the_image(monkeypatch):
    """The stitch merger joins the tiles' feature maps in their grid: with a trunk that changes nothing the
    joined map of each image is its letterboxed canvas, for grids of every shape in one batch."""
    import sarclip_train.anyreader as ar

    seen = []
    monkeypatch.setattr(ar, "attention_pool", lambda pool, x: (seen.append(x), x.flatten(1)[:, :4])[1])
    rng = np.random.default_rng(1)
    sizes = [(16, 14), (250, 60), (60, 250), (130, 120)]
    images = [Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)) for w, h in sizes]
    grids = [ar.choose_grid(w, h, 16, 4) for w, h in sizes]
    assert sorted(set(grids)) == [(1, 1), (1, 4), (2, 2), (4, 1)]
    tiles = torch.from_numpy(np.concatenate([ar.cut_tiles(im, r, c, 16, 0) for im, (r, c) in zip(images, grids, strict=True)]))
    coords = torch.from_numpy(np.concatenate([ar.tile_coords(r, c) for r, c in grids]))
    counts = torch.tensor([r * c for r, c in grids])
    out = ar.stitch_and_pool(_Identity(seen), tiles[:, None].float(), counts, coords)
    assert out.shape == (4, 4)
    joined = {tuple(x.shape[2:]): x for x in seen}
    for im, (r, c) in zip(images, grids, strict=True):
        canvas = np.asarray(ar.letterbox(im, c * 16, r * 16, 0), dtype=np.float32)
        assert torch.equal(joined[(r * 16, c * 16)][0, 0], torch.from_numpy(canvas))


def test_stitch_merger_is_the_encoder_on_one_tile_and_trains_the_tower(tmp_path):
    """``model.merger='stitch'`` (ResNet): on a one-tile image the embedding is open_clip's own encoding of
    that tile; on any images (after one step) every visual parameter gets gradient and the merger has no
    weights of its own;
    a checkpoint rebuilds it; the export's note describes it; a ViT tower is refused with a clear error."""
    from d2c.errors import UsageError
    from sarclip_train.model import model_from_info

    torch.manual_seed(0)
    cfg = load_config(None, ["model.arch='sarclip-tiny-rn'", "model.anyreader=true", "model.merger='stitch'",
                             "model.max_tiles=4", "optim.lr=1e-3"])
    model = build_model(cfg.model, mean=[0.3] * 3, std=[0.2] * 3)
    assert not [n for n, _ in model.named_parameters() if n.startswith("reader.")]
    model.eval()
    one = model.transform()([Image.fromarray(np.full((64, 64), 90, dtype=np.uint8))])
    with torch.no_grad():
        assert torch.allclose(model.encode_images(one), model.clip.encode_image(one["tiles"]), atol=1e-5)
    model.train()
    batch, tokens, ids = _batch(model)
    assert int(batch["counts"].max()) > 1
    _step_then_backward(model, cfg, batch, tokens, ids)
    dead = [n for n, p in model.named_parameters() if n.startswith("clip.visual.")
            and (p.grad is None or float(p.grad.abs().sum()) == 0.0)]
    assert not dead, dead
    rebuilt = model_from_info(model.info.to_dict())
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval(), model.eval()
    with torch.no_grad():
        assert rebuilt.info.merger == "stitch" and torch.allclose(rebuilt.encode_images(batch),
                                                                  model.encode_images(batch), atol=1e-6)
    from sarclip_train.export import anyreader_note

    note = anyreader_note(model.info.to_dict(), {"model": model.state_dict()})
    assert "stitch merger" in note and "up to 4 tiles" in note and "gate" not in note
    vit = load_config(None, ["model.arch='sarclip-micro-vit'", "model.merger='stitch'"])
    with pytest.raises(UsageError, match="needs a ResNet image tower"):
        build_model(vit.model, mean=[0.3] * 3, std=[0.2] * 3)


def test_learning_rate_schedule_and_logit_scale(tmp_path):
    """Warm-up is linear to the peak, the cosine ends at lr * min_lr_ratio, each group gets lr x its scale;
    the logit scale starts at 1/0.07, stays within (0, 100] and grows while the model memorises."""
    cfg = load_config(None, ["optim.lr=1e-3", "optim.warmup_steps=10", "optim.min_lr_ratio=0.1"])
    assert lr_at(0, 100, cfg) == pytest.approx(1e-4)
    assert lr_at(9, 100, cfg) == pytest.approx(1e-3)
    assert lr_at(10, 100, cfg) == pytest.approx(1e-3)
    assert lr_at(55, 100, cfg) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert lr_at(100, 100, cfg) == pytest.approx(1e-4)
    assert all(lr_at(s, 100, cfg) >= lr_at(s + 1, 100, cfg) for s in range(10, 100))

    shards = _pairs(tmp_path, 32)
    run_cfg = load_config(None, [f'data.train=["{shards}"]', f'run.out="{tmp_path / "run"}"', "run.batch_size=32",
                                 "run.epochs=25", "model.arch='sarclip-micro-vit'", "model.anyreader=true",
                                 "optim.lr=3e-3", "optim.warmup_steps=5", "data.workers=0",
                                 "run.progress=false", "data.shuffle_buffer=0", "run.log_every=1"])
    result = run(run_cfg)
    import json

    recs = [json.loads(line) for line in result.log.read_text().splitlines()]
    assert recs[0]["lr"] == pytest.approx(3e-3 / 5)
    assert max(r["lr"] for r in recs) == pytest.approx(3e-3)
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    scale = float(state["model"]["clip.logit_scale"].exp())
    assert 1 / 0.07 < scale <= 100.0
    opt = state["optimizer"]["param_groups"]
    assert [g["lr_scale"] for g in opt] == [1.0, 1.0, run_cfg.optim.gate_lr_scale]


def test_identical_captions_share_a_text_id_in_training_batches(tmp_path):
    """The loss masks pairs by text id: rows whose sampled caption is the same string must get the same id,
    different strings different ids (else duplicates would be pushed apart as negatives)."""
    tpl = tmp_path / "templates"
    tpl.mkdir()
    (tpl / "count.j2").write_text("{#-\nid: test.count\nfamily: count\nweight: 1.0\nrequires: [main]\n-#}\n"
                                  "{{ main|quantity }}.\n")
    shards = make_shards(tmp_path / "dup", 48, seed=5, size=(64, 64), files=1, captions_per_image=1,
                         templates=tpl)
    model = build_model(ModelConfig(arch="sarclip-micro-vit"), mean=[0.3] * 3, std=[0.2] * 3)
    ds = ShardStream([str(shards)], batch_size=48, transform=model.transform(), shuffle_buffer=0)
    batch = next(iter(ds))
    texts, ids = batch["texts"], batch["text_ids"].tolist()
    assert len(set(texts)) < len(texts)  # toy captions repeat: the case under test occurs
    for i in range(len(texts)):
        for j in range(len(texts)):
            assert (texts[i] == texts[j]) == (ids[i] == ids[j])


def _bright_box_scene(size=(1024, 512), box=(700, 100, 760, 130)):
    arr = np.full((size[1], size[0]), 20, np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = 250
    return Image.fromarray(arr)


def test_encoder_views_show_the_target():
    """What the encoder sees, undone to pixels: the bright 60x30 px target of a 1024x512 scene is still bright
    in the tile that covers it (and in the thumbnail), and the other tiles are dark."""
    model = build_model(ModelConfig(arch="sarclip-tiny-vit", anyreader=True, max_tiles=4),
                        mean=[0.1] * 3, std=[0.2] * 3)
    batch = model.transform()([_bright_box_scene()])
    (views,) = sample_views(batch, model.info.mean, model.info.std)
    thumb, *tiles = views
    assert len(tiles) == 2  # 1024x512 at 64 px tiles, at most 4: a 1x2 grid
    assert thumb.max() > 150
    assert tiles[1].max() > 200 and tiles[0].max() < 60  # the box is in the right half
    ys, xs = np.nonzero(tiles[1] > 128)
    # the box's centre (730, 115) maps to (730 - 512) / 512 * 64 = 27, 115 / 512 * 64 = 14 in tile 2
    assert abs(xs.mean() - 27.25) < 2 and abs(ys.mean() - 14.4) < 2
    (alone,) = sample_views(batch, model.info.mean, model.info.std, thumbnail=False)  # the stitch merger's view
    assert len(alone) == 2 and np.array_equal(alone[1], tiles[1])


def test_training_saves_what_the_encoder_sees(tmp_path):
    shards = _pairs(tmp_path, 16)
    cfg = load_config(None, [f'data.train=["{shards}"]', f'run.out="{tmp_path / "run"}"', "run.batch_size=8",
                             "run.max_steps=1", "model.arch='sarclip-micro-vit'", "data.workers=0",
                             "run.progress=false"])
    run(cfg)
    png = tmp_path / "run" / "encoder_views.png"
    img = np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("L"))
    assert img.shape[0] >= 6 * 32  # six samples, one row each
    assert img.max() > 200  # the toy scenes' bright rectangles survive
