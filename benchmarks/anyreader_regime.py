"""Where should AnyReader win? A gsd / scene-size sweep of how large the targets are once the encoder sees them.

For each cell of the grid (metres per pixel x scene side range) the script draws scenes and ships exactly as
``mmsar synth`` does (scene sides log-uniform in the range, ship lengths from the synthesiser's own size model
at that gsd), then follows each ship's length in pixels through the three views the experiment compares:

- ``plain @S``: the stored image (longest side ``--max-side``) letterboxed to the encoder's S pixels;
- ``AnyReader``: the stored image tiled by ``choose_grid`` into at most ``--max-tiles`` tiles of S pixels
  (never upscaled past the stored copy);
- ``plain @E``: the stored image letterboxed to the equal-compute size E (never upscaled either); ``--eq-size
  0`` computes E per cell, as the experiment does, from the cell's mean tile count and the encoder's FLOPs.

``--aspect A`` draws strip-like scenes (long-to-short side ratios up to A, as ``mmsar synth --aspect``):
letterboxing them to a square wastes canvas that AnyReader's grid (1 x 4, 2 x 6, ...) does not.

A target "survives" a view when it keeps at least ``--min-px`` pixels of length (below about 2 px a ship
is one speckle-sized blob). The regime the experiment wants is where the targets vanish at S but survive
in the tiles; the script prints the table and names the cell with the largest gap. No images are rendered,
so the sweep takes seconds.

    .venv/bin/python benchmarks/anyreader_regime.py --out docs/img/anyreader_regime.md
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmsar.synth.generate import scene_size
from mmsar.synth.layout import _size as draw_target_size
from sarclip_train.anyreader import choose_grid


@dataclass(frozen=True)
class Views:
    tile: int = 64
    max_tiles: int = 4
    max_side: int = 256
    eq_size: int = 144


def apparent_lengths(width: int, height: int, length: float, v: Views) -> tuple[float, float, float]:
    """A target's length in pixels as (plain @tile, AnyReader tiles, plain @eq_size) see it."""
    stored = min(1.0, v.max_side / max(width, height))
    ws, hs = width * stored, height * stored
    rows, cols = choose_grid(max(1, round(ws)), max(1, round(hs)), v.tile, v.max_tiles)
    tiles = min(1.0, cols * v.tile / ws, rows * v.tile / hs)
    plain = v.tile / max(ws, hs)
    eq = min(1.0, v.eq_size / max(ws, hs))
    return length * stored * plain, length * stored * tiles, length * stored * eq


def stored_tiles(width: int, height: int, v: Views) -> int:
    """AnyReader's tile count for a scene stored with longest side ``v.max_side``."""
    s = min(1.0, v.max_side / max(width, height))
    rows, cols = choose_grid(max(1, round(width * s)), max(1, round(height * s)), v.tile, v.max_tiles)
    return rows * cols


def survival(gsd: float, size_range: tuple[int, int], v: Views, *, scenes: int = 400, per_scene: int = 6,
             min_px: float = 2.0, seed: int = 0, aspect: float | None = None, arch: str = "") -> dict[str, float]:
    """Fractions of ship targets keeping >= ``min_px`` pixels of length in each view, and median lengths.
    ``v.eq_size`` 0: the equal-compute size for ``arch`` from these scenes' mean tile count."""
    rng = np.random.default_rng(seed)
    sides = [scene_size(rng, size_range, aspect) for _ in range(scenes)]  # as mmsar synth draws them
    tiles = float(np.mean([stored_tiles(w, h, v) for w, h in sides]))
    if not v.eq_size:
        from anyreader_experiment import equal_compute_size  # benchmarks/ (this folder is on sys.path)

        v = Views(v.tile, v.max_tiles, v.max_side, equal_compute_size(arch, v.tile, tiles)[0])
    rows = []
    for w, h in sides:
        for _ in range(per_scene):
            size = draw_target_size(rng, "ship", gsd, min(w, h))
            if size is not None:
                rows.append(apparent_lengths(w, h, size[0], v))
    a = np.asarray(rows, dtype=np.float64)
    if not len(a):
        return {}
    keys = ("plain", "tiles", "eq")
    out = {f"survive_{k}": float(np.mean(a[:, i] >= min_px)) for i, k in enumerate(keys)}
    out |= {f"median_px_{k}": float(np.median(a[:, i])) for i, k in enumerate(keys)}
    out |= {"targets": float(len(a)), "mean_tiles": tiles, "eq_size": float(v.eq_size),
            "tiles_over_eq": float(np.mean(a[:, 1] / a[:, 2]))}
    return out


