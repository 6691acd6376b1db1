"""Scene attributes: the discretised facts a caption may claim, computed once per scene from geometry.

Every attribute is one small function registered by name with :func:`attribute`. It receives the scene's
:class:`Facts` (numpy arrays built once) and returns a hashable, discretised value, or ``None`` when the
scene does not support the claim (a template that requires it is then never chosen). Adding an attribute
is adding one function here; templates name it in their ``requires`` list and read it by that name.
Add its name to :data:`SIGNATURE_SAFE` only if :func:`signature` determines it (else template sets that
require it are computed scene by scene, correct but slower).

Definitions (also in docs/templates.md; the faithfulness tests re-check them from the boxes):

- *main class*: the most frequent canonical class (ties: alphabetical). Group claims are about it.
- *grid cell*: ``col = min(2, floor(3 cx / W))``, ``row = min(2, floor(3 cy / H))`` on the OBB centre;
  "centre" is the middle cell, "edge" any other cell.
- *size bucket* by instance area / image area: tiny < 0.1 %, small < 1 %, medium < 10 %, large >= 10 %.
- *orientation* from the OBB angle a (degrees, [0, 180)): horizontal if a < 22.5 or a >= 157.5,
  vertical if 67.5 <= a < 112.5, diagonal otherwise; boxes with long/short side < 1.2 have no orientation.
- *link*: two instances are linked when their centre distance <= f * (L_i + L_j) / 2, L = OBB long side;
  f = 2.0 for clusters, 1.0 for "densely packed". Clusters are connected components (single linkage).
- *row*: >= 3 main-class instances whose centres all lie within 0.5 * median short side of their
  principal (least-squares) line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from d2c.model import Scene

SIZE_THRESHOLDS = (("tiny", 0.001), ("small", 0.01), ("medium", 0.1))  # upper bounds; else "large"
ORIENTATION_MIN_ELONGATION = 1.2
LINK_FACTOR = 2.0
DENSE_FACTOR = 1.0
ROW_TOLERANCE = 0.5
CELL_NAMES = (
    ("top-left", "top", "top-right"),
    ("left", "centre", "right"),
    ("bottom-left", "bottom", "bottom-right"),
)

AttributeFn = Callable[["Facts"], Any]
T = TypeVar("T")
REGISTRY: dict[str, AttributeFn] = {}


def attribute(name: str) -> Callable[[AttributeFn], AttributeFn]:
    """Register ``fn`` as the attribute ``name`` (the name templates use in ``requires``)."""

    def register(fn: AttributeFn) -> AttributeFn:
        if name in REGISTRY:
            raise ValueError(f"attribute {name!r} is registered twice")
        REGISTRY[name] = fn
        return fn

    return register


@dataclass
class Facts:
    """Per-scene arrays shared by all attribute functions (built once, never mutated)."""

    scene: Scene
    classes: np.ndarray  # (N,) str
    difficult: np.ndarray  # (N,) bool
    centres: np.ndarray  # (N, 2)
    long: np.ndarray  # (N,) OBB long side in pixels
    short: np.ndarray  # (N,)
    angles: np.ndarray  # (N,) degrees
    areas: np.ndarray  # (N,) polygon area
    main: str | None  # most frequent class
    main_mask: np.ndarray  # (N,) bool
    sensors: dict[str, str]  # lower-case image_source alias -> sensor display name
    n_main: int = 0  # instances of the main class
    memo: dict[Any, Any] = field(default_factory=dict)  # shared intermediate results (components, cells)

    @property
    def has_frame(self) -> bool:
        return self.scene.width is not None and self.scene.height is not None


def build_facts(scene: Scene, sensors: dict[str, str] | None = None) -> Facts:
    insts = scene.instances
    obb = np.array([i.obb for i in insts], dtype=np.float64).reshape(-1, 5)
    classes = np.array([i.category for i in insts], dtype=object)
    counts = Counter(classes.tolist())
    main = min(counts, key=lambda c: (-counts[c], c)) if counts else None
    return Facts(
        scene=scene,
        classes=classes,
        difficult=np.array([i.difficult for i in insts], dtype=bool),
        centres=obb[:, :2],
        long=obb[:, 2],
        short=obb[:, 3],
        angles=obb[:, 4],
        areas=np.array([i.area for i in insts], dtype=np.float64),
        main=main,
        main_mask=classes == main if main is not None else np.zeros(0, dtype=bool),
        sensors={k.lower(): v for k, v in (sensors or {}).items()},
        n_main=counts[main] if main is not None else 0,
    )


def compute(
    scene: Scene, names: list[str] | None = None, sensors: dict[str, str] | None = None
) -> dict[str, Any]:
    """All registered attributes (or ``names``) of ``scene``: computed once, reused by every template.
    ``sensors`` maps lower-case ``image_source`` aliases to sensor names (synonyms.toml ``[sensors]``)."""
    facts = build_facts(scene, sensors)
    return {name: REGISTRY[name](facts) for name in (names or REGISTRY)}


# ---- a cache of attribute dicts by discretised scene signature ----

# Attributes whose value, for a scene without gsd and with fewer than ``SIGNATURE_MAX_MAIN`` main-class
# instances, depends only on the per-instance discrete values of :func:`signature` (class, difficult, grid
# cell, size bucket, orientation), whether the scene has a frame, and its image source. The arrangement
# attributes (which read continuous geometry) are all None below three main-class instances and the
# lengths are None without gsd. A template set needing any other attribute is never cached.
SIGNATURE_SAFE = frozenset({
    "empty", "total", "main", "only", "multi", "single_cell", "region", "centre_edge", "all_edge",
    "size_uniform", "size_dominant", "length_single", "length_range", "orientation_uniform",
    "orientation_dominant", "dense", "clusters", "scattered", "isolated", "row", "sensor",
})
SIGNATURE_MAX_MAIN = 3


def signature(scene: Scene) -> tuple | None:
    """A hashable key that determines every :data:`SIGNATURE_SAFE` attribute of ``scene``, or None when
    the scene's attributes read continuous geometry (gsd set, or three or more main-class instances).

    The key holds only what those attributes read: per class its count and difficult count, and for the
    main-class instances (the only ones position, size and orientation claims are about) their grid cell,
    size bucket and orientation, sorted (every such claim is a count, a majority or a uniformity, which
    ignore order). Most scenes of a large dataset share their key with many others, so their attribute
    dict is computed once (see :class:`AttributeCache`)."""
    if scene.gsd is not None:
        return None
    insts = scene.instances
    counts: dict[str, list[int]] = {}
    for i in insts:
        c = counts.get(i.category)
        if c is None:
            c = counts[i.category] = [0, 0]
        c[0] += 1
        c[1] += bool(i.difficult)
    main = min(counts, key=lambda k: (-counts[k][0], k)) if counts else None
    if main is not None and counts[main][0] >= SIGNATURE_MAX_MAIN:
        return None
    w, h = scene.width, scene.height
    framed = w is not None and h is not None
    per: list[tuple] = []
    for i in insts:
        if i.category != main:
            continue
        _, _, long, short, angle = i.obb
        orient = orientation_word(angle, long, short)
        if framed:
            per.append((grid_cell(i.obb[0], i.obb[1], w, h), size_bucket(i.area / float(w * h)), orient))  # type: ignore[arg-type,operator]
        else:
            per.append((None, None, orient))
    classes = tuple(sorted((k, v[0], v[1]) for k, v in counts.items()))
    return (framed, scene.image_source, classes, tuple(sorted(per, key=repr)))


class AttributeCache(Generic[T]):
    """``derive(compute(scene))`` memoised by :func:`signature`, for one template set and sensor table:
    exact, because a signature determines every attribute asked for (other attribute sets, and scenes
    without a signature, are computed every time). ``derive`` lets the caller keep what it works out
    from the attributes (eligible templates, contexts) with them. Cleared when it holds ``limit`` entries."""

    def __init__(self, names: list[str], sensors: dict[str, str] | None = None, *,
                 derive: Callable[[dict[str, Any]], T], limit: int = 200_000) -> None:
        self.names = list(names)
        self.sensors = sensors
        self.derive = derive
        self.limit = limit
        self.enabled = set(self.names) <= SIGNATURE_SAFE
        self._memo: dict[tuple, T] = {}

    def get(self, scene: Scene) -> T:
        """The derived attributes of ``scene`` (shared between scenes: callers must not mutate them)."""
        key = signature(scene) if self.enabled else None
        if key is None:
            return self.derive(compute(scene, self.names, self.sensors))
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) >= self.limit:
                self._memo.clear()
            hit = self._memo[key] = self.derive(compute(scene, self.names, self.sensors))
        return hit


# ---- discretisation helpers (shared with the tests' independent checks only through the constants) ----


def grid_cell(x: float, y: float, width: int, height: int) -> str:
    col = min(2, max(0, int(np.floor(3.0 * x / width))))
    row = min(2, max(0, int(np.floor(3.0 * y / height))))
    return CELL_NAMES[row][col]


def size_bucket(rel_area: float) -> str:
    for name, upper in SIZE_THRESHOLDS:
        if rel_area < upper:
            return name
    return "large"


def orientation_word(angle: float, long: float, short: float) -> str | None:
    if short > 0 and long / short < ORIENTATION_MIN_ELONGATION:
        return None
    if angle < 22.5 or angle >= 157.5:
        return "horizontal"
    if 67.5 <= angle < 112.5:
        return "vertical"
    return "diagonal"


def metres_step(value: float) -> int:
    """Rounding step for stated lengths: 1 m below 20 m, 5 m below 100 m, else 10 m."""
    return 1 if value < 20 else 5 if value < 100 else 10


def round_metres(value: float) -> int:
    step = metres_step(value)
    return max(step, int(round(value / step)) * step)


def components(centres: np.ndarray, long: np.ndarray, factor: float) -> np.ndarray:
    """Single-linkage component label per instance under the link rule with ``factor``."""
    n = len(centres)
    if n == 0:
        return np.zeros(0, dtype=int)
    d = np.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1))
    adj = (d <= factor * (long[:, None] + long[None, :]) / 2.0).tolist()
    labels = [-1] * n
    for start in range(n):
        if labels[start] >= 0:
            continue
        labels[start] = start
        stack = [start]
        while stack:
            row = adj[stack.pop()]
            for j in range(n):
                if row[j] and labels[j] < 0:
                    labels[j] = start
                    stack.append(j)
    return np.asarray(labels)


def _majority(values: list[Any]) -> Any:
    """The value more than half of ``values`` share, else None."""
    if not values:
        return None
    value, n = Counter(values).most_common(1)[0]
    return value if n * 2 > len(values) else None


def _uniform(values: list[Any]) -> Any:
    return values[0] if values and all(v == values[0] for v in values) else None


def _group(f: Facts) -> tuple[str, int, int]:
    if "group" not in f.memo:
        f.memo["group"] = (str(f.main), f.n_main, int(f.difficult[f.main_mask].sum()))
    return f.memo["group"]


# ---- counts ----


@attribute("empty")
def _empty(f: Facts) -> bool | None:
    """True for a scene with no annotated object (templates claim only 'no annotated targets')."""
    return True if len(f.classes) == 0 else None


@attribute("total")
def _total(f: Facts) -> tuple[int, int] | None:
    """(objects, difficult objects) over all classes."""
    return (len(f.classes), int(f.difficult.sum())) if len(f.classes) else None


@attribute("main")
def _main(f: Facts) -> tuple[str, int, int] | None:
    """(class, count, difficult count) of the most frequent class."""
    return _group(f) if f.main is not None else None


@attribute("only")
def _only(f: Facts) -> tuple[str, int, int] | None:
    """Like ``main`` but only when it is the scene's single class (allows 'only ships')."""
    return _group(f) if f.main is not None and len(set(f.classes.tolist())) == 1 else None


