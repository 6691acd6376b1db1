"""The AnyReader experiment (issue 10): does tiling large scenes help a small CLIP see small targets?

Large synthetic SAR scenes with small ships (``mmsar.synth``), assembled into MMSAR (``mmsar.build``), and
three arms trained with the same backbone, data, steps and seeds:

- ``anyreader``: SARCLIP's AnyReader, at most ``--max-tiles`` tiles of the encoder's size plus a thumbnail;
- ``plain-S``: plain letterbox resize to the encoder's own size S;
- ``plain-E``: plain letterbox resize to a larger size E chosen so the encoder's FLOPs per image match
  AnyReader's (its mean tile count on the training images, plus the thumbnail).

Each run is scored with ``sarclip_train.eval.evaluate`` on counting (SARCount, words and digits prompts, plus the
ridge count probe) and retrieval (test split); the script prints a Markdown table of mean and spread over seeds
and writes ``results.json`` and ``results.md`` to ``--out``.

    .venv/bin/python benchmarks/anyreader_experiment.py --out /tmp/anyreader --seeds 0,1,2 --steps 120
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("anyreader_experiment")


def vit_flops(arch: str, image_size: int) -> float:
    """Multiply-adds x 2 of one forward pass of the open_clip ViT image tower at ``image_size``:
    patch embedding, then per layer 24*N*D^2 (QKV, output projection, MLP with ratio 4) + 4*N^2*D (QK^T and
    attention x V), with N = patches + class token. Norms, softmax and the projection are left out."""
    from sarclip_train.model import resolve_arch

    cfg = _vision_cfg(resolve_arch(arch))
    d, layers, p = cfg["width"], cfg["layers"], cfg["patch_size"]
    n = (image_size // p) ** 2 + 1
    patch = 2.0 * (n - 1) * 3 * p * p * d
    return patch + layers * (24.0 * n * d * d + 4.0 * n * n * d)


def _vision_cfg(arch: str) -> dict[str, Any]:
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise SystemExit(f"{arch}: not an open_clip architecture (or a shipped config)")
    v = dict(cfg["vision_cfg"])
    v.setdefault("patch_size", 16)
    return v


def mean_tiles(data: Path, tile: int, max_tiles: int, max_side: int) -> float:
    """Mean AnyReader tile count over the stored training images (originals reduced to ``max_side``)."""
    from d2c.shards import iter_rows
    from sarclip_train.anyreader import choose_grid

    counts = []
    for row in iter_rows(data / "train", columns=["width", "height"]):
        w, h = int(row["width"]), int(row["height"])
        s = min(1.0, max_side / max(w, h)) if max_side else 1.0
        r, c = choose_grid(max(1, round(w * s)), max(1, round(h * s)), tile, max_tiles)
        counts.append(r * c)
    return float(np.mean(counts))


def equal_compute_size(arch: str, tile: int, tiles: float) -> tuple[int, float, float]:
    """The input size (a multiple of the patch size) whose FLOPs best match ``tiles`` tiles + 1 thumbnail."""
    from sarclip_train.model import resolve_arch

    p = _vision_cfg(resolve_arch(arch))["patch_size"]
    target = (tiles + 1.0) * vit_flops(arch, tile)
    best = min(range(tile, 8 * tile + 1, p), key=lambda s: abs(vit_flops(arch, s) - target))
    return best, target, vit_flops(arch, best)


def build_config(args: argparse.Namespace, out: Path, synth: Path) -> Path:
    """An ``mmsar.toml`` for the synthetic source (the same shape as the demo's)."""
    lines = [
        'name = "MMSAR-anyreader-experiment"', "seed = 0", f"out = {json.dumps(str(out / 'mmsar'))}",
        "[captions]\nper_image = 5\nseed = 0",
        f'[images]\nmode = "embed"\nmax_side = {args.max_side}',
        "[output]\nshard_rows = 500",
        "[splits]\nratios = [0.7, 0.1, 0.2]\nseed = 0",
        "[chips]\nsize = 32\ncontext = 0.5\nmin_crop = 16",
        "[[sources]]", 'name = "synthetic"', 'format = "dota"', f"input = {json.dumps(str(synth))}",
        'licence = "CC0-1.0"',
    ]
    path = out / "mmsar.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def prepare(args: argparse.Namespace, out: Path) -> Path:
    """Synthesise and build once; a second run with the same ``--out`` reuses the build."""
    from mmsar.build import build
    from mmsar.synth import generate

    built = out / "mmsar"
    if (built / "test").is_dir() and (out / "data.json").is_file():
        log.info("reusing %s", built)
        return built
    lo, hi = (int(x) for x in args.size_range.split(":"))
    t = time.perf_counter()
    res = generate(out / "synth", images=args.images, size_range=(lo, hi), formats=("dota",), seed=args.data_seed,
                   classes=tuple(args.classes.split(",")), max_objects=args.max_objects, gsd=args.gsd,
                   workers=args.workers)
    t_synth = time.perf_counter() - t
    t = time.perf_counter()
    result = build(build_config(args, out, out / "synth"), workers=args.workers)
    info = {"scenes": res.images, "instances": res.instances, "counts": res.counts,
            "synth_s": round(t_synth, 1), "build_s": round(time.perf_counter() - t, 1),
            "splits": result.stats.get("splits") if isinstance(result.stats, dict) else None}
    (out / "data.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return result.out


def train_config(args: argparse.Namespace, data: Path, run_dir: Path, seed: int, anyreader: bool, size: int):
    from sarclip_train.config import TrainConfig

    cfg = TrainConfig()
    cfg.data.train = [str(data / "train")]
    cfg.data.workers = 1
    cfg.data.seed = seed
    cfg.model.arch = args.arch
    cfg.model.anyreader = anyreader
    cfg.model.image_size = size
    cfg.model.max_tiles = args.max_tiles
    cfg.optim.lr = args.lr
    cfg.optim.warmup_steps = max(1, args.steps // 10)
    cfg.run.out = str(run_dir)
    cfg.run.batch_size = args.batch_size
    cfg.run.epochs = 10_000
    cfg.run.max_steps = args.steps
    cfg.run.seed = seed
    cfg.run.device = args.device
    cfg.run.progress = False
    cfg.run.threads = args.threads
    return cfg


def summarise(res: dict[str, Any]) -> dict[str, float]:
    r = res["results"]
    ret = r["retrieval"]["metrics"]
    cnt = r["counting"]["metrics"]
    probe = cnt.get("regression_probe", {})
    return {
        "count_acc_words": cnt["words"]["acc1"], "count_mae_words": cnt["words"]["mae"],
        "count_acc_digits": cnt["digits"]["acc1"], "count_mae_digits": cnt["digits"]["mae"],
        "probe_mae": probe.get("mae", float("nan")), "probe_acc": probe.get("acc1", float("nan")),
        "mean_recall": ret["mean_recall"],
    }


COLUMNS = [("count_acc_words", "count acc (words)"), ("count_mae_words", "count MAE (words)"),
           ("count_acc_digits", "count acc (digits)"), ("count_mae_digits", "count MAE (digits)"),
           ("probe_mae", "count probe MAE"), ("probe_acc", "count probe acc"),
           ("mean_recall", "retrieval mean recall")]


def table(runs: list[dict[str, Any]], arms: list[str]) -> str:
    """Mean ± sample standard deviation over seeds, one row per arm."""
    head = "| arm | seeds | train s | " + " | ".join(label for _, label in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for arm in arms:
        rs = [r for r in runs if r["arm"] == arm]
        if not rs:
            continue
        cells = []
        for key, _ in COLUMNS:
            v = np.array([r["metrics"][key] for r in rs], dtype=float)
            sd = v.std(ddof=1) if len(v) > 1 else 0.0
            cells.append(f"{v.mean():.3f} ± {sd:.3f}")
        secs = np.mean([r["train_s"] for r in rs])
        lines.append(f"| {arm} | {len(rs)} | {secs:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("anyreader-experiment"))
    p.add_argument("--images", type=int, default=240, help="synthetic scenes")
    p.add_argument("--size-range", default="1024:2048", help="scene side range in pixels, LO:HI")
    p.add_argument("--gsd", type=float, default=3.0, help="metres per pixel (fixes ship sizes in pixels)")
    p.add_argument("--classes", default="ship")
    p.add_argument("--max-objects", type=int, default=12)
    p.add_argument("--max-side", type=int, default=512, help="stored image side (>= tiles x encoder size)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--seeds", default="0,1,2", help="training seeds (model init and data order)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--arch", default="sarclip-tiny-vit")
    p.add_argument("--max-tiles", type=int, default=4)
    p.add_argument("--eq-size", type=int, default=0, help="size of the equal-compute arm (0 = from FLOPs)")
    p.add_argument("--arms", default="anyreader,plain,plain-eq")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes for synth and build")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    from sarclip_train.eval import evaluate
    from sarclip_train.model import resolve_arch
    from sarclip_train.train import run

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = prepare(args, out)
    size = _vision_cfg(resolve_arch(args.arch))["image_size"]
    tile = int(size[0] if isinstance(size, (list, tuple)) else size)
    tiles = mean_tiles(data, tile, args.max_tiles, args.max_side)
    eq, target, got = equal_compute_size(args.arch, tile, tiles)
    eq = args.eq_size or eq
    arms = {"anyreader": (True, 0), "plain": (False, tile), "plain-eq": (False, eq)}
    names = {"anyreader": f"anyreader ({args.max_tiles} tiles + thumb @{tile})", "plain": f"plain @{tile}",
             "plain-eq": f"plain @{eq} (equal compute)"}
    compute = {"tile": tile, "mean_tiles": tiles, "anyreader_gflops": target / 1e9, "eq_size": eq,
               "eq_gflops": vit_flops(args.arch, eq) / 1e9, "plain_gflops": vit_flops(args.arch, tile) / 1e9}
    log.info("compute per image: %s", compute)
    runs: list[dict[str, Any]] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm in args.arms.split(","):
            anyreader, size = arms[arm]
            run_dir = out / "runs" / f"{arm}-seed{seed}"
            t = time.perf_counter()
            trained = run(train_config(args, data, run_dir, seed, anyreader, size))
            train_s = time.perf_counter() - t
            res = evaluate(str(trained.checkpoint), data, "retrieval,counting", run_dir / "eval",
                           seed=0, device="cpu" if args.device == "cpu" else None)
            runs.append({"arm": names[arm], "seed": seed, "train_s": train_s, "metrics": summarise(res),
                         "first_loss": trained.losses[0], "last_loss": float(np.mean(trained.losses[-5:]))})
            log.info("%s seed %d: %s (%.0f s)", arm, seed, runs[-1]["metrics"], train_s)
            (out / "results.json").write_text(json.dumps({"args": vars(args) | {"out": str(out)},
                                                          "compute": compute, "runs": runs}, indent=2))
    md = table(runs, [names[a] for a in args.arms.split(",")])
    (out / "results.md").write_text(md + "\n", encoding="utf-8")
    print(md)
    print(f"\ncompute per image (GFLOPs): {json.dumps(compute)}; total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
