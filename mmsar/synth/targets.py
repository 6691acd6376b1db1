"""Targets: what each class looks like in a SAR image, drawn into a reflectivity map.

Every target is an oriented rectangle (its annotated footprint) with a class-specific pattern inside:
ships are elongated hulls with hot spots (optional dark wake and cross-shaped sidelobes along the image
axes), aircraft are crosses, tanks bright rings, cars small point clusters, bridges bright decks over water,
harbors a quay with piers into the water. Patterns are drawn with ``max`` so a target is never darker than
what lies under it, and every one is one to three orders of magnitude above sea and land clutter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

CLASSES = ("ship", "aircraft", "tank", "car", "bridge", "harbor")


@dataclass(frozen=True)
class SizeSpec:
    """Real size of a class in metres and the smallest drawable size in pixels."""

    length_m: tuple[float, float]
    ratio: tuple[float, float]  # width / length
    min_px: float  # smallest length in pixels worth drawing
    min_width_px: float = 2.0


SIZES: dict[str, SizeSpec] = {
    "ship": SizeSpec((20.0, 400.0), (0.12, 0.2), 5.0),
    "aircraft": SizeSpec((15.0, 75.0), (0.8, 1.05), 9.0, 7.0),
    "tank": SizeSpec((12.0, 80.0), (1.0, 1.0), 6.0, 6.0),
    "car": SizeSpec((3.8, 6.0), (0.35, 0.5), 4.0),
    "bridge": SizeSpec((8.0, 30.0), (1.0, 1.0), 2.0),  # deck width; the length spans the river
    "harbor": SizeSpec((150.0, 1200.0), (0.25, 0.45), 40.0, 12.0),
}


@dataclass
class Target:
    """One target: class, centre, size along/across its own axis (pixels), axis angle (degrees)."""

    cls: str
    cx: float
    cy: float
    length: float
    width: float
    angle: float
    amp: float
    extras: dict = field(default_factory=dict)

    def polygon(self) -> np.ndarray:
        """The footprint's 4 corners (the annotation; ``Instance.from_polygon`` puts them in canonical order).

        Plain float arithmetic: this runs for every placement proposal, thousands of times per scene.
        """
        a = math.radians(self.angle)
        ux, uy = math.cos(a) * self.length / 2, math.sin(a) * self.length / 2
        vx, vy = -math.sin(a) * self.width / 2, math.cos(a) * self.width / 2
        cx, cy = self.cx, self.cy
        return np.array(
            [
                (cx - ux - vx, cy - uy - vy),
                (cx + ux - vx, cy + uy - vy),
                (cx + ux + vx, cy + uy + vy),
                (cx - ux + vx, cy - uy + vy),
            ]
        )

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        a = np.radians(self.angle)
        return np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])


def length_range_px(cls: str, gsd: float, scene_px: int) -> tuple[float, float] | None:
    """Pixel lengths a class may take at ``gsd`` in a scene of ``scene_px``; None if it cannot be drawn."""
    spec = SIZES[cls]
    lo = max(spec.length_m[0] / gsd, spec.min_px)
    hi = min(spec.length_m[1] / gsd, 0.45 * scene_px)
    return (lo, hi) if hi >= lo else None


def _window(shape, cx, cy, reach):
    """Slices of the image around (cx, cy) and the pixel-centre offsets inside them."""
    h, w = shape
    x0, x1 = max(0, int(cx - reach)), min(w, int(np.ceil(cx + reach)) + 1)
    y0, y1 = max(0, int(cy - reach)), min(h, int(np.ceil(cy + reach)) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    dx = np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx)
    dy = np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - cy)
    return (slice(y0, y1), slice(x0, x1)), dx[None, :], dy[:, None]


def local_frame(shape, t: Target, reach: float | None = None):
    """Window and the (u, v) coordinates of its pixels in the target's own frame."""
    reach = reach if reach is not None else 0.5 * float(np.hypot(t.length, t.width)) + 2
    win = _window(shape, t.cx, t.cy, reach)
    if win is None:
        return None
    sl, dx, dy = win
    (ux, uy), (vx, vy) = t.axes()
    u = dx * np.float32(ux) + dy * np.float32(uy)
    v = dx * np.float32(vx) + dy * np.float32(vy)
    return sl, u, v


