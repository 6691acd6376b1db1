"""Load test: 1,000,000 annotated instances through ``d2c convert --images-mode reference``, with peak RSS.

Generates a COCO file of ``--instances`` objects (default 1,000,000) over ``--instances / --per-image``
images (sizes in the annotation, no image files: reference mode needs none), 0.1 % of them deliberately
bad (NaN, negative size, unknown category, dangling image id, in equal parts), and optionally the same set
as DOTA label files. Each conversion runs in its own child process, which reports its own peak RSS
(``ru_maxrss``) and wall time, so the figures are per case. The accounting invariant is checked from
``_stats.json``: ``instances_in == instances_out + instances_rejected``, ``instances_in`` equals what was
generated and ``instances_rejected`` equals what was made bad.

Writes a Markdown snippet (``--md``, default stdout). ``--instances 100000`` gives a quick run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import cpu_model, ram_gib  # benchmarks/_common.py (this folder is on sys.path)

BAD_EVERY = 1000  # one bad annotation in a thousand
CLASSES = ["ship", "aircraft", "car", "tank", "bridge", "harbor"]

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from d2c import ConvertOptions, convert
res = convert(sys.argv[1], sys.argv[2], ConvertOptions(format=sys.argv[3], images_mode="reference",
              workers=int(sys.argv[4]), captions_per_image=5, shard_rows=20000, progress=False))
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "children_peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""

FLOOR = """
import json, resource, sys, time
t0 = time.perf_counter()
doc = json.load(open(sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "children_peak_kib": 0, "n": len(doc["annotations"])}))
"""


def _boxes(n: int, sizes: np.ndarray, owner: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    wh = rng.uniform(6, 60, size=(n, 2))
    xy = rng.uniform(0, 1, size=(n, 2)) * (sizes[owner] - wh - 1)
    return np.round(np.concatenate([xy, wh], axis=1), 2)


def make_coco(path: Path, n_instances: int, per_image: int, seed: int = 0) -> int:
    """Write the COCO file; return how many annotations were made bad."""
    rng = np.random.default_rng(seed)
    n_images = max(1, n_instances // per_image)
    sizes = rng.integers(512, 1025, size=(n_images, 2))
    owner = np.arange(n_instances) % n_images
    boxes = _boxes(n_instances, sizes, owner, rng).tolist()
    cats = rng.integers(1, len(CLASSES) + 1, size=n_instances).tolist()
    bad = 0
    parts = ['{"images":[']
    parts.append(",".join(f'{{"id":{i + 1},"file_name":"{i:07d}.png","width":{int(w)},"height":{int(h)}}}'
                          for i, (w, h) in enumerate(sizes.tolist())))
    parts.append('],"annotations":[')
    anns = []
    for k in range(n_instances):
        x, y, w, h = boxes[k]
        img, cat = int(owner[k]) + 1, cats[k]
        box = f"[{x},{y},{w},{h}]"
        if k % BAD_EVERY == BAD_EVERY - 1:
            bad += 1
            kind = (k // BAD_EVERY) % 4
            box = "[NaN,1,2,3]" if kind == 0 else f"[{x},{y},-{w},{h}]" if kind == 1 else box
            cat = 99 if kind == 2 else cat
            img = n_images + 10 if kind == 3 else img
        anns.append(f'{{"id":{k + 1},"image_id":{img},"category_id":{cat},"iscrowd":0,"bbox":{box}}}')
    parts.append(",".join(anns))
    parts.append('],"categories":[' + ",".join(f'{{"id":{i + 1},"name":"{c}"}}' for i, c in enumerate(CLASSES)))
    parts.append("]}")
    path.write_text("".join(parts))
    return bad


def make_dota(root: Path, n_instances: int, per_image: int, seed: int = 0) -> int:
    """The same shape as DOTA: one label file per image, tiny images for the header size."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    n_images = max(1, n_instances // per_image)
    (root / "labelTxt").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    Image.new("L", (800, 800)).save(root / "template.png")
    data = (root / "template.png").read_bytes()
    sizes = np.full((n_images, 2), 800)
    owner = np.arange(n_instances) % n_images
    boxes = _boxes(n_instances, sizes, owner, rng)
    cats = rng.integers(0, len(CLASSES), size=n_instances)
    lines: list[list[str]] = [[] for _ in range(n_images)]
    bad = 0
    for k, (x, y, w, h) in enumerate(boxes.tolist()):
        coords = f"{x} {y} {x + w:.2f} {y} {x + w:.2f} {y + h:.2f} {x} {y + h:.2f}"
        if k % BAD_EVERY == BAD_EVERY - 1:
            bad += 1
            coords = "nan " + coords.split(" ", 1)[1] if (k // BAD_EVERY) % 2 else " ".join(coords.split()[:6])
        lines[owner[k]].append(f"{coords} {CLASSES[cats[k]]} 0")
    for i, ls in enumerate(lines):
        (root / "images" / f"{i:07d}.png").write_bytes(data)
        (root / "labelTxt" / f"{i:07d}.txt").write_text("\n".join(ls) + "\n")
    return bad


def generate(fmt: str, path: Path, n_instances: int, per_image: int) -> int:
    """Write the input in a child process (returns how many annotations were made bad). On Linux a
    process's peak RSS survives fork and exec, so generating 1M records here would raise the peak that
    every later case reports to this process's size."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import bench_load as b; "
            "print(getattr(b, 'make_' + sys.argv[2])(b.Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), fmt, str(path), str(n_instances),
                           str(per_image)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"generating {fmt} failed: {proc.stderr[-3000:]}")
    return int(proc.stdout.strip().splitlines()[-1])


def run_child(code: str, args: list[str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_invariant(out: Path, generated: int, bad: int) -> dict:
    stats = json.loads((out / "_stats.json").read_text())
    ok = (stats["instances_in"] == generated and stats["instances_rejected"] == bad
          and stats["instances_in"] == stats["instances_out"] + stats["instances_rejected"]
          and stats["invariant_holds"])
    if not ok:
        raise SystemExit(f"accounting invariant broken: {json.dumps(stats)[:2000]}")
    return stats


def machine() -> str:
    return (f"{cpu_model()}, {os.cpu_count()} CPUs, {ram_gib():.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--per-image", type=int, default=10)
    ap.add_argument("--formats", default="coco", help="comma-separated: coco, dota")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--md", type=Path, default=None, help="write the Markdown snippet here")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="d2c-load-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for fmt in args.formats.split(","):
        t0 = time.perf_counter()
        inp = work / ("load.json" if fmt == "coco" else "dota")
        bad = generate(fmt, inp, args.instances, args.per_image)
        if fmt == "coco":
            size = f"{inp.stat().st_size / 2**20:.0f} MiB JSON"
            floor = run_child(FLOOR, [str(inp)])
            rows.append(("coco", "`json.load` (floor)", "-", floor, None, size))
        else:
            size = f"{args.instances // args.per_image} label files"
        print(f"generated {fmt} ({size}) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for w in args.workers.split(","):
            out = work / f"out-{fmt}-{w}"
            if out.exists():
                shutil.rmtree(out)
            res = run_child(CHILD, [str(inp), str(out), fmt, w])
            stats = check_invariant(out, args.instances, bad)
            rows.append((fmt, f"`d2c convert` reference, {w} worker(s)", w, res, stats, size))
            print(f"{fmt} workers={w}: {res['seconds']:.1f} s, peak {res['peak_kib'] / 1024:.0f} MiB", file=sys.stderr)
    lines = [f"`benchmarks/bench_load.py --instances {args.instances}`: {args.instances:,} instances, "
             f"{args.per_image} per image, 1 in {BAD_EVERY} made bad; each case in its own child process "
             "(peak RSS = its `ru_maxrss`; workers' peaks apart).", "",
             "| input | case | wall time | peak RSS (main) | peak RSS (a worker) | scenes / rows | instances in = out + rejected |",
             "|---|---|---|---|---|---|---|"]
    for fmt, case, _w, res, stats, size in rows:
        acc = (f"{stats['instances_in']:,} = {stats['instances_out']:,} + {stats['instances_rejected']:,} (holds)"
               if stats else "-")
        scenes = f"{stats['scenes_written']:,} / {stats['rows']:,}" if stats else "-"
        child = f"{res['children_peak_kib'] / 1024:.0f} MiB" if res.get("children_peak_kib") else "-"
        lines.append(f"| {fmt} ({size}) | {case} | {res['seconds']:.1f} s | {res['peak_kib'] / 1024:.0f} MiB | "
                     f"{child} | {scenes} | {acc} |")
    lines += ["", f"Machine: {machine()}."]
    text = "\n".join(lines) + "\n"
    if args.md:
        args.md.write_text(text)
    print(text)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