def sweep(gsds: list[float], ranges: list[tuple[int, int]], v: Views, min_px: float, aspect: float | None = None,
          arch: str = "") -> list[dict]:
    return [{"gsd": g, "size_range": r, **survival(g, r, v, min_px=min_px, aspect=aspect, arch=arch)}
            for g in gsds for r in ranges]


def table(cells: list[dict], v: Views, min_px: float) -> str:
    head = (f"| gsd (m/px) | scene side (px) | mean tiles | E | ship length, median px: plain @{v.tile} / tiles / "
            f"plain @E | survive (>= {min_px:g} px): plain @{v.tile} | tiles | plain @E | tiles - plain "
            "| tiles / plain @E, mean length ratio |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        if "survive_plain" not in c:
            continue
        gap = c["survive_tiles"] - c["survive_plain"]
        lines.append(f"| {c['gsd']:g} | {c['size_range'][0]}-{c['size_range'][1]} | {c['mean_tiles']:.1f} | "
                     f"{c['eq_size']:.0f} | "
                     f"{c['median_px_plain']:.1f} / {c['median_px_tiles']:.1f} / {c['median_px_eq']:.1f} | "
                     f"{c['survive_plain']:.2f} | {c['survive_tiles']:.2f} | {c['survive_eq']:.2f} | {gap:+.2f} | "
                     f"{c['tiles_over_eq']:.2f} |")
    return "\n".join(lines)


def best_cell(cells: list[dict]) -> dict:
    """The cell where the most targets vanish at the encoder's size but survive in the tiles."""
    return max((c for c in cells if "survive_plain" in c), key=lambda c: c["survive_tiles"] - c["survive_plain"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="example: python benchmarks/anyreader_regime.py --gsd 1,3,10")
    p.add_argument("--gsd", default="1,3,10", help="metres per pixel, comma-separated")
    p.add_argument("--ranges", default="256:512,512:1024,1024:2048,2048:4096", help="scene side ranges LO:HI")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--max-tiles", type=int, default=4)
    p.add_argument("--max-side", type=int, default=256)
    p.add_argument("--eq-size", type=int, default=144, help="plain arm's equal-compute size (0: from FLOPs)")
    p.add_argument("--aspect", type=float, default=None, help="strip-like scenes: side ratios up to this")
    p.add_argument("--arch", default="sarclip-tiny-rn", help="encoder whose FLOPs set E when --eq-size is 0")
    p.add_argument("--min-px", type=float, default=2.0)
    p.add_argument("--out", type=Path, help="write the table (Markdown) here as well")
    a = p.parse_args(argv)
    v = Views(a.tile, a.max_tiles, a.max_side, a.eq_size)
    ranges = [tuple(int(x) for x in r.split(":")) for r in a.ranges.split(",")]
    cells = sweep([float(g) for g in a.gsd.split(",")], ranges, v, a.min_px, a.aspect, a.arch)
    best = best_cell(cells)
    text = table(cells, v, a.min_px) + (f"\n\nLargest gap: gsd {best['gsd']:g} m/px, scenes of "
                                        f"{best['size_range'][0]}-{best['size_range'][1]} px"
                                        f"{f', aspect up to {a.aspect:g}' if a.aspect else ''}.\n")
    print(text)
    if a.out:
        a.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
