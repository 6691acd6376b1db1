"""Benchmark ``d2c convert`` against its floors (issue "Parquet shards and the d2c convert CLI").

Generates a SARDet-100K-sized COCO file (116,598 images, 245,653 instances at ``--scale 1``) and times, on
this machine, each case in its own subprocess (so peak memory is per case):

- ``json.load`` of the file (the floor for annotation-only conversion);
- a plain pycocotools loop with f-string captions written to Parquet with pandas (what a user would write);
- ``d2c convert --images-mode reference`` with 1 and 2 workers;
- embedding 8-bit images: read + decode every image file (the floor) vs ``--images-mode embed``, 1 and 2
  workers; and, apart, uint16 GeoTIFFs stretched to 8-bit PNG.

Prints a Markdown table and the machine. ``--scale 0.05`` gives a quick run.
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
from typing import Any

import numpy as np
from _common import cpu_model  # benchmarks/_common.py (this folder is on sys.path)

FULL_IMAGES = 116_598
FULL_INSTANCES = 245_653
CLASSES = ["ship", "aircraft", "car", "tank", "bridge", "harbor"]


def make_coco(path: Path, n_images: int, n_instances: int, seed: int = 0) -> None:
    """A COCO file shaped like SARDet-100K: sizes 512-1024, ~2 boxes per image, 6 classes, each box also
    as a 4-point polygon ``segmentation`` (as many COCO exports write them)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(512, 1025, size=(n_images, 2))
    owner = np.sort(rng.integers(0, n_images, size=n_instances))
    wh = rng.uniform(8, 120, size=(n_instances, 2))
    xy = rng.uniform(0, 1, size=(n_instances, 2)) * (sizes[owner] - wh - 1)
    cats = rng.integers(1, len(CLASSES) + 1, size=n_instances)
    images = [{"id": i + 1, "file_name": f"{i:06d}.jpg", "width": int(w), "height": int(h)}
              for i, (w, h) in enumerate(sizes)]
    anns = []
    for k in range(n_instances):
        x, y, w, h = (round(float(v), 2) for v in (xy[k, 0], xy[k, 1], wh[k, 0], wh[k, 1]))
        anns.append({"id": k + 1, "image_id": int(owner[k]) + 1, "category_id": int(cats[k]), "iscrowd": 0,
                     "bbox": [x, y, w, h], "area": round(w * h, 2),
                     "segmentation": [[x, y, round(x + w, 2), y, round(x + w, 2), round(y + h, 2), x, round(y + h, 2)]]})
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))


