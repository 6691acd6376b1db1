"""Training throughput: samples/s and tiles/s of AnyReader vs plain resize at the same backbone, and the
loader's own samples/s at the demo resolution (target: >= 3x what a training step consumes).

    python benchmarks/bench_train.py                # tiny demo model on this machine's CPU
    python benchmarks/bench_train.py --arch ViT-B-16 --device cuda --batch 64 --no-write

Writes the figures and the machine under the "Training" heading of docs/benchmarks.md (other sections kept).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def make_data(work: Path, images: int, size: int) -> Path:
    from d2c.convert import convert
    from d2c.options import ConvertOptions
    from mmsar.synth import generate

    raw = generate(work / "raw", images=images, size=size, formats=("coco",), seed=0)
    options = ConvertOptions(format="coco", images_mode="embed", seed=0)
    return convert(raw.files["coco"], work / "shards", options).out


def loader_rate(shards: Path, model, batch: int, workers: int, batches: int) -> float:
    """Batches produced by the real loader (decode, tiling, captions, tokenising), samples/s."""
    import open_clip
    from torch.utils.data import DataLoader

    from sarclip_train.data import ShardStream

    ds = ShardStream([str(shards)], batch_size=batch, transform=model.transform(), tail="wrap",
                     tokenizer=open_clip.get_tokenizer(model.info.arch))
    loader = DataLoader(ds, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None)
    n, t0 = 0, None
    for i, b in enumerate(loader):
        if i == 1:
            t0, n = time.perf_counter(), 0  # skip worker start-up
        n += len(b["texts"])
        if i >= batches:
            break
    return n / (time.perf_counter() - t0)


def step_flops(model, n_images: int, batch: int) -> float:
    """Matmul FLOPs of one training step (6 x params x tokens, forward + backward), both towers."""
    clip = model.clip
    vis = sum(p.numel() for p in clip.visual.parameters())
    grid = clip.visual.grid_size
    v_tokens = grid[0] * grid[1] + 1
    txt = sum(p.numel() for n, p in clip.named_parameters() if not n.startswith("visual.")
              and "token_embedding" not in n)
    return 6.0 * (vis * v_tokens * n_images + txt * clip.context_length * batch)


def step_rate(shards: Path, model, batch: int, steps: int, device: torch.device,
              bf16: bool) -> tuple[float, float, float]:
    """Training steps on one pre-loaded batch (loader excluded): samples/s, tiles/s, FLOP/s."""
    import open_clip

    from sarclip_train.config import LossConfig
    from sarclip_train.data import ShardStream
    from sarclip_train.loss import make_loss

    ds = ShardStream([str(shards)], batch_size=batch, transform=model.transform(), tail="wrap",
                     tokenizer=open_clip.get_tokenizer(model.info.arch))
    b = next(iter(ds))
    b = {k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    loss_fn = make_loss(LossConfig())

    def one() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            img, txt, scale, bias = model(b, b["tokens"])
            loss = loss_fn(img.float(), txt.float(), scale.float(), bias, text_ids=b["text_ids"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    flops = step_flops(model, int(b["num_tiles"]), batch)
    return steps * batch / dt, steps * int(b["num_tiles"]) / dt, steps * flops / dt


def _fmt(v: float, spec: str = ".1f", unit: str = "") -> str:
    return "-" if v != v else f"{v:{spec}}{unit}"  # NaN (not measured) -> "-"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}"


def write_section(md: Path, body: str) -> None:
    text = md.read_text(encoding="utf-8") if md.exists() else "# Benchmarks\n"
    section = f"## Training\n\n{body.strip()}\n"
    pattern = re.compile(r"^## Training\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    md.write_text(text, encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="sarclip-tiny-vit")
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--size", type=int, default=512, help="synthetic scene size (demo resolution)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-tiles", type=int, default=6)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--tile-cap", type=int, default=0)
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="for MFU (H100/H200 dense bf16: 989)")
    p.add_argument("--skip-loader", action="store_true")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from sarclip_train.config import ModelConfig
    from sarclip_train.model import build_model

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_data(Path(tmp), args.images, args.size)
        rows = []
        for anyreader in (True, False):
            torch.manual_seed(0)
            mcfg = ModelConfig(arch=args.arch, anyreader=anyreader, max_tiles=args.max_tiles,
                               tile_cap=args.tile_cap, grad_checkpointing=args.grad_checkpointing)
            model = build_model(mcfg, mean=[0.2] * 3, std=[0.2] * 3)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sps, tps, fps = step_rate(shards, model, args.batch, args.steps, device, args.bf16)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
            lps = float("nan") if args.skip_loader else loader_rate(shards, model, args.batch, args.workers, 6)
            mfu = fps / (args.peak_tflops * 1e12) if device.type == "cuda" else float("nan")
            rows.append((anyreader, sps, tps, lps, peak, mfu))
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    table = ["| reader | train samples/s | train tiles/s | loader samples/s | loader / step | peak GiB | MFU |",
             "|---|---|---|---|---|---|---|"]
    for anyreader, sps, tps, lps, peak, mfu in rows:
        name = f"AnyReader (max_tiles {args.max_tiles})" if anyreader else "plain resize"
        table.append(f"| {name} | {sps:.1f} | {tps:.1f} | {_fmt(lps)} | {_fmt(lps / sps, '.1f', 'x')} | "
                     f"{_fmt(peak)} | {_fmt(mfu * 100, '.1f', '%')} |")
    body = (f"`python benchmarks/bench_train.py` ({args.arch}, batch {args.batch}, {args.size} px synthetic "
            f"scenes, {args.workers} loader workers, {args.device}{' bf16' if args.bf16 else ' fp32'}).\n"
            f"Machine: {machine()}.\n\n" + "\n".join(table) + "\n\n"
            "Training figures time forward + backward + AdamW on a pre-loaded batch; tiles count the thumbnail "
            "too. The loader figure is the real streaming loader (PNG decode, tiling, caption choice, "
            "tokenising) on its own; the target is >= 3x the step's consumption. If decoding large scenes "
            "limits it, convert with `--max-side`.\n")
    print(body)
    if not args.no_write:
        write_section(REPO / "docs" / "benchmarks.md", body)


if __name__ == "__main__":
    main()
