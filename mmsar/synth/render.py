"""Render a :class:`SceneSpec` to linear intensity: background, aprons, wakes, targets, then speckle."""

from __future__ import annotations

import numpy as np

from mmsar.synth import clutter
from mmsar.synth.layout import SceneSpec
from mmsar.synth.targets import DRAW, Target, draw_wake, local_frame


def background(rng: np.random.Generator, spec: SceneSpec) -> tuple[np.ndarray, np.ndarray]:
    """Reflectivity of the empty scene and its water mask."""
    shape = (spec.height, spec.width)
    if spec.kind == "sea":
        return clutter.sea(rng, shape, spec.sea_level, spec.nu), np.ones(shape, dtype=bool)
    ground = clutter.land(rng, shape, spec.land_level)
    if spec.shore is None:
        return ground, np.zeros(shape, dtype=bool)
    water = spec.shore.water(shape)
    sea = clutter.sea(rng, shape, spec.sea_level, spec.nu)
    return np.where(water, sea, ground), water


def _apron(sigma: np.ndarray, t: Target, level: float) -> None:
    """A dark concrete pad under an aircraft (smooth surfaces scatter little back): contrast for the cross."""
    margin = 0.75 * max(t.length, t.width)
    f = local_frame(sigma.shape, t, reach=0.5 * float(np.hypot(t.length, t.width)) + 1.5 * margin)
    if f is None:
        return
    sl, u, v = f
    pad = (np.abs(u) <= 0.5 * t.length + margin) & (np.abs(v) <= 0.5 * t.width + margin)
    sigma[sl] = np.where(pad, np.float32(level), sigma[sl])


def reflectivity(rng: np.random.Generator, spec: SceneSpec, sigma: np.ndarray, water: np.ndarray) -> None:
    """Draw the scene's targets into ``sigma`` in place (background effects first, then targets)."""
    for t in spec.targets:
        if t.cls == "aircraft":
            _apron(sigma, t, 0.5 * spec.sea_level + 0.01)
        elif t.cls == "ship" and t.extras.get("wake"):
            draw_wake(sigma, water, t)
    for t in spec.targets:
        DRAW[t.cls](sigma, t, rng)


def intensity(rng: np.random.Generator, spec: SceneSpec, sigma: np.ndarray) -> np.ndarray:
    """Apply L-look speckle to the finished reflectivity map (in place, returned)."""
    sigma *= clutter.speckle(rng, sigma.shape, spec.looks)
    return sigma
