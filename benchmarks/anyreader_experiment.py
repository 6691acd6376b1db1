"""The AnyReader experiment (issues 10 and 17): does tiling large scenes help a small CLIP see small targets?

Large synthetic SAR scenes with small ships (``mmsar.synth``), assembled into MMSAR (``mmsar.build``), and
three arms trained with the demo's CPU recipe, the same backbone, data, steps and seeds:

- ``anyreader``: SARCLIP's AnyReader, at most ``--max-tiles`` tiles of the encoder's size plus a thumbnail;
- ``anyreader-zero``: the same with the ``zero_out`` merger (a zero-initialised output layer in place of
  the scalar gate, ``model.merger``);
- ``anyreader-stitch``: the ``stitch`` merger (ResNet: the tiles' feature maps joined in their grid and read
  by the encoder's own attention pool; no thumbnail is encoded);
- ``plain``: plain letterbox resize to the encoder's own size S;
- ``plain-eq``: plain letterbox resize to a larger size E whose encoder FLOPs (counted by torch's
  ``FlopCounterMode``) are nearest AnyReader's (its mean tile count on the training images, plus the thumbnail);
- ``plain-eq-tiles``: the same for the stitch merger's compute (the tiles alone, no thumbnail).

Pick the scene regime first with ``benchmarks/anyreader_regime.py`` (where targets vanish at S but survive
in the tiles). Each run is scored with ``sarclip_train.eval.evaluate`` on retrieval (test split) and counting
(SARCount prompts and the ridge count probe), beside the same items' baselines. The script writes
``results.json`` and ``results.md`` (mean ± 95% t interval over seeds, and AnyReader minus each plain arm
paired by seed, with its standard error). Runs already in ``results.json`` are kept and skipped, so the
arms and seeds can be run one invocation at a time.

    .venv/bin/python benchmarks/anyreader_experiment.py --out /tmp/anyreader --gsd 10 --size-range 512:1024
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


def encoder_flops(arch: str, image_size: int) -> float:
    """FLOPs of one forward pass of the image tower at ``image_size``, counted by torch's own
    ``FlopCounterMode`` (convolutions and matrix products; any architecture, ViT or ResNet).

    Why train mode and the math attention kernel: in eval mode ``nn.MultiheadAttention`` takes a fused
    fast path the counter does not see, and the fused attention kernels hide the two attention products
    (QK^T and AV, quadratic in tokens); counted this way, a ViT's cost grows as it does."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from sarclip_train.model import create_clip

    visual = create_clip(arch, image_size=image_size).visual.train()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        visual(torch.zeros(1, 3, image_size, image_size))
    return float(counter.get_total_flops())


def _vision_cfg(arch: str) -> dict[str, Any]:
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise SystemExit(f"{arch}: not an open_clip architecture (or a shipped config)")
    return dict(cfg["vision_cfg"])


def size_step(arch: str) -> int:
    """Input sizes to try: multiples of the patch (ViT); of 16 for a ResNet (its pooling floors odd sizes)."""
    v = _vision_cfg(resolve(arch))
    return int(v.get("patch_size", 0)) or 16


def resolve(arch: str) -> str:
    from sarclip_train.model import resolve_arch

    return resolve_arch(arch)


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


