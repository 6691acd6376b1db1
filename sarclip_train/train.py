"""``run(config) -> RunResult``: contrastive training of SARCLIP on MMSAR shards.

Single process or DDP under ``torchrun`` (NCCL on GPU, gloo on CPU). AdamW with a cosine schedule after a
linear warm-up, bf16 autocast on GPU (fp32 on CPU), gradient accumulation, JSONL logs, atomic checkpoints.
``run.resume = "latest"`` restores weights, optimizer, RNG and the loader position, and continues
bit-for-bit on CPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from d2c.errors import UsageError
from sarclip_train import checkpoint as ckpt
from sarclip_train.config import TrainConfig
from sarclip_train.data import ShardStream, norm_stats
from sarclip_train.loss import make_loss
from sarclip_train.model import SarClipModel, build_model, model_from_info
from sarclip_train.openclip_quiet import quiet_open_clip

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    checkpoint: Path  # the final checkpoint
    log: Path  # JSONL, one line per logged step
    steps: int
    losses: list[float] = field(default_factory=list)  # per optimizer step of this process (rank 0 view)
    decode_errors: int = 0
    samples: int = 0
    rows: list[int] = field(default_factory=list)  # global row ids this rank trained on (in order)


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_dist(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as tdist

    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _device(cfg: TrainConfig) -> torch.device:
    want = cfg.run.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UsageError("run.device = 'cuda' but no CUDA device is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``optim.lr`` then cosine decay to ``lr * min_lr_ratio`` at ``total`` steps."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    span = max(1, total - o.warmup_steps)
    progress = min(1.0, (step - o.warmup_steps) / span)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with three groups: decayed matrices, undecayed vectors, and the AnyReader gate.

    The gate starts at zero so step 0 equals the global-thumbnail model; Adam moves a scalar by about the
    learning rate per step, so at a fine-tuning rate it would stay near zero for thousands of steps and
    the tiles would never be heard. ``optim.gate_lr_scale`` gives it its own, larger rate.
    """
    decay, no_decay, gate = [], [], []
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            (gate if name.endswith("reader.gate") else no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay, "lr_scale": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    if gate:
        groups.append({"params": gate, "weight_decay": 0.0, "lr_scale": cfg.optim.gate_lr_scale})
    # fused: one kernel per step on CPU and GPU (the per-tensor loop is several times slower on CPU)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps, fused=True)


def _resume_path(cfg: TrainConfig) -> Path | None:
    r = cfg.run.resume
    if not r:
        return None
    if r == "latest":
        found = ckpt.latest(cfg.run.out)
        if found is None:
            log.info("resume latest: no checkpoint in %s, starting fresh", cfg.run.out)
        return found
    return Path(r)


def _build(cfg: TrainConfig, state: dict | None) -> SarClipModel:
    siglip = cfg.loss.kind == "siglip"
    if state is not None:
        model = model_from_info(state["model_info"])
        model.load_state_dict(state["model"])
        if cfg.model.freeze_image:
            model.clip.lock_image_tower()
        if cfg.model.freeze_text:
            model.clip.lock_text_tower()
        if cfg.model.grad_checkpointing:
            model.set_grad_checkpointing(True)
        return model
    mean = std = None
    if not cfg.model.pretrained:
        mean, std = norm_stats(cfg.data.train, cfg.data.norm_sample_rows)
    model = build_model(cfg.model, mean=mean, std=std, siglip=siglip)
    i = model.info
    log.info("model %s, weights %s, input %d px, normalisation mean %.4f std %.4f (from the %s)", i.arch,
             cfg.model.pretrained or "random", i.tile_size, i.mean[0], i.std[0],
             "training shards" if i.norm_source == "shards" else "pretrained weights")
    return model


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class _Progress:
    """Progress on the main rank (loss, lr, samples/s, tiles/s): d2c.progress's bar with ETA on a terminal,
    a log line every few seconds off one; nothing on other ranks or with run.progress = false."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        from d2c.progress import Progress

        self.bar = Progress("train", total, enabled=None if enabled else False, unit="steps", logger=log,
                            start=start)
        self.bar.__enter__()

    def update(self, rec: dict[str, Any]) -> None:
        desc = (f"loss {rec['loss']:.4f} lr {rec['lr']:.2e} {rec['samples_per_s']:.1f} samples/s "
                f"{rec['tiles_per_s']:.1f} tiles/s")
        self.bar.update(rec["step"], desc)

    def close(self) -> None:
        self.bar.close()


def _state(model: SarClipModel, opt, cfg: TrainConfig, pos: dict[str, int], stats: dict[str, int]) -> dict:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "model_info": model.info.to_dict(),
            "config": cfg.to_json(), "rng": ckpt.rng_state(), "position": dict(pos), "stats": dict(stats)}


def run(config: TrainConfig, on_step: Callable[[int], None] | None = None) -> RunResult:
    """Train; ``on_step(step)`` is called after every optimizer step (progress hooks, tests)."""
    cfg = config
    if not cfg.data.train:
        raise UsageError("data.train: no training shards given")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = _device(cfg)
    dist = _init_dist(device)
    out = Path(cfg.run.out)
    resume = _resume_path(cfg)
    state = ckpt.load(resume) if resume else None
    torch.manual_seed(cfg.run.seed)
    model = _build(cfg, state).to(device)
    opt = make_optimizer(model, cfg)
    pos = {"step": 0, "epoch": 0, "batch": 0}
    stats = {"samples": 0, "decode_errors": 0}
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        pos, stats = dict(state["position"]), dict(state.get("stats", stats))
        ckpt.set_rng_state(state["rng"])
        log.info("resumed from %s at step %d", resume, pos["step"])
    import open_clip

    with quiet_open_clip():
        tokenizer = open_clip.get_tokenizer(model.info.arch)
    ds = ShardStream(cfg.data.train, batch_size=cfg.run.batch_size, transform=model.transform(),
                     seed=cfg.data.seed, rank=dist.rank, world_size=dist.world_size,
                     shuffle_buffer=cfg.data.shuffle_buffer, tail=cfg.data.tail, augment=cfg.data.augment,
                     caption_seed=cfg.data.caption_seed, tokenizer=tokenizer)
    if len(ds) < cfg.run.accum_steps:
        raise UsageError(f"data.train: {ds.num_rows} rows give {len(ds)} batches per epoch at batch size "
                         f"{cfg.run.batch_size} x {dist.world_size} ranks, fewer than run.accum_steps")
    steps_per_epoch = len(ds) // cfg.run.accum_steps
    total = cfg.run.epochs * steps_per_epoch
    total = min(total, cfg.run.max_steps) if cfg.run.max_steps else total
    ddp = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = make_loss(cfg.loss, dist.rank, dist.world_size)
    use_bf16 = cfg.run.precision == "bf16" or (cfg.run.precision == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    log_path = out / "log.jsonl"
    writer = None
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(cfg.to_json(), encoding="utf-8")
        if cfg.run.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"))
    result = RunResult(checkpoint=out / "checkpoints" / "final.pt", log=log_path, steps=pos["step"])
    bar = _Progress(cfg.run.progress and dist.main, total, pos["step"])
    ctx = {"model": model, "ddp": ddp, "opt": opt, "loss_fn": loss_fn, "autocast": autocast, "device": device,
           "total": total, "dist": dist, "writer": writer, "bar": bar, "result": result}
    try:
        _loop(cfg, ds, pos, stats, ctx, on_step)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if dist.main:
        last = ckpt.save(ckpt.step_path(out, pos["step"]), _state(model, opt, cfg, pos, stats))
        ckpt.link_final(last, result.checkpoint)
        ckpt.prune(out, cfg.run.keep_checkpoints, protect=last)
    if dist.world_size > 1:
        torch.distributed.barrier()
    result.steps, result.decode_errors, result.samples = pos["step"], stats["decode_errors"], stats["samples"]
    return result


def _loader(ds: ShardStream, workers: int):
    from torch.utils.data import DataLoader

    return DataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=False,
                      prefetch_factor=4 if workers else None)


def _loop(cfg: TrainConfig, ds: ShardStream, pos: dict[str, int], stats: dict[str, int], ctx: dict,
          on_step: Callable[[int], None] | None) -> None:
    model, ddp, opt, dist = ctx["model"], ctx["ddp"], ctx["opt"], ctx["dist"]
    accum, total = cfg.run.accum_steps, ctx["total"]
    usable = (len(ds) // accum) * accum  # micro-batches per epoch that form whole optimizer steps
    t0, seen, tiles = time.perf_counter(), 0, 0
    while pos["step"] < total and pos["epoch"] < cfg.run.epochs:
        if pos["batch"] >= usable:
            pos["epoch"], pos["batch"] = pos["epoch"] + 1, 0
            continue
        ds.set_epoch(pos["epoch"], pos["batch"])
        micro, losses = 0, []
        for batch in _loader(ds, cfg.data.workers):
            if pos["batch"] >= usable or pos["step"] >= total:
                break
            stats["decode_errors"] += int(batch["decode_errors"])
            if pos["step"] == 0 and micro == 0 and dist.main and not ctx.get("views_saved"):
                _save_views(cfg, model, batch)
                ctx["views_saved"] = True
            ctx["result"].rows.extend(batch["rows"].tolist())
            batch = _to(batch, ctx["device"])
            sync = micro == accum - 1
            with (ddp.no_sync() if (dist.world_size > 1 and not sync) else nullcontext()), ctx["autocast"]():
                img, txt, scale, bias = ddp(batch, batch["tokens"])
                loss = ctx["loss_fn"](img.float(), txt.float(), scale.float(), bias, text_ids=batch["text_ids"])
                (loss / accum).backward()
            losses.append(float(loss.detach()))
            micro += 1
            pos["batch"] += 1
            n = len(batch["texts"])
            stats["samples"] += n * dist.world_size
            seen, tiles = seen + n, tiles + int(batch["num_tiles"])
            if micro < accum:
                continue
            rec = _optim_step(cfg, model, opt, pos, losses, ctx)
            micro, losses = 0, []
            dt = max(time.perf_counter() - t0, 1e-9)
            rec.update(samples_per_s=seen * dist.world_size / dt, tiles_per_s=tiles * dist.world_size / dt,
                       epoch=pos["epoch"], decode_errors=stats["decode_errors"])
            _after_step(cfg, rec, pos, stats, ctx)
            if on_step is not None:
                on_step(pos["step"])
        if pos["step"] < total and pos["batch"] >= usable:
            pos["epoch"], pos["batch"] = pos["epoch"] + 1, 0


def _save_views(cfg: TrainConfig, model: SarClipModel, batch: dict[str, Any]) -> None:
    """``RUN/encoder_views.png``: the first batch as the encoder sees it (sarclip_train.encoder_views)."""
    from sarclip_train.encoder_views import save_encoder_views

    save_encoder_views(batch, Path(cfg.run.out) / "encoder_views.png", model.info.mean, model.info.std,
                       thumbnail=model.info.merger != "stitch")


def _optim_step(cfg: TrainConfig, model: SarClipModel, opt, pos: dict[str, int], losses: list[float],
                ctx: dict) -> dict[str, Any]:
    lr = lr_at(pos["step"], ctx["total"], cfg)
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    if cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        model.clip.logit_scale.clamp_(0, math.log(100))
    pos["step"] += 1
    loss = sum(losses) / len(losses)
    ctx["result"].losses.append(loss)
    return {"step": pos["step"], "loss": loss, "lr": lr, "gate": float(model.reader.gate.detach()) if model.reader else None}


def _after_step(cfg: TrainConfig, rec: dict[str, Any], pos: dict[str, int], stats: dict[str, int],
                ctx: dict) -> None:
    if not ctx["dist"].main:
        return
    ctx["bar"].update(rec)
    if cfg.run.log_every and (pos["step"] % cfg.run.log_every == 0 or pos["step"] == ctx["total"]):
        with open(ctx["result"].log, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        if ctx["writer"] is not None:
            for k in ("loss", "lr", "samples_per_s", "tiles_per_s"):
                ctx["writer"].add_scalar(f"train/{k}", rec[k], pos["step"])
    every = cfg.run.checkpoint_every
    if every and pos["step"] % every == 0 and pos["step"] < ctx["total"]:
        path = ckpt.save(ckpt.step_path(cfg.run.out, pos["step"]),
                         _state(ctx["model"], ctx["opt"], cfg, pos, stats))
        ckpt.prune(cfg.run.out, cfg.run.keep_checkpoints, protect=path)