@attribute("multi")
def _multi(f: Facts) -> tuple[tuple[str, int, int], ...] | None:
    """((class, count, difficult), ...) by count then name, when two or more classes are present."""
    counts = Counter(f.classes.tolist())
    if len(counts) < 2:
        return None
    order = sorted(counts, key=lambda c: (-counts[c], c))
    return tuple((c, counts[c], int(f.difficult[f.classes == c].sum())) for c in order)


# ---- position ----


def _main_cells(f: Facts) -> list[str]:
    """Grid cells of the main-class instances, memoised for the position attributes."""
    if "cells" not in f.memo:
        w, h = f.scene.width, f.scene.height
        pts = f.centres[f.main_mask].tolist()
        f.memo["cells"] = [grid_cell(x, y, w, h) for x, y in pts]  # type: ignore[arg-type]
    return f.memo["cells"]


@attribute("single_cell")
def _single_cell(f: Facts) -> str | None:
    """Grid cell of the scene's only object."""
    if len(f.classes) != 1 or not f.has_frame:
        return None
    return _main_cells(f)[0]


@attribute("region")
def _region(f: Facts) -> str | None:
    """Cell shared by more than half of the main class's instances (two or more of them)."""
    if f.main is None or not f.has_frame or f.n_main < 2:
        return None
    return _majority(_main_cells(f))