def make_images(folder: Path, n: int, size: int, dtype: str, seed: int = 0) -> Path:
    """n speckle-like images (8-bit JPEG or uint16 GeoTIFF) in ``folder`` and a COCO file beside it."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n):
        arr = rng.gamma(1.0, 60.0, size=(size, size))
        if dtype == "uint8":
            name = f"{i:05d}.jpg"
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / name, quality=90)
        else:
            import rasterio

            name = f"{i:05d}.tif"
            with rasterio.open(folder / name, "w", driver="GTiff", width=size, height=size, count=1,
                               dtype="uint16") as ds:
                ds.write((arr * 40).astype(np.uint16)[None])
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 40, 20], "area": 800})
    ann = folder.parent / "annotations.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}))
    return ann


# ---- cases, each run in a fresh interpreter -----------------------------------------------------------

def case_json_load(ann: str) -> None:
    with open(ann, "rb") as fh:
        json.load(fh)


def case_pycocotools(ann: str, out: str) -> None:
    import contextlib
    import io

    import pandas as pd
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(ann)
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    rows = []
    for img in coco.loadImgs(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        counts: dict[str, int] = {}
        for a in anns:
            counts[names[a["category_id"]]] = counts.get(names[a["category_id"]], 0) + 1
        text = ", ".join(f"{n} {c}{'s' if n > 1 else ''}" for c, n in sorted(counts.items()))
        rows.append({"file": img["file_name"], "caption": f"A SAR image with {text or 'no objects'}.",
                     "boxes": [a["bbox"] for a in anns]})
    pd.DataFrame(rows).to_parquet(Path(out) / "loop.parquet")


def case_convert(ann: str, mode: str, workers: str, out: str) -> None:
    from d2c.convert import convert
    from d2c.options import ConvertOptions

    convert(ann, out, ConvertOptions(format="coco", images_mode=mode, workers=int(workers), progress=False))


def case_read_decode(ann: str) -> None:
    from PIL import Image

    for p in sorted((Path(ann).parent / "images").iterdir()):
        if p.suffix == ".tif":
            import rasterio

            with rasterio.open(p) as ds:
                ds.read()
        else:
            with Image.open(p) as im:
                im.convert("RGB").load()


def case_generate(work: str, n_img: str, n_inst: str, n_emb: str, n_tif: str, size: str) -> None:
    w = Path(work)
    make_coco(w / "sardet_like.json", int(n_img), int(n_inst))
    make_images(w / "jpg" / "images", int(n_emb), int(size), "uint8")
    make_images(w / "tif" / "images", int(n_tif), int(size), "uint16")


CASES = {"generate": case_generate, "json_load": case_json_load, "pycocotools": case_pycocotools, "convert": case_convert,
         "read_decode": case_read_decode}


def child_main(name: str, args: list[str]) -> None:
    import resource

    def cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    t0, c0 = time.perf_counter(), cpu()
    CASES[name](*args)
    seconds, cpu_s = time.perf_counter() - t0, cpu() - c0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    rss = max(me.ru_maxrss, kids.ru_maxrss)  # KiB on Linux: the largest single process
    print(json.dumps({"seconds": seconds, "cpu_s": cpu_s, "peak_rss_mb": rss / 1024}))


REPEAT = 1  # runs per case (--repeat): the fastest is reported, with the spread


def measure(name: str, *args: str, out: str | None = None) -> dict:
    """Run a case :data:`REPEAT` times, each in a fresh interpreter (``out``: a folder emptied before each
    run); the fastest run's figures, with every run's wall time under ``runs``. A shared machine's noise
    only ever slows a run down, so the fastest is the best estimate."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    results = []
    for _ in range(REPEAT):
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
            Path(out).mkdir(parents=True)
        proc = subprocess.run([sys.executable, __file__, "--child", name, *args, *([out] if out else [])],
                              capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"case {name} failed:\n{proc.stderr[-2000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = min(results, key=lambda r: r["seconds"])
    return {**best, "runs": [r["seconds"] for r in results]}


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the SARDet-100K size (default 1)")
    ap.add_argument("--images", type=int, default=1000, help="8-bit images for the embedding case")
    ap.add_argument("--tiffs", type=int, default=200, help="uint16 GeoTIFFs for the stretch case")
    ap.add_argument("--size", type=int, default=800, help="image side in pixels")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the fastest is reported (default 3)")
    ap.add_argument("--annotations-only", action="store_true", help="skip the image-embedding cases")
    args = ap.parse_args()
    global REPEAT
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_convert_"))
    work.mkdir(parents=True, exist_ok=True)
    n_img, n_inst = max(1, round(FULL_IMAGES * args.scale)), max(1, round(FULL_INSTANCES * args.scale))
    n_emb, n_tif = max(1, round(args.images * min(1.0, args.scale * 4))), max(1, round(args.tiffs * min(1.0, args.scale * 4)))
    ann = work / "sardet_like.json"
    # generate in a child: ru_maxrss survives exec, so a big parent would inflate every case's peak RSS
    measure("generate", str(work), str(n_img), str(n_inst), str(n_emb), str(n_tif), str(args.size))
    REPEAT = max(1, args.repeat)
    jpg_ann, tif_ann = work / "jpg" / "annotations.json", work / "tif" / "annotations.json"
    mb = ann.stat().st_size / 1e6
    rows: list[tuple[str, dict, str]] = []

    def out(tag: str) -> str:
        return str(work / f"out_{tag}")

    floor = measure("json_load", str(ann))
    rows.append((f"json.load ({n_img:,} images, {n_inst:,} instances, {mb:.0f} MB)", floor, "floor"))
    loop = measure("pycocotools", str(ann), out=out("loop"))
    rows.append(("pycocotools loop + f-strings -> parquet", loop, ""))
    for w in (1, 2):
        r = measure("convert", str(ann), "reference", str(w), out=out(f"ref{w}"))
        rows.append((f"d2c convert --images-mode reference --workers {w}", r,
                     f"{r['seconds'] / floor['seconds']:.1f}x json.load, {r['seconds'] / loop['seconds']:.2f}x the loop"))
    if not args.annotations_only:
        rows += _image_cases(jpg_ann, tif_ann, n_emb, n_tif, args.size, out)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Machine: {machine()}  \nScale: {args.scale}; best of {REPEAT} runs per case; "
          f"load average at the end: {load:.1f}\n")
    print("| case | wall s (best) | all runs | CPU s | peak RSS (MB) | note |\n|---|---:|---|---:|---:|---|")
    for label, r, note in rows:
        runs = ", ".join(f"{x:.2f}" for x in r["runs"])
        print(f"| {label} | {r['seconds']:.2f} | {runs} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | {note} |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def _image_cases(jpg_ann: Path, tif_ann: Path, n_emb: int, n_tif: int, size: int, out: Any) -> list:
    """Embedding 8-bit images, and stretching uint16 GeoTIFFs, against reading + decoding them."""
    rows: list[tuple[str, dict, str]] = []
    for ann, floor_label, label, tag in (
            (jpg_ann, f"{n_emb:,} 8-bit JPEGs", "d2c convert --images-mode embed", "emb"),
            (tif_ann, f"{n_tif:,} uint16 GeoTIFFs", "d2c convert embed, uint16 stretched to PNG,", "tif")):
        dec = measure("read_decode", str(ann))
        rows.append((f"read + decode {floor_label} ({size}px)", dec, "floor"))
        for w in (1, 2):
            r = measure("convert", str(ann), "embed", str(w), out=out(f"{tag}{w}"))
            rows.append((f"{label} --workers {w}", r, f"{r['seconds'] / dec['seconds']:.2f}x floor"))
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3:])
    else:
        main()
