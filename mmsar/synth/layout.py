"""Scene layout: what kind of place, at which resolution, how many targets of which classes, and where.

Counts are heavy-tailed (most scenes hold 0-3 targets, about one in eight is a dense harbour, fleet,
airport or tank farm with 20-60), and targets overlap by at most :data:`MAX_OVERLAP` of the smaller one
(a ship may lie inside a harbour: that is what harbours are for).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from shapely.geometry import Polygon

from mmsar.synth.clutter import Shore, random_shore
from mmsar.synth.targets import AMPLITUDE, SIZES, Target, length_range_px

MAX_OVERLAP = 0.05
DENSE_P = 0.12

# Scene kinds: class weights, and the gsd range (metres per pixel) used when none is given.
KINDS: dict[str, dict] = {
    "sea": {"classes": {"ship": 1.0}, "gsd": (1.0, 10.0), "p": 0.3},
    "coast": {"classes": {"ship": 0.8, "harbor": 0.2}, "gsd": (1.0, 5.0), "p": 0.25},
    "river": {"classes": {"bridge": 0.35, "ship": 0.4, "car": 0.25}, "gsd": (0.5, 3.0), "p": 0.12},
    "airport": {"classes": {"aircraft": 0.75, "car": 0.25}, "gsd": (0.5, 2.0), "p": 0.17},
    "depot": {"classes": {"tank": 0.75, "car": 0.25}, "gsd": (0.3, 1.5), "p": 0.16},
}
CAPS = {"harbor": 3, "bridge": 3}
ON_WATER = {"ship"}
ON_LAND = {"aircraft", "tank", "car"}


@dataclass
class SceneSpec:
    """Everything needed to render one scene, drawn from its own seeded generator."""

    width: int
    height: int
    gsd: float
    looks: int
    kind: str
    sea_level: float
    land_level: float
    nu: float | None
    shore: Shore | None = None
    targets: list[Target] = field(default_factory=list)


def choose_kind(rng: np.random.Generator, classes: tuple[str, ...]) -> str:
    names = [k for k, spec in KINDS.items() if set(spec["classes"]) & set(classes)]
    if not names:
        raise ValueError(f"no scene kind can show any of the classes {classes}")
    p = np.array([KINDS[k]["p"] for k in names])
    return str(names[int(rng.choice(len(names), p=p / p.sum()))])


def draw_count(rng: np.random.Generator, max_objects: int) -> int:
    """Heavy-tailed object count: geometric 0, 1, 2, ... with a dense mode of 20-60."""
    if rng.random() < DENSE_P:
        n = int(rng.integers(20, 61))
    else:
        n = int(rng.geometric(0.3)) - 1
    return max(0, min(n, max_objects))


def allot(rng: np.random.Generator, kind: str, n: int, classes: tuple[str, ...]) -> list[str]:
    """Class of each of ``n`` targets, from the kind's weights restricted to ``classes`` (structures first)."""
    weights = {c: w for c, w in KINDS[kind]["classes"].items() if c in classes}
    out: list[str] = []
    for _ in range(n):
        names = [c for c in weights if out.count(c) < CAPS.get(c, 1 << 30)]
        if not names:
            break
        p = np.array([weights[c] for c in names])
        out.append(names[int(rng.choice(len(names), p=p / p.sum()))])
    order = {"harbor": 0, "bridge": 1}
    return sorted(out, key=lambda c: order.get(c, 2))


def draw_spec(rng, width: int, height: int, classes: tuple[str, ...], max_objects: int, gsd: float | None):
    """The scene's kind, resolution, clutter levels and shore (targets are placed by :func:`place`)."""
    kind = choose_kind(rng, classes)
    lo, hi = KINDS[kind]["gsd"]
    g = float(gsd) if gsd is not None else round(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), 2)
    shore = None
    if kind == "coast":
        shore = random_shore(rng, (height, width))
    elif kind == "river":
        hw = float(np.clip(rng.uniform(30.0, 250.0) / g, 6.0, 0.15 * min(width, height)))
        shore = random_shore(rng, (height, width), half_width=hw)
    return SceneSpec(
        width=width,
        height=height,
        gsd=g,
        looks=int(rng.choice([1, 2, 3, 4], p=[0.25, 0.25, 0.25, 0.25])),
        kind=kind,
        sea_level=float(rng.uniform(0.012, 0.05)),
        land_level=float(rng.uniform(0.12, 0.3)),
        nu=float(rng.uniform(2.0, 20.0)) if rng.random() < 0.7 else None,
        shore=shore,
    )