def _paint(sigma: np.ndarray, sl, values: np.ndarray) -> None:
    np.maximum(sigma[sl], values.astype(np.float32), out=sigma[sl])


def _box(u, v, uc, vc, hu, hv):
    return (np.abs(u - uc) <= hu) & (np.abs(v - vc) <= hv)


def draw_ship(sigma: np.ndarray, t: Target, rng: np.random.Generator) -> None:
    f = local_frame(sigma.shape, t)
    if f is None:
        return
    sl, u, v = f
    L, W = t.length / 2, max(t.width / 2, 0.75)
    hull = (np.abs(u / L) ** 3 + (v / W) ** 2) <= 1.0
    val = np.where(hull, t.amp, 0.0)
    for pos in rng.uniform(-0.6, 0.6, size=int(rng.integers(2, 5))):
        r2 = (u - pos * L) ** 2 + v**2
        val = np.maximum(val, np.where(hull, 3 * t.amp * np.exp(-r2 / max(W * W, 1.0)), 0))
    _paint(sigma, sl, val)
    if t.extras.get("sidelobes"):
        _sidelobes(sigma, t)


def _sidelobes(sigma: np.ndarray, t: Target) -> None:
    """Thin cross along the image axes through the ship's centre, decaying with distance."""
    reach = 1.5 * t.length
    win = _window(sigma.shape, t.cx, t.cy, reach)
    if win is None:
        return
    (sy, sx), dx, dy = win
    row, col = int(t.cy), int(t.cx)
    if sy.start <= row < sy.stop:
        vals = 0.3 * t.amp * np.exp(-np.abs(dx[0]) / (0.6 * t.length))
        np.maximum(sigma[row, sx], vals, out=sigma[row, sx])
    if sx.start <= col < sx.stop:
        vals = 0.3 * t.amp * np.exp(-np.abs(dy[:, 0]) / (0.6 * t.length))
        np.maximum(sigma[sy, col], vals, out=sigma[sy, col])


def draw_wake(sigma: np.ndarray, water: np.ndarray, t: Target) -> None:
    """A dark, widening turbulent wake behind the stern (on water only): drawn before any target."""
    sign = float(t.extras.get("heading", 1.0))
    f = local_frame(sigma.shape, t, reach=2.6 * t.length)
    if f is None:
        return
    sl, u, v = f
    back = -sign * u - t.length / 2  # distance behind the stern
    wake = (back > 0) & (back < 2.0 * t.length) & (np.abs(v) < 0.5 * t.width * (1 + back / t.length))
    wake &= water[sl]
    sigma[sl] = np.where(wake, sigma[sl] * np.float32(0.3), sigma[sl])


def draw_aircraft(sigma: np.ndarray, t: Target, rng: np.random.Generator) -> None:
    """Fuselage along the length axis, swept-free wings across it, a small tailplane: a cross."""
    f = local_frame(sigma.shape, t)
    if f is None:
        return
    sl, u, v = f
    L, S = t.length, t.width  # length along u, wingspan along v
    body = _box(u, v, 0, 0, L / 2, max(0.08 * L, 0.8))
    wings = _box(u, v, 0.05 * L, 0, max(0.12 * L, 0.8), S / 2)
    tail = _box(u, v, -0.42 * L, 0, max(0.06 * L, 0.8), 0.18 * S)
    shape = body | wings | tail
    val = np.where(shape, t.amp, 0.0)
    for side in (-1, 1):
        r2 = (u - 0.1 * L) ** 2 + (v - side * 0.25 * S) ** 2
        val = np.maximum(val, np.where(shape, 2.5 * t.amp * np.exp(-r2 / max((0.05 * L) ** 2, 1.0)), 0))
    _paint(sigma, sl, val)


