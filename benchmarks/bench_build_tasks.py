"""Benchmark ``mmsar build`` in tasks of N scenes (issue 20): one source of ``--scenes`` COCO images,
built with ``--workers 1``, ``--workers 2`` and a 2-worker Dask
LocalCluster, each into a fresh output and staging folder, in one run; the outputs are checked byte for
byte (all but ``_tasks.json``). ``--images none``: annotation-only (no image files: sizes come from the
JSON; measures staging, dedupe, splits and writing without pixels); ``--images tiny`` (default): a
256 px JPEG per scene (smooth noise, 3-6 KB, so every scene is distinct), which the build hashes
(sha256, perceptual hash) and cuts chips from, as it does real images. Prints JSON: the machine, load averages, wall seconds per case, speedups
against ``--workers 1``, and per-task figures (from ``_tasks.json``) for the SARDet-100K estimate.

    flock -x /work/bench.lock .venv/bin/python benchmarks/bench_build_tasks.py --scenes 20000

``--repeat R`` runs the cases R times in turn: on a shared machine whose speed drifts by 10% within minutes,
the median of the per-round ratios (each against ``--workers 1`` of the same round) is the figure to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from _common import cpu_model  # benchmarks/_common.py (this folder is on sys.path)

CLASSES = ("ship", "aircraft", "car", "tank", "bridge", "harbor")
CONFIG = """
name = "bench"
seed = 1
[images]
mode = "{mode}"
[captions]
per_image = 2
[[sources]]
name = "big"
format = "coco"
input = {{path = "{coco}"{images}}}
licence = "CC0-1.0"
"""


def make_images(folder: Path, scenes: int, side: int, seed: int = 0) -> None:
    """One JPEG per scene: 8 x 8 seeded noise upscaled to ``side`` px (small files, distinct hashes)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(scenes):
        small = Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8))
        small.resize((side, side), Image.BILINEAR).save(folder / f"scene_{i:06d}.jpg", quality=75)


def make_coco(path: Path, scenes: int, side: int, seed: int = 0) -> int:
    """``scenes`` images of ``side`` px with 1-6 boxes each (seeded); returns the instance count."""
    rng = random.Random(seed)
    images, anns = [], []
    lo, hi = side / 100, side * 0.11
    for i in range(scenes):
        images.append({"id": i + 1, "file_name": f"scene_{i:06d}.jpg", "width": side, "height": side})
        for _ in range(rng.randint(1, 6)):
            x, y = rng.uniform(0, side * 0.85), rng.uniform(0, side * 0.85)
            w, h = rng.uniform(lo, hi), rng.uniform(lo, hi)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": rng.randint(1, len(CLASSES)),
                         "bbox": [round(x, 1), round(y, 1), round(w, 1), round(h, 1)], "area": w * h, "iscrowd": 0})
    cats = [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return len(anns)


def tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "_tasks.json"}


def run_case(cfg_path: Path, out: Path, **opts: Any) -> dict[str, Any]:
    from mmsar.build import build
    from mmsar.config import load_config
    from mmsar.options import BuildOptions

    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".work"), ignore_errors=True)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    result = build(load_config(cfg_path, out=out), BuildOptions(**opts))
    wall = time.perf_counter() - t0
    tasks = result.tasks
    staging = [t["seconds"] for t in tasks["staging"]]
    return {"options": opts, "wall_s": round(wall, 2), "load_before": [round(x, 2) for x in load0],
            "load_after": [round(x, 2) for x in os.getloadavg()], "phases_s": tasks["seconds"],
            "tasks": len(staging), "task_s_sum": round(sum(staging), 2),
            "task_s_mean": round(sum(staging) / max(len(staging), 1), 3), "task_s_max": round(max(staging, default=0), 3),
            "rows": result.manifest["rows"], "unit_scenes": tasks["unit_scenes"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=20000)
    ap.add_argument("--unit-scenes", type=int, default=None, help="scenes per task (default: the build's auto)")
    ap.add_argument("--also-n", type=int, default=500, help="one more --workers 2 case with this task size (0: none)")
    ap.add_argument("--images", choices=("tiny", "none"), default="tiny")
    ap.add_argument("--skip-dask", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every case this many times, in turn (a noisy machine: medians and paired ratios)")
    ap.add_argument("--keep", type=Path, default=None, help="work here (kept) instead of a temp folder")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_build_tasks_"))
    root.mkdir(parents=True, exist_ok=True)
    coco = root / "coco.json"
    t0 = time.perf_counter()
    side = 256 if args.images == "tiny" else 800
    instances = make_coco(coco, args.scenes, side)
    if args.images == "tiny":
        make_images(root / "images", args.scenes, side)
    gen_s = time.perf_counter() - t0
    cfg = root / "mmsar.toml"
    images = f', images = "{root / "images"}"' if args.images == "tiny" else ""
    cfg.write_text(CONFIG.format(coco=coco, images=images, mode="reference"), encoding="utf-8")
    n = args.unit_scenes
    cases = [("local_1_one_task", {"workers": 1, "unit_scenes": 10**9}),  # the build before tasks: one per source
             ("local_1", {"workers": 1, "unit_scenes": n}), ("local_2", {"workers": 2, "unit_scenes": n})]
    if not args.skip_dask:
        cases.append(("dask_local_cluster_2", {"distributor": "dask", "workers": 2, "unit_scenes": n}))
    if args.also_n:
        cases.append((f"local_2_n{args.also_n}", {"workers": 2, "unit_scenes": args.also_n}))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in cases}
    trees = {}
    for r in range(args.repeat):
        for name, opts in cases:
            runs[name].append(run_case(cfg, root / name, **opts))
            tree_now = tree(root / name)
            trees.setdefault(name, tree_now)
            if tree_now != trees[name]:
                trees[name] = {}  # the same case gave other bytes: never identical
            print(f"repeat {r}", name, json.dumps(runs[name][-1]), file=sys.stderr, flush=True)
    results = {name: {**rs[0], "wall_s": median([x["wall_s"] for x in rs]), "walls_s": [x["wall_s"] for x in rs],
                      "phases_s": rs[len(rs) // 2]["phases_s"]} for name, rs in runs.items()}
    base = runs["local_1"]
    report = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "scenes": args.scenes, "instances": instances, "images": args.images, "generate_s": round(gen_s, 2),
        "repeats": args.repeat,
        "cases": results,
        # per repeat, --workers 1 over the case as measured in the same round; then the median
        "speedup_vs_local_1": {k: median([round(b["wall_s"] / x["wall_s"], 3) for b, x in zip(base, rs, strict=True)])
                               for k, rs in runs.items()},
        "speedups_per_repeat": {k: [round(b["wall_s"] / x["wall_s"], 2) for b, x in zip(base, rs, strict=True)]
                                for k, rs in runs.items()},
        "byte_identical": all(t == trees["local_1"] for t in trees.values()),
        "files_compared": len(trees["local_1"]),
    }
    print(json.dumps(report, indent=2))
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
