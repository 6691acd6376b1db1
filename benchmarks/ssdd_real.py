"""SARCLIP on real SAR: train on the official SSDD train split, evaluate on SSDD test (issue 17, item 3).

SSDD (``../shared/real-data/SSDD``: 928 train and 232 test images, one class, ship, DOTA labelTxt) is
assembled with ``mmsar build`` into train/test shards, SARCount (the test split) and SARCount-train (the
counting probe's training items); captions come from d2c's full template set. One AnyReader model is trained
with the demo's recipe (``sarclip_train.demo.RECIPE``, the backbone ``sarclip-tiny-rn``) and evaluated on
retrieval and counting, each metric beside its baselines on the same test items (random scores, the
popularity ranker, always the mean and always the most common count).

    .venv/bin/python benchmarks/ssdd_real.py --out /tmp/ssdd --steps 1200

Goal (within 30 minutes on a 2-core CPU): retrieval mean recall >= 3x random and count-probe MAE <= 0.7x the
MAE of always answering the most common training count. Results go to ``--out``/``ssdd_real.json`` and a
Markdown table on stdout; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from mmsar.build import INDEX

REPO = Path(__file__).resolve().parents[1]
SSDD = REPO.parent / "shared" / "real-data" / "SSDD"


def build_config(out: Path, ssdd: Path, max_side: int) -> Path:
    """The MMSAR build of SSDD: the official split kept (train -> train, test/all -> test)."""
    text = f"""
name = "MMSAR-SSDD"
seed = 0
out = {json.dumps(str(out / "mmsar"))}
[captions]
per_image = 5
seed = 0
[images]
mode = "embed"
max_side = {max_side}
[output]
shard_rows = 500
[chips]
size = 64
[[sources]]
name = "ssdd"
format = "dota"
class_map = "ssdd"
input = [
  {{ path = {json.dumps(str(ssdd / "train"))}, split = "train" }},
  {{ path = {json.dumps(str(ssdd / "test" / "all"))}, split = "test" }},
]
licence = "research use; cite SSDD (Zhang et al., Remote Sens. 2021)"
"""
    path = out / "mmsar_ssdd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def count_baselines(data: Path, true: list[int]) -> dict[str, float]:
    """MAE of always answering the training mean / the most common training count, on the test items."""
    train = np.array([it["count"] for it in json.loads((data / "sarcount_train" / INDEX).read_text())])
    y = np.asarray(true, dtype=float)
    values, freq = np.unique(train, return_counts=True)
    common = float(values[np.argmax(freq)])
    return {"always_mean": float(np.abs(y - train.mean()).mean()), "always_most_common": float(np.abs(y - common).mean()),
            "most_common_count": common, "train_mean": float(train.mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="work and result folder")
    ap.add_argument("--ssdd", type=Path, default=SSDD, help="the SSDD folder (train/, test/all/)")
    ap.add_argument("--steps", type=int, default=1200, help="optimizer steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-side", type=int, default=256, help="stored image side (AnyReader needs 2 x 64 px)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not (args.ssdd / "train").is_dir():
        raise SystemExit(f"{args.ssdd}: SSDD not found (expected train/ and test/all/)")

    from mmsar.build import build
    from sarclip_train.demo import recipe_config
    from sarclip_train.eval import evaluate
    from sarclip_train.train import run

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t = time.perf_counter()
    data = out / "mmsar"
    if not (data / "train").is_dir():
        build(build_config(out, args.ssdd, args.max_side), workers=2)
    times["build_s"] = time.perf_counter() - t

    cfg = recipe_config(data / "train", out / "run", steps=args.steps, anyreader=True, seed=args.seed)
    cfg.run.threads = args.threads
    t = time.perf_counter()
    trained = run(cfg)
    times["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    res = evaluate(str(trained.checkpoint), data, "retrieval,counting", out / "eval", device="cpu")
    times["eval_s"] = time.perf_counter() - t

    retr = res["results"]["retrieval"]
    probe = res["results"]["counting"]["metrics"]["regression_probe"]
    counts = count_baselines(data, probe["true"])
    summary = {
        "steps": trained.steps, "final_loss": trained.losses[-1], "times": times,
        "retrieval_mean_recall": retr["metrics"]["mean_recall"],
        "retrieval_baselines": retr.get("baselines", {}),
        "count_probe_mae": probe["mae"], "count_baselines": counts,
        "count_probe_vs_most_common": probe["mae"] / counts["always_most_common"],
    }
    rb = summary["retrieval_baselines"]
    random_mr = (rb.get("random") or {}).get("mean_recall") if isinstance(rb.get("random"), dict) else rb.get("mean_recall_random")
    if random_mr:
        summary["retrieval_vs_random"] = summary["retrieval_mean_recall"] / random_mr
    (out / "ssdd_real.json").write_text(json.dumps(summary, indent=2, default=float), encoding="utf-8")
    print(json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