@attribute("centre_edge")
def _centre_edge(f: Facts) -> tuple[int, int] | None:
    """(main-class instances in the centre cell, in edge cells), when both are non-zero."""
    if f.main is None or not f.has_frame:
        return None
    cells = _main_cells(f)
    c = sum(1 for x in cells if x == "centre")
    return (c, len(cells) - c) if 0 < c < len(cells) else None


@attribute("all_edge")
def _all_edge(f: Facts) -> tuple[str, int, int] | None:
    """The main group (see ``main``) when all of its two or more instances lie in edge cells."""
    if f.main is None or not f.has_frame or f.n_main < 2:
        return None
    return _group(f) if all(c != "centre" for c in _main_cells(f)) else None


# ---- size ----


def _buckets(f: Facts, mask: np.ndarray) -> list[str]:
    frame = float(f.scene.width * f.scene.height)  # type: ignore[operator]
    return [size_bucket(a / frame) for a in f.areas[mask]]


@attribute("size_uniform")
def _size_uniform(f: Facts) -> str | None:
    """Size bucket shared by every main-class instance."""
    if f.main is None or not f.has_frame:
        return None
    return _uniform(_buckets(f, f.main_mask))


@attribute("size_dominant")
def _size_dominant(f: Facts) -> str | None:
    """Size bucket of more than half (not all) of three or more main-class instances."""
    if f.main is None or not f.has_frame or f.n_main < 3:
        return None
    b = _buckets(f, f.main_mask)
    return None if _uniform(b) else _majority(b)


