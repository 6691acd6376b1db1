"""Tiling benchmark: a 20,000 x 20,000 uint16 GeoTIFF (800 MB of samples) cut into 1024 px tiles.

Writes the scene strip by strip, then tiles it in a fresh child process (so the peak RSS measured is the
tiling's alone): box splitting for a few thousand oriented objects, then a windowed read and an 8-bit PNG
(embed mode) for every kept tile. Prints one JSON line with the peak RSS, the time and the machine.

    .venv/bin/python benchmarks/bench_tiling.py [--size 20000] [--tile 1024] [--overlap 200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import cpu_model, peak_rss_mb, ram_gib  # benchmarks/_common.py (this folder is on sys.path)

STRIP = 512


def write_scene(path: Path, size: int, seed: int = 0) -> None:
    """A speckle-like uint16 scene (gamma noise, a few bright ships), written strip by strip."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint16", "tiled": True,
               "blockxsize": 512, "blockysize": 512, "crs": "EPSG:32631",
               "transform": from_origin(500000.0, 4000000.0, 10.0, 10.0), "BIGTIFF": "IF_SAFER"}
    with rasterio.open(path, "w", **profile) as ds:
        for y0 in range(0, size, STRIP):
            h = min(STRIP, size - y0)
            strip = np.minimum(rng.gamma(2.0, 300.0, size=(h, size)), 65535).astype(np.uint16)
            ds.write(strip, 1, window=Window(0, y0, size, h))


def make_scene(path: Path, size: int, objects: int, seed: int = 0):
    from d2c.model import Instance, Provenance, Scene

    rng = np.random.default_rng(seed)
    insts = []
    for _ in range(objects):
        cx, cy = rng.uniform(0, size, 2)
        w, h = rng.uniform(12, 120), rng.uniform(5, 30)
        a = np.radians(rng.uniform(0, 180))
        u = np.array([np.cos(a), np.sin(a)]) * w / 2
        v = np.array([-np.sin(a), np.cos(a)]) * h / 2
        c = np.array([cx, cy])
        insts.append(Instance.from_polygon([c - u - v, c + u - v, c + u + v, c - u + v], "ship"))
    return Scene(key="bench/scene", source="bench", image_path=path.name, root=str(path.parent), width=size,
                 height=size, instances=insts, provenance=Provenance("synthetic"))


def run_child(path: Path, size: int, tile: int, overlap: int, objects: int, mode: str) -> dict:
    """Runs in a fresh process: tile, read every window, encode it; report peak RSS."""
    from d2c.tiling import WindowReader, tile_image_record, tile_scene

    base_rss = peak_rss_mb()
    scene = make_scene(path, size, objects)
    t0 = time.perf_counter()
    tiled = tile_scene(scene, tile=tile, overlap=overlap, negative_rate=0.1, seed=0)
    t_split = time.perf_counter() - t0
    png_bytes = kept_objects = 0
    with WindowReader(path) as reader:
        for tscene, win in tiled:
            rec = tile_image_record(tscene, win, reader, mode=mode)
            png_bytes += len(rec.bytes or b"")
            kept_objects += tscene.num_instances
    total = time.perf_counter() - t0
    return {
        "tiles": len(tiled), "negatives_skipped": tiled.negatives_skipped, "objects": objects,
        "tile_objects": kept_objects, "rejects": len(tiled.rejects), "png_mb": round(png_bytes / 2**20, 1),
        "split_s": round(t_split, 2), "total_s": round(total, 1),
        "baseline_rss_mb": base_rss, "peak_rss_mb": peak_rss_mb(),
    }


def machine() -> str:
    return (f"{cpu_model()}, {os.cpu_count()} CPUs, {ram_gib():.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--overlap", type=int, default=200)
    ap.add_argument("--objects", type=int, default=3000)
    ap.add_argument("--mode", choices=("embed", "reference"), default="embed",
                    help="embed: stretch + PNG per tile (as convert --images-mode embed); reference: read + hash")
    ap.add_argument("--keep", type=Path, help="folder for the GeoTIFF (kept); default: a temporary folder")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.size, args.tile, args.overlap, args.objects, args.mode)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"scene_{args.size}.tif"
        t0 = time.perf_counter()
        if not path.is_file():
            write_scene(path, args.size)
        write_s = time.perf_counter() - t0
        cmd = [sys.executable, __file__, "--child", str(path), "--size", str(args.size), "--tile", str(args.tile),
               "--overlap", str(args.overlap), "--objects", str(args.objects), "--mode", args.mode]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update({"mode": args.mode, "size": args.size, "tile": args.tile, "overlap": args.overlap,
                   "raster_mb": round(args.size * args.size * 2 / 2**20), "write_s": round(write_s, 1),
                   "machine": machine()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