class Placer:
    """Rejection sampling of footprints: inside the image, on the right surface, bounded overlap."""

    def __init__(self, spec: SceneSpec, water: np.ndarray) -> None:
        self.spec, self.water = spec, water
        self.placed: list[tuple[Target, Polygon, float]] = []

    def inside(self, poly: np.ndarray) -> bool:
        return bool(
            poly.min() >= 1
            and poly[:, 0].max() <= self.spec.width - 1
            and poly[:, 1].max() <= self.spec.height - 1
        )

    def surface_ok(self, t: Target, poly: np.ndarray) -> bool:
        if t.cls not in ON_WATER | ON_LAND:
            return True
        c = np.array([t.cx, t.cy])
        pts = np.vstack([poly, c[None], 0.5 * (poly + np.roll(poly, 1, axis=0))])
        ix = np.clip(pts[:, 0].astype(int), 0, self.spec.width - 1)
        iy = np.clip(pts[:, 1].astype(int), 0, self.spec.height - 1)
        wet = self.water[iy, ix]
        return bool(wet.all()) if t.cls in ON_WATER else bool(not wet.any())

    def overlap_ok(self, t: Target, shp: Polygon, radius: float) -> bool:
        for other, oshp, orad in self.placed:
            if np.hypot(t.cx - other.cx, t.cy - other.cy) > radius + orad:
                continue
            if "harbor" in (t.cls, other.cls) and t.cls != other.cls:
                continue
            if shp.intersection(oshp).area > MAX_OVERLAP * min(shp.area, oshp.area):
                return False
        return True

    def try_add(self, t: Target) -> bool:
        poly = t.polygon()
        if not self.inside(poly) or not self.surface_ok(t, poly):
            return False
        shp = Polygon(poly)
        radius = 0.5 * float(np.hypot(t.length, t.width))
        if not self.overlap_ok(t, shp, radius):
            return False
        self.placed.append((t, shp, radius))
        return True


def _size(rng, cls: str, gsd: float, scene_px: int) -> tuple[float, float] | None:
    rng_px = length_range_px(cls, gsd, scene_px)
    if rng_px is None:
        return None
    length = float(np.exp(rng.uniform(np.log(rng_px[0]), np.log(rng_px[1]))))
    spec = SIZES[cls]
    width = max(length * float(rng.uniform(*spec.ratio)), spec.min_width_px)
    return length, width


def _candidate(rng, spec: SceneSpec, cls: str, anchors: list[np.ndarray]) -> Target | None:
    """One random proposal for a target of ``cls``."""
    size = _size(rng, cls, spec.gsd, min(spec.width, spec.height))
    if size is None:
        return None
    length, width = size
    amp = float(rng.uniform(*AMPLITUDE[cls]))
    if cls in ("bridge", "harbor"):
        return _structure(rng, spec, cls, length, width, amp)
    if anchors and rng.random() < 0.7:
        a = anchors[int(rng.integers(len(anchors)))]
        cx, cy = a + rng.normal(0, 2.5 * length + 10, size=2)
    else:
        cx, cy = rng.uniform(0, spec.width), rng.uniform(0, spec.height)
    angle = float(rng.uniform(0, 180))
    if cls == "ship" and spec.kind == "river" and spec.shore is not None:
        t = spec.shore.tangent
        angle = float(np.degrees(np.arctan2(t[1], t[0])) + rng.normal(0, 8))
    extras = {}
    if cls == "ship":
        extras = {
            "heading": float(rng.choice([-1.0, 1.0])),
            "wake": bool(rng.random() < 0.3),
            "sidelobes": bool(rng.random() < 0.3),
        }
    return Target(cls, float(cx), float(cy), length, width, angle % 360, amp, extras)


def _structure(rng, spec: SceneSpec, cls: str, length: float, width: float, amp: float) -> Target | None:
    """Bridges span the river along its normal; harbours lie along the coast, mostly over water."""
    shore = spec.shore
    if shore is None:
        return None
    span = 0.45 * float(np.hypot(spec.width, spec.height))
    p = shore.point(float(rng.uniform(-span, span)))
    n, t = shore.normal, shore.tangent
    if cls == "bridge":
        hw = shore.half_width
        deck = 2 * hw + 2 * max(0.3 * hw, 4.0)
        ang = float(np.degrees(np.arctan2(n[1], n[0])))
        return Target(cls, float(p[0]), float(p[1]), deck, max(length, 2.0), ang % 360, amp)
    depth = width
    c = p - n * (0.2 * depth)  # land is s > 0, i.e. +n
    ang = float(np.degrees(np.arctan2(t[1], t[0])))
    v_axis = np.array([-np.sin(np.radians(ang)), np.cos(np.radians(ang))])
    land_sign = 1.0 if float(v_axis @ n) > 0 else -1.0
    return Target(cls, float(c[0]), float(c[1]), length, depth, ang % 360, amp, {"land_sign": land_sign})


def place(rng: np.random.Generator, spec: SceneSpec, water: np.ndarray, wanted: list[str]) -> list[Target]:
    """Place the wanted targets in order; a target that finds no valid spot in 40 tries is dropped."""
    placer = Placer(spec, water)
    anchors: list[np.ndarray] = []
    if len(wanted) >= 8 or rng.random() < 0.5:
        anchors = [
            np.array([rng.uniform(0, spec.width), rng.uniform(0, spec.height)])
            for _ in range(int(rng.integers(1, 4)))
        ]
    for cls in wanted:
        for _ in range(40):
            t = _candidate(rng, spec, cls, anchors)
            if t is None:
                break
            if placer.try_add(t):
                if cls == "harbor":
                    anchors.append(np.array([t.cx, t.cy]))
                break
    return [t for t, _, _ in placer.placed]