@attribute("length_single")
def _length_single(f: Facts) -> int | None:
    """Rounded length in metres of the only main-class instance (OBB long side x gsd)."""
    if f.main is None or f.scene.gsd is None or f.n_main != 1:
        return None
    return round_metres(float(f.long[f.main_mask][0]) * f.scene.gsd)


@attribute("length_range")
def _length_range(f: Facts) -> tuple[int, int] | None:
    """(shortest, longest) main-class length in metres, rounded outwards, when they differ."""
    if f.main is None or f.scene.gsd is None or f.n_main < 2:
        return None
    lengths = f.long[f.main_mask] * f.scene.gsd
    lo, hi = float(lengths.min()), float(lengths.max())
    lo_r = int(np.floor(lo / metres_step(lo))) * metres_step(lo)
    hi_r = int(np.ceil(hi / metres_step(hi))) * metres_step(hi)
    return (lo_r, hi_r) if lo_r < hi_r else None


# ---- orientation ----


def _orientations(f: Facts, mask: np.ndarray) -> list[str | None]:
    return [
        orientation_word(a, lo, s)
        for a, lo, s in zip(f.angles[mask], f.long[mask], f.short[mask], strict=True)
    ]


@attribute("orientation_uniform")
def _orientation_uniform(f: Facts) -> str | None:
    """Orientation every main-class instance shares (none of them square-ish)."""
    if f.main is None:
        return None
    return _uniform(_orientations(f, f.main_mask))


@attribute("orientation_dominant")
def _orientation_dominant(f: Facts) -> str | None:
    """Orientation of more than half (not all) of three or more main-class instances."""
    if f.main is None or f.n_main < 3:
        return None
    o = _orientations(f, f.main_mask)
    return None if _uniform(o) else _majority(o)


# ---- arrangement (main class) ----


def _main_labels(f: Facts, factor: float) -> np.ndarray:
    key = ("main_labels", factor)
    if key not in f.memo:
        m = f.main_mask
        f.memo[key] = components(f.centres[m], f.long[m], factor)
    return f.memo[key]


@attribute("dense")
def _dense(f: Facts) -> bool | None:
    """Four or more main-class instances forming one component at the dense link factor."""
    if f.main is None or f.n_main < 4:
        return None
    return True if len(set(_main_labels(f, DENSE_FACTOR).tolist())) == 1 else None


@attribute("clusters")
def _clusters(f: Facts) -> int | None:
    """Number of main-class clusters (components with two or more members), given three or more."""
    if f.main is None or f.n_main < 3:
        return None
    sizes = Counter(_main_labels(f, LINK_FACTOR).tolist())
    k = sum(1 for n in sizes.values() if n >= 2)
    return k if k >= 1 else None


@attribute("scattered")
def _scattered(f: Facts) -> bool | None:
    """Three or more main-class instances with no link between any two of them."""
    if f.main is None or f.n_main < 3:
        return None
    labels = _main_labels(f, LINK_FACTOR)
    return True if len(set(labels.tolist())) == len(labels) else None


@attribute("isolated")
def _isolated(f: Facts) -> int | None:
    """Main-class instances linked to no other instance of any class, when some others are clustered."""
    if f.main is None or f.n_main < 3:
        return None
    labels = components(f.centres, f.long, LINK_FACTOR)
    sizes = Counter(labels.tolist())
    alone = sum(1 for lab in labels[f.main_mask] if sizes[lab] == 1)
    clustered = sum(1 for lab in labels[f.main_mask] if sizes[lab] >= 2)
    return alone if alone >= 1 and clustered >= 2 else None


@attribute("row")
def _row(f: Facts) -> bool | None:
    """Three or more main-class centres within ``ROW_TOLERANCE`` x median short side of one line."""
    m = f.main_mask
    if f.main is None or f.n_main < 3:
        return None
    c = f.centres[m] - f.centres[m].mean(axis=0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    residual = np.abs(c @ vt[1])
    return True if residual.max() <= ROW_TOLERANCE * float(np.median(f.short[m])) else None


# ---- sensor ----


@attribute("sensor")
def _sensor(f: Facts) -> str | None:
    """Display name of the sensor named by ``scene.image_source``, when it names a known one."""
    src = (f.scene.image_source or "").strip().lower()
    return f.sensors.get(src) if src else None