def equal_compute_size(arch: str, tile: int, tiles: float, thumbnail: bool = True) -> tuple[int, float, float]:
    """The plain-resize input size whose encoder FLOPs are nearest AnyReader's (``tiles`` tiles, plus the
    thumbnail unless the merger encodes none): (size, AnyReader FLOPs, that size's FLOPs)."""
    step = size_step(arch)
    target = (tiles + (1.0 if thumbnail else 0.0)) * encoder_flops(arch, tile)
    costs = {s: encoder_flops(arch, s) for s in range(tile, 4 * tile + 1, step)}
    best = min(costs, key=lambda s: abs(costs[s] - target))
    return best, target, costs[best]


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
                   workers=args.workers, aspect=args.aspect)
    t_synth = time.perf_counter() - t
    t = time.perf_counter()
    result = build(build_config(args, out, out / "synth"), workers=args.workers)
    info = {"scenes": res.images, "instances": res.instances, "counts": res.counts,
            "synth_s": round(t_synth, 1), "build_s": round(time.perf_counter() - t, 1),
            "splits": result.stats.get("splits") if isinstance(result.stats, dict) else None}
    (out / "data.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return result.out


def train_config(args: argparse.Namespace, data: Path, run_dir: Path, seed: int, anyreader: bool, size: int,
                 merger: str = "gate"):
    """The demo's CPU recipe (``sarclip_train.demo.recipe_config``), one arm: only the view differs."""
    from sarclip_train.demo import recipe_config

    cfg = recipe_config(data / "train", run_dir, steps=args.steps, anyreader=anyreader, seed=seed,
                        batch_size=args.batch_size, max_tiles=args.max_tiles)
    cfg.model.arch = args.arch
    cfg.model.image_size = size
    cfg.model.merger = merger
    cfg.optim.lr = args.lr
    cfg.run.device = args.device
    cfg.run.threads = args.threads
    return cfg


def trained_arm(args: argparse.Namespace, data: Path, run_dir: Path, seed: int, anyreader: bool, size: int,
                merger: str = "gate") -> tuple[Path, float, list[float]]:
    """Train one arm, or reuse its finished run (``final.pt`` and ``log.jsonl`` already in ``run_dir``):
    (checkpoint, training seconds (NaN when reused without a record), the loss of every step)."""
    from sarclip_train.train import run

    final, seconds = run_dir / "checkpoints" / "final.pt", run_dir / "train_seconds.txt"
    if not final.is_file():
        t = time.perf_counter()
        run(train_config(args, data, run_dir, seed, anyreader, size, merger))
        seconds.write_text(f"{time.perf_counter() - t:.1f}\n", encoding="utf-8")
    losses = [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines() if line]
    return final, float(seconds.read_text()) if seconds.is_file() else float("nan"), losses


def summarise(res: dict[str, Any]) -> dict[str, float]:
    r = res["results"]
    ret = r["retrieval"]["metrics"]
    cnt = r["counting"]["metrics"]
    probe = cnt.get("regression_probe", {})
    return {
        "mean_recall": ret["mean_recall"],
        "probe_mae": probe.get("mae", float("nan")), "probe_acc": probe.get("acc1", float("nan")),
        "count_acc_words": cnt["words"]["acc1"], "count_mae_words": cnt["words"]["mae"],
    }


def baselines(res: dict[str, Any]) -> dict[str, float]:
    """The same test items' baselines (identical in every run: they depend on the data only)."""
    r = res["results"]
    rb, cb = r["retrieval"]["baselines"], r["counting"]["baselines"]
    return {"retrieval random": rb["random"]["mean_recall"], "retrieval popularity": rb["popularity"]["mean_recall"],
            "count MAE always-the-mean": cb["always_mean"]["mae"],
            "count MAE always-the-most-common": cb["always_most_common"]["mae"],
            "count acc always-the-most-common": cb["always_most_common"]["acc1"]}


COLUMNS = [("mean_recall", "retrieval mean recall", True), ("probe_mae", "count-probe MAE", False),
           ("probe_acc", "count-probe acc", True), ("count_acc_words", "count prompt acc (words)", True),
           ("count_mae_words", "count prompt MAE (words)", False)]


def mean_se_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, standard error and the half-width of the 95% t interval over seeds."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return float(values.mean()), float("nan"), float("nan")
    se = float(values.std(ddof=1) / np.sqrt(n))
    return float(values.mean()), se, float(stats.t.ppf(0.975, n - 1) * se)


def per_arm(runs: list[dict[str, Any]], arm: str, key: str) -> dict[int, float]:
    return {r["seed"]: r["metrics"][key] for r in runs if r["arm"] == arm}


def table(runs: list[dict[str, Any]], arms: list[str]) -> str:
    """Mean ± 95% CI over seeds (t interval), one row per arm."""
    head = "| arm | seeds | train s | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for arm in arms:
        rs = [r for r in runs if r["arm"] == arm]
        if not rs:
            continue
        cells = []
        for key, _, _ in COLUMNS:
            m, _, ci = mean_se_ci(np.array([r["metrics"][key] for r in rs], dtype=float))
            cells.append(f"{m:.3f} ± {ci:.3f}")
        secs = [r["train_s"] for r in rs if r["train_s"] is not None and not np.isnan(r["train_s"])]
        lines.append(f"| {arm} | {len(rs)} | {np.mean(secs) if secs else float('nan'):.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differences(runs: list[dict[str, Any]], ref: str, others: list[str]) -> str:
    """``ref`` minus each other arm, paired by seed: mean, standard error, and whether ``ref`` is ahead by
    more than two standard errors (for MAE, ahead means lower)."""
    lines = ["| comparison | metric | difference (mean ± SE) | ahead by > 2 SE |", "|---|---|---|---|"]
    for other in others:
        for key, label, higher in COLUMNS:
            a, b = per_arm(runs, ref, key), per_arm(runs, other, key)
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            d = np.array([a[s] - b[s] for s in seeds], dtype=float)
            m, se, _ = mean_se_ci(d)
            ahead = (m > 2 * se) if higher else (m < -2 * se)
            lines.append(f"| {ref} - {other} | {label} | {m:+.4f} ± {se:.4f} | {'yes' if ahead else 'no'} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="example: benchmarks/anyreader_experiment.py --out /tmp/arx --gsd 10 "
                                       "--size-range 512:1024 --seeds 0,1,2")
    p.add_argument("--out", type=Path, default=Path("anyreader-experiment"))
    p.add_argument("--images", type=int, default=2000, help="synthetic scenes")
    p.add_argument("--size-range", default="512:1024", help="scene side range in pixels, LO:HI")
    p.add_argument("--gsd", type=float, default=10.0, help="metres per pixel (fixes ship sizes in pixels)")
    p.add_argument("--aspect", type=float, default=None,
                   help="strip-like scenes: long-to-short side ratios up to this (default near-square)")
    p.add_argument("--classes", default="ship")
    p.add_argument("--max-objects", type=int, default=12)
    p.add_argument("--max-side", type=int, default=256, help="stored image side (>= tiles x encoder size)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--seeds", default="0,1,2", help="training seeds (model init and data order)")
    p.add_argument("--steps", type=int, default=450)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--arch", default="sarclip-tiny-rn")
    p.add_argument("--max-tiles", type=int, default=4)
    p.add_argument("--eq-size", type=int, default=0, help="size of the equal-compute arm (0 = from FLOPs)")
    p.add_argument("--arms", default="anyreader,plain,plain-eq")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes for synth and build")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    from sarclip_train.eval import evaluate

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = prepare(args, out)
    size = _vision_cfg(resolve(args.arch))["image_size"]
    tile = int(size[0] if isinstance(size, (list, tuple)) else size)
    tiles = mean_tiles(data, tile, args.max_tiles, args.max_side)
    eq, target, got = equal_compute_size(args.arch, tile, tiles)
    eq = args.eq_size or eq
    eq_tiles, target_tiles, _ = equal_compute_size(args.arch, tile, tiles, thumbnail=False)
    arms = {"anyreader": (True, 0, "gate"), "anyreader-zero": (True, 0, "zero_out"),
            "anyreader-stitch": (True, 0, "stitch"), "plain": (False, tile, "gate"),
            "plain-eq": (False, eq, "gate"), "plain-eq-tiles": (False, eq_tiles, "gate")}
    names = {"anyreader": f"anyreader ({args.max_tiles} tiles + thumb @{tile})",
             "anyreader-zero": f"anyreader, zero_out merger ({args.max_tiles} tiles + thumb @{tile})",
             "anyreader-stitch": f"anyreader, stitch merger ({args.max_tiles} tiles @{tile}, no thumb)",
             "plain": f"plain @{tile}", "plain-eq": f"plain @{eq} (equal compute)",
             "plain-eq-tiles": f"plain @{eq_tiles} (equal compute, tiles only)"}
    compute = {"tile": tile, "mean_tiles": tiles, "anyreader_mflops": target / 1e6, "eq_size": eq,
               "eq_mflops": encoder_flops(args.arch, eq) / 1e6, "plain_mflops": encoder_flops(args.arch, tile) / 1e6,
               "stitch_mflops": target_tiles / 1e6, "eq_tiles_size": eq_tiles,
               "eq_tiles_mflops": encoder_flops(args.arch, eq_tiles) / 1e6}
    log.info("compute per image: %s", compute)
    results_file = out / "results.json"
    previous = json.loads(results_file.read_text()) if results_file.is_file() else {}
    runs: list[dict[str, Any]] = previous.get("runs", [])
    base: dict[str, float] = previous.get("baselines", {})
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm in args.arms.split(","):
            anyreader, size, merger = arms[arm]
            run_dir = out / "runs" / f"{arm}-seed{seed}"
            if any(r["arm"] == names[arm] and r["seed"] == seed for r in runs):
                log.info("%s seed %d: already in %s", arm, seed, results_file)
                continue
            checkpoint, train_s, losses = trained_arm(args, data, run_dir, seed, anyreader, size, merger)
            res = evaluate(str(checkpoint), data, "retrieval,counting", run_dir / "eval",
                           seed=0, device="cpu" if args.device == "cpu" else None)
            base = baselines(res)
            runs.append({"arm": names[arm], "seed": seed, "train_s": train_s, "metrics": summarise(res),
                         "first_loss": losses[0], "last_loss": float(np.mean(losses[-20:]))})
            log.info("%s seed %d: %s (%.0f s)", arm, seed, runs[-1]["metrics"], train_s)
            results_file.write_text(json.dumps({"args": vars(args) | {"out": str(out)}, "compute": compute,
                                                "baselines": base, "runs": runs}, indent=2))
    order = [n for n in names.values() if any(r["arm"] == n for r in runs)]
    md = "\n\n".join([
        table(runs, order),
        "Baselines on the same test items: " + ", ".join(f"{k} {v:.4f}" for k, v in base.items()),
        *(differences(runs, names[ref], [n for n in order if not n.startswith("anyreader")])
          for ref in ("anyreader", "anyreader-zero", "anyreader-stitch") if names[ref] in order),
    ])
    (out / "results.md").write_text(md + "\n", encoding="utf-8")
    print(md)
    print(f"\ncompute per image (MFLOPs): {json.dumps(compute)}; total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