def draw_tank(sigma: np.ndarray, t: Target, rng: np.random.Generator) -> None:
    """A bright ring (the wall) around a dimmer roof."""
    f = local_frame(sigma.shape, t)
    if f is None:
        return
    sl, u, v = f
    r = t.length / 2
    rho = np.sqrt(u * u + v * v)
    wall = (rho <= r) & (rho >= r - max(0.3 * r, 1.0))
    val = np.where(wall, t.amp, np.where(rho < r, 0.12 * t.amp, 0.0))
    _paint(sigma, sl, val)


def draw_car(sigma: np.ndarray, t: Target, rng: np.random.Generator) -> None:
    """A small body with 2-4 hot points."""
    f = local_frame(sigma.shape, t)
    if f is None:
        return
    sl, u, v = f
    body = _box(u, v, 0, 0, t.length / 2, t.width / 2)
    val = np.where(body, 0.5 * t.amp, 0.0)
    for pos in rng.uniform(-0.35, 0.35, size=int(rng.integers(2, 5))):
        r2 = (u - pos * t.length) ** 2 + v**2
        val = np.maximum(val, np.where(body, 2 * t.amp * np.exp(-r2 / max((0.3 * t.width) ** 2, 0.5)), 0))
    _paint(sigma, sl, val)


def draw_bridge(sigma: np.ndarray, t: Target, rng: np.random.Generator) -> None:
    """A uniform bright deck with brighter railings along both long edges."""
    f = local_frame(sigma.shape, t)
    if f is None:
        return
    sl, u, v = f
    deck = _box(u, v, 0, 0, t.length / 2, t.width / 2)
    rail = deck & (np.abs(v) >= t.width / 2 - max(0.15 * t.width, 0.8))
    _paint(sigma, sl, np.where(rail, 2 * t.amp, np.where(deck, t.amp, 0.0)))


def draw_harbor(sigma: np.ndarray, t: Target, rng: np.random.Generator) -> None:
    """Quay along the coast (the length axis) with piers into the water; built-up land behind.

    ``extras['land_sign']`` says which side of the width axis is land (+1: +v).
    """
    f = local_frame(sigma.shape, t)
    if f is None:
        return
    sl, u, v = f
    L, D = t.length / 2, t.width / 2
    s = float(t.extras.get("land_sign", 1.0))
    inside = _box(u, v, 0, 0, L, D)
    vv = s * v  # > 0 towards land
    quay_w = max(0.08 * t.width, 1.5)
    built = inside & (vv > quay_w / 2)
    quay = inside & (np.abs(vv) <= quay_w / 2)
    n_piers = int(rng.integers(3, 8))
    pier_w = max(0.03 * t.length, 1.5)
    piers = np.zeros_like(inside)
    for pu in np.linspace(-0.85 * L, 0.85 * L, n_piers):
        piers |= inside & (np.abs(u - pu) <= pier_w / 2) & (vv < 0)
    val = np.where(quay | piers, t.amp, np.where(built, 0.35 * t.amp, 0.0))
    _paint(sigma, sl, val)


DRAW = {
    "ship": draw_ship,
    "aircraft": draw_aircraft,
    "tank": draw_tank,
    "car": draw_car,
    "bridge": draw_bridge,
    "harbor": draw_harbor,
}

# Peak reflectivity ranges (linear) per class: far above sea (0.01-0.05) and land (0.1-0.4).
AMPLITUDE = {
    "ship": (6.0, 30.0),
    "aircraft": (4.0, 15.0),
    "tank": (4.0, 12.0),
    "car": (3.0, 8.0),
    "bridge": (2.0, 6.0),
    "harbor": (3.0, 8.0),
}
