"""Scene attributes: the discretised facts a caption may claim, computed from geometry for many scenes at once.

Every attribute is one function registered by name. The built-in ones are registered with
:func:`batch_attribute`: they receive a :class:`Batch` (numpy arrays over all instances of a list of scenes,
built once) and return one hashable, discretised value per scene, or ``None`` where the scene does not
support the claim (a template that requires it is then never chosen). A conversion captions scenes in chunks
of thousands, so a vectorised attribute costs a few numpy calls per chunk instead of Python work per scene.
An attribute may also be written for one scene at a time with :func:`attribute` (it receives the scene's
:class:`Facts`); it is then called scene by scene. Templates name attributes in their ``requires`` list and
read them by that name.

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

import bisect
import functools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar

import numpy as np

from d2c.blocks import SceneBlock
from d2c.model import Scene
from d2c.partial import PARTIAL_FLAG

SIZE_THRESHOLDS = (("tiny", 0.001), ("small", 0.01), ("medium", 0.1))  # upper bounds; else "large"
SIZE_NAMES = ("tiny", "small", "medium", "large")
_SIZE_UPPER = [u for _, u in SIZE_THRESHOLDS]
ORIENTATION_NAMES = (None, "horizontal", "vertical", "diagonal")  # code 0: no orientation (square-ish)
ORIENTATION_MIN_ELONGATION = 1.2
LINK_FACTOR = 2.0
DENSE_FACTOR = 1.0
ROW_TOLERANCE = 0.5
CELL_NAMES = (
    ("top-left", "top", "top-right"),
    ("left", "centre", "right"),
    ("bottom-left", "bottom", "bottom-right"),
)
_CELLS = tuple(c for row in CELL_NAMES for c in row)  # by cell code row * 3 + col
_CENTRE = 4
SHARED_MAX_MAIN = 3  # from this many main-class instances on, the arrangement attributes read geometry
FACTS_HEAD = 4 + 3 * (SHARED_MAX_MAIN - 1)  # columns of Batch.discrete_facts before the classes' facts

AttributeFn = Callable[["Facts"], Any]
BatchFn = Callable[["Batch"], list[Any]]
T = TypeVar("T")
REGISTRY: dict[str, Callable[..., Any]] = {}  # name -> AttributeFn, or BatchFn for the names in _BATCH
_BATCH: set[str] = set()


def attribute(name: str) -> Callable[[AttributeFn], AttributeFn]:
    """Register ``fn(facts) -> value`` as the attribute ``name`` (the name templates use in ``requires``),
    computed one scene at a time."""

    def register(fn: AttributeFn) -> AttributeFn:
        _register(name, fn)
        return fn

    return register


def batch_attribute(name: str) -> Callable[[BatchFn], BatchFn]:
    """Register ``fn(batch) -> [value per scene]`` as the attribute ``name``, computed for many scenes at once."""

    def register(fn: BatchFn) -> BatchFn:
        _register(name, fn)
        _BATCH.add(name)
        return fn

    return register


def _register(name: str, fn: Callable[..., Any]) -> None:
    if name in REGISTRY:
        raise ValueError(f"attribute {name!r} is registered twice")
    REGISTRY[name] = fn


@dataclass
class Facts:
    """Per-scene arrays for attributes written with :func:`attribute` (built once, never mutated)."""

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
    memo: dict[Any, Any] = field(default_factory=dict)  # shared intermediate results

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
    """All registered attributes (or ``names``) of ``scene``.
    ``sensors`` maps lower-case ``image_source`` aliases to sensor names (synonyms.toml ``[sensors]``)."""
    names = list(names or REGISTRY)
    return dict(zip(names, compute_many([scene], names, sensors)[0], strict=True))


def compute_many(
    scenes: Sequence[Scene], names: list[str], sensors: dict[str, str] | None = None
) -> list[tuple[Any, ...]]:
    """The values of ``names`` for every scene, as one tuple per scene in ``names`` order: the same values
    :func:`compute` gives scene by scene, whatever the batch."""
    return Batch.of(scenes, sensors).values(names)


# ---- the batch: arrays over every instance of a list of scenes ----


@dataclass
class Batch:
    """Instances of a block of scenes flattened in scene order (``sid`` says whose each is), with per-scene
    sizes; the derived arrays (classes per scene, main class, grid cells, ...) are computed on first use."""

    block: SceneBlock
    sensors: dict[str, str]  # lower-case image_source alias -> sensor display name
    count: int  # S, the number of scenes
    n: np.ndarray  # (S,) instances per scene
    sid: np.ndarray  # (M,) scene index of each instance
    cls: np.ndarray  # (M,) class code: index into class_names, which are sorted
    class_names: list[str]
    difficult: np.ndarray  # (M,) bool
    obb: np.ndarray  # (M, 5) cx, cy, long, short, angle
    areas: np.ndarray  # (M,)
    framed: np.ndarray  # (S,) bool: width and height known
    frame: np.ndarray  # (S,) width * height as float (1.0 where unknown)
    width: np.ndarray  # (S,) float (1.0 where unknown)
    height: np.ndarray  # (S,) float (1.0 where unknown)
    gsd: np.ndarray  # (S,) float (nan where unknown)
    given: Sequence[Scene] | None = None  # the Scenes, when the batch was made of Scenes

    @classmethod
    def of(cls, scenes: Sequence[Scene], sensors: dict[str, str] | None = None) -> Batch:
        return cls.of_block(SceneBlock.from_scenes(scenes), sensors, scenes)

    @classmethod
    def of_block(cls, block: SceneBlock, sensors: dict[str, str] | None = None,
                 scenes: Sequence[Scene] | None = None) -> Batch:
        """The batch of ``block`` (``scenes``: the same scenes as objects, when the caller has them)."""
        names = sorted(set(block.category))
        code = {c: k for k, c in enumerate(names)}
        width = np.array(block.width, dtype=np.float64)  # None -> nan
        height = np.array(block.height, dtype=np.float64)
        framed = ~(np.isnan(width) | np.isnan(height))
        return cls(
            block=block,
            sensors={k.lower(): v for k, v in (sensors or {}).items()},
            count=len(block),
            n=block.n,
            sid=np.repeat(np.arange(len(block)), block.n),
            cls=np.fromiter(map(code.__getitem__, block.category), np.int64, block.num_instances),
            class_names=names,
            difficult=block.difficult,
            obb=block.obb,
            areas=block.area,
            framed=framed,
            frame=np.where(framed, width * height, 1.0),  # exact: the product of two integers, rounded once
            width=np.where(framed, width, 1.0),
            height=np.where(framed, height, 1.0),
            gsd=np.array(block.gsd, dtype=np.float64),
            given=scenes,
        )

    @cached_property
    def scenes(self) -> Sequence[Scene]:
        """The scenes as objects (built from the block when the batch was made of one)."""
        return self.given if self.given is not None else self.block.scenes()

    def values(self, names: list[str]) -> list[tuple[Any, ...]]:
        """One tuple of the attributes ``names`` per scene."""
        columns = []
        for name in names:
            fn = REGISTRY[name]
            columns.append(fn(self) if name in _BATCH else [fn(f) for f in self.facts])
        if not columns:
            return [()] * self.count
        return list(zip(*columns, strict=True))

    @cached_property
    def shared(self) -> np.ndarray:
        """Scenes whose attributes read only discrete per-instance facts (no gsd, fewer than
        :data:`SHARED_MAX_MAIN` main-class instances): most of them share their values with many others."""
        return np.isnan(self.gsd) & (self.classes.n_main < SHARED_MAX_MAIN)

    @cached_property
    def partial(self) -> np.ndarray:
        """(S,) bool: the scene is flagged :data:`d2c.partial.PARTIAL_FLAG` (some objects were rejected)."""
        return np.fromiter((PARTIAL_FLAG in f for f in self.block.flags), bool, self.count)

    @cached_property
    def facts(self) -> list[Facts]:
        """Per-scene :class:`Facts`, for attributes registered with :func:`attribute`."""
        return [build_facts(s, self.sensors) for s in self.scenes]

    @cached_property
    def classes(self) -> _Classes:
        return _Classes.of(self)

    @cached_property
    def main_idx(self) -> np.ndarray:
        """Indices of the main-class instances, in scene order."""
        return np.flatnonzero(self.cls == self.classes.main[self.sid])

    @cached_property
    def groups(self) -> list[tuple[str, int, int] | None]:
        """Per scene ``(main class, count, difficult count)``, None for an empty scene."""
        c = self.classes
        names = self.class_names
        return [
            (names[k], n, d) if k >= 0 else None
            for k, n, d in zip(c.main.tolist(), c.n_main.tolist(), c.d_main.tolist(), strict=True)
        ]

    @cached_property
    def arrangement(self) -> _Arrangement:
        return _arrangement(self)

    def main_counts(self, codes: np.ndarray, width: int) -> np.ndarray:
        """(S, width) counts of the main-class instances' ``codes`` (one code in [0, width) each) per scene."""
        key = self.sid[self.main_idx] * width + codes
        return np.bincount(key, minlength=self.count * width).reshape(-1, width)

    @cached_property
    def main_cells(self) -> np.ndarray:
        """Grid cell code of each main-class instance (:attr:`main_idx` order; no meaning without a frame)."""
        i = self.main_idx
        s = self.sid[i]
        return cell_codes(self.obb[i, 0], self.obb[i, 1], self.width[s], self.height[s])

    @cached_property
    def main_sizes(self) -> np.ndarray:
        """Size bucket code of each main-class instance (no meaning without a frame)."""
        i = self.main_idx
        return size_codes(self.areas[i] / self.frame[self.sid[i]])

    @cached_property
    def main_orientations(self) -> np.ndarray:
        """Orientation code of each main-class instance (see :data:`ORIENTATION_NAMES`)."""
        o = self.obb[self.main_idx]
        return orientation_codes(o[:, 4], o[:, 2], o[:, 3])

    @cached_property
    def cell_counts(self) -> np.ndarray:
        """(S, 9) main-class instances per grid cell (zero for scenes without a frame)."""
        return self.main_counts(self.main_cells, 9) * self.framed[:, None]

    @cached_property
    def size_counts(self) -> np.ndarray:
        """(S, 4) main-class instances per size bucket (zero for scenes without a frame)."""
        return self.main_counts(self.main_sizes, 4) * self.framed[:, None]

    @cached_property
    def orientation_counts(self) -> np.ndarray:
        """(S, 4) main-class instances per orientation code (see :data:`ORIENTATION_NAMES`)."""
        return self.main_counts(self.main_orientations, 4)

    def discrete_facts(self, class_ids: np.ndarray, source_ids: np.ndarray) -> np.ndarray:
        """For every scene one int row of what the attributes of a :attr:`shared` scene read: [framed + 2 x
        partial, image source id, main-class count, number of classes, (cell, size, orientation) code of its first
        two main-class instances in instance order, (class id, count, difficult count) of each class in
        :class:`_Classes` order], padded with -1 (the two counts say how much of the row is used).
        ``class_ids`` maps this batch's class codes and ``source_ids`` its scenes to ids that mean the
        same thing in every batch. Shared scenes with equal rows have equal :data:`SIGNATURE_SAFE`
        attributes (the facts :func:`signature` keys on, as codes); rows of other scenes mean nothing."""
        c = self.classes
        rows = np.full((self.count, FACTS_HEAD + 3 * int(c.per_scene.max(initial=0))), -1, np.int64)
        rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] = self.framed + 2 * self.partial, source_ids, c.n_main, c.per_scene
        s = self.sid[self.main_idx]
        rank = np.arange(len(s)) - np.searchsorted(s, s)  # the main-class instances of a scene are consecutive
        first = rank < SHARED_MAX_MAIN - 1  # all of a shared scene's
        for j, codes in enumerate((self.main_cells, self.main_sizes, self.main_orientations)):
            rows[s[first], 4 + 3 * rank[first] + j] = codes[first]
        rank = np.arange(len(c.pair_scene)) - c.offsets[c.pair_scene]
        for j, values in enumerate((class_ids[c.pair_class], c.pair_count, c.pair_difficult)):
            rows[c.pair_scene, FACTS_HEAD + 3 * rank + j] = values
        return rows

    def where(self, mask: np.ndarray, values: Sequence[Any]) -> list[Any]:
        """``values[k]`` where ``mask[k]``, else None."""
        return [v if m else None for m, v in zip(mask.tolist(), values, strict=True)]

    def named(self, mask: np.ndarray, codes: np.ndarray, names: Sequence[Any]) -> list[Any]:
        """``names[codes[k]]`` where ``mask[k]``, else None."""
        return _name_table(tuple(names))[np.where(mask, codes, len(names))].tolist()


@functools.lru_cache(maxsize=64)
def _name_table(names: tuple[Any, ...]) -> np.ndarray:
    """``names`` with None appended, as an object array (built once per name list: read, never written)."""
    return np.array([*names, None], dtype=object)


@dataclass
class _Classes:
    """The (scene, class) pairs of a batch with their counts, each scene's pairs by count then name (so its
    first is the main class), and per scene the main class code (-1 for an empty scene) with its count and
    difficult count."""

    pair_scene: np.ndarray  # (P,) scene of each (scene, class) pair, ascending
    pair_class: np.ndarray  # (P,) class code
    pair_count: np.ndarray
    pair_difficult: np.ndarray
    offsets: np.ndarray  # (S + 1,) each scene's pairs are pair_*[offsets[s]:offsets[s + 1]]
    main: np.ndarray
    n_main: np.ndarray
    d_main: np.ndarray

    @classmethod
    def of(cls, b: Batch) -> _Classes:
        width = max(len(b.class_names), 1)
        keys, inv, count = np.unique(b.sid * width + b.cls, return_inverse=True, return_counts=True)
        difficult = np.bincount(inv, weights=b.difficult, minlength=len(keys)).astype(np.int64)
        scene, code = keys // width, keys % width
        order = np.lexsort((code, -count, scene))
        scene, code, count, difficult = scene[order], code[order], count[order], difficult[order]
        per_scene = np.bincount(scene, minlength=b.count)
        offsets = np.concatenate(([0], np.cumsum(per_scene)))
        first = offsets[:-1][per_scene > 0]
        main = np.full(b.count, -1, dtype=np.int64)
        n_main = np.zeros(b.count, dtype=np.int64)
        d_main = np.zeros(b.count, dtype=np.int64)
        main[scene[first]], n_main[scene[first]], d_main[scene[first]] = code[first], count[first], difficult[first]
        return cls(scene, code, count, difficult, offsets, main, n_main, d_main)

    @property
    def per_scene(self) -> np.ndarray:
        return np.diff(self.offsets)


# ---- discretisation, vectorised (the scalar helpers below call these) ----


def cell_codes(x: np.ndarray, y: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """Grid cell code ``row * 3 + col`` (see :data:`CELL_NAMES`) of centres in frames of the given sizes."""
    col = np.clip(np.floor(3.0 * x / width), 0, 2).astype(np.int64)
    row = np.clip(np.floor(3.0 * y / height), 0, 2).astype(np.int64)
    return row * 3 + col


def size_codes(rel_area: np.ndarray) -> np.ndarray:
    """Index into :data:`SIZE_NAMES`: the first bucket whose upper bound exceeds the relative area."""
    return np.searchsorted(np.array(_SIZE_UPPER), rel_area, side="right")


def orientation_codes(angle: np.ndarray, long: np.ndarray, short: np.ndarray) -> np.ndarray:
    """Index into :data:`ORIENTATION_NAMES` (0: too square-ish to have an orientation)."""
    ratio = np.divide(long, short, out=np.full(np.shape(long), np.inf), where=short > 0)
    code = np.where((angle < 22.5) | (angle >= 157.5), 1, np.where((angle >= 67.5) & (angle < 112.5), 2, 3))
    return np.where((short > 0) & (ratio < ORIENTATION_MIN_ELONGATION), 0, code)


def cell_code(x: float, y: float, width: float, height: float) -> int:
    """:func:`cell_codes` of one centre in plain Python (the same float operations, so the same code), for
    :func:`signature`, which must cost little per scene. Raises on a zero or non-finite frame or centre
    (where the array version would divide by zero or floor an infinity)."""
    col = min(2, max(0, math.floor(3.0 * x / width)))
    row = min(2, max(0, math.floor(3.0 * y / height)))
    return row * 3 + col


def size_code(rel_area: float) -> int:
    """:func:`size_codes` of one relative area in plain Python (``searchsorted(..., side="right")``)."""
    return bisect.bisect_right(_SIZE_UPPER, rel_area)


def orientation_code(angle: float, long: float, short: float) -> int:
    """:func:`orientation_codes` of one box in plain Python, with the same comparisons in the same order."""
    if short > 0 and long / short < ORIENTATION_MIN_ELONGATION:
        return 0
    return 1 if angle < 22.5 or angle >= 157.5 else 2 if 67.5 <= angle < 112.5 else 3


def grid_cell(x: float, y: float, width: int, height: int) -> str:
    return _CELLS[cell_code(float(x), float(y), float(width), float(height))]


def size_bucket(rel_area: float) -> str:
    return SIZE_NAMES[size_code(float(rel_area))]


def orientation_word(angle: float, long: float, short: float) -> str | None:
    return ORIENTATION_NAMES[orientation_code(float(angle), float(long), float(short))]


def metres_step(value: float) -> int:
    """Rounding step for stated lengths: 1 m below 20 m, 5 m below 100 m, else 10 m."""
    return 1 if value < 20 else 5 if value < 100 else 10


def round_metres(value: float) -> int:
    step = metres_step(value)
    return max(step, int(round(value / step)) * step)


def metres_range(lo: float, hi: float) -> tuple[int, int] | None:
    """(lo rounded down, hi rounded up) to their steps, when they still differ."""
    lo_r = int(np.floor(lo / metres_step(lo))) * metres_step(lo)
    hi_r = int(np.ceil(hi / metres_step(hi))) * metres_step(hi)
    return (lo_r, hi_r) if lo_r < hi_r else None


# ---- a cache of whatever is derived from an attribute tuple ----


# The built-in attributes whose values, for a scene :func:`signature` keys (no gsd, fewer than
# SHARED_MAX_MAIN main-class instances), depend only on what the key holds. An attribute registered later
# is not in it, so a name list including one never uses the key (see AttributeCache).
SIGNATURE_SAFE = frozenset({
    "empty", "total", "main", "only", "multi", "single_cell", "region", "centre_edge", "all_edge",
    "size_uniform", "size_dominant", "length_single", "length_range", "orientation_uniform",
    "orientation_dominant", "dense", "clusters", "scattered", "isolated", "row", "sensor", "partial",
})
SMALL_BATCH = 16  # up to this many scenes, AttributeCache.get_many looks scenes up by signature first


def _row_keys(rows: np.ndarray, used: np.ndarray) -> list[bytes]:
    """The first ``used[k]`` values of each row ``k`` as bytes: hashable keys, equal when the values are."""
    rows = np.ascontiguousarray(rows)
    raw = rows.tobytes()
    starts = np.arange(len(rows)) * (rows.shape[1] * rows.itemsize)
    ends = starts + used * rows.itemsize
    return [raw[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


class AttributeCache(Generic[T]):
    """``derive(attributes)`` memoised by the attribute values themselves (so exact), for one set of names
    and sensor table. Most scenes of a large dataset share their values with many others, so what the
    caller works out from them (eligible templates, renderings) is shared too. Scenes whose attributes read
    continuous geometry (see :attr:`Batch.shared`) rarely share them and are derived every time, so they
    do not fill the memo. Cleared when it holds ``limit`` entries.

    When every name is in :data:`SIGNATURE_SAFE`, the shared scenes are first looked up by their
    :meth:`Batch.discrete_facts` (a few array operations for the whole batch, then one bytes key per
    scene), which determine those attributes: only the scenes whose facts are new, and the scenes that are
    not shared, have their attribute values computed (as a sub-batch), which costs most of the Python time
    per scene otherwise. A small batch (one scene captioned at a time) would pay the fixed cost of the array
    computations for each scene, so it first looks each scene up by :func:`signature` (plain Python, a few
    microseconds), the same facts as a tuple."""

    def __init__(self, names: list[str], sensors: dict[str, str] | None = None, *,
                 derive: Callable[[dict[str, Any]], T], limit: int = 200_000) -> None:
        self.names = list(names)
        self.sensors = sensors
        self.derive = derive
        self.limit = limit
        self.by_signature = set(self.names) <= SIGNATURE_SAFE
        self._memo: dict[tuple, T] = {}
        self._signed: dict[tuple, T] = {}
        self._by_facts: dict[bytes, T] = {}
        self._ids: dict[Any, int] = {}  # class name or image source -> its id in discrete_facts rows

    def get(self, scene: Scene) -> T:
        """The derived attributes of ``scene`` (shared between scenes: callers must not mutate them)."""
        return self.get_many([scene])[0]

    def get_many(self, scenes: Sequence[Scene]) -> list[T]:
        """:meth:`get` of every scene, with the attributes computed for all of them at once."""
        if not self.by_signature or len(scenes) > SMALL_BATCH:
            return self._computed(scenes)
        keys = [signature(s) for s in scenes]
        out: list[Any] = [None if k is None else self._signed.get(k) for k in keys]
        todo = [k for k, hit in enumerate(out) if hit is None]
        if todo:
            for k, value in zip(todo, self._computed([scenes[k] for k in todo]), strict=True):
                out[k] = value
                if keys[k] is not None:
                    if len(self._signed) >= self.limit:
                        self._signed.clear()
                    self._signed[keys[k]] = value
        return out

    def get_block(self, block: SceneBlock) -> list[T]:
        """:meth:`get_many` of the scenes of ``block``."""
        if len(block) <= SMALL_BATCH and self.by_signature:
            return self.get_many(block.scenes())
        return self._derived(Batch.of_block(block, self.sensors))

    def _computed(self, scenes: Sequence[Scene]) -> list[T]:
        """:meth:`get_many` through the array computation of every scene's attributes."""
        return self._derived(Batch.of(scenes, self.sensors))

    def _derived(self, batch: Batch) -> list[T]:
        """``derive`` of each scene's attributes, memoised (see the class)."""
        if not self.by_signature:
            return self._from_values(batch)
        shared = np.flatnonzero(batch.shared)
        keys = self._fact_keys(batch, shared)
        found = list(map(self._by_facts.get, keys))
        missing = [j for j, hit in enumerate(found) if hit is None]
        new: dict[bytes, int] = {}  # each new key -> its first scene
        for j in missing:
            new.setdefault(keys[j], shared.item(j))
        others = np.flatnonzero(~batch.shared).tolist()
        out: list[Any] = [None] * batch.count
        todo = sorted([*new.values(), *others])
        if todo:
            sub = Batch.of_block(batch.block.take(todo), self.sensors)
            computed = dict(zip(todo, self._from_values(sub), strict=True))
            for k in others:
                out[k] = computed[k]
            if len(self._by_facts) + len(new) > self.limit:
                self._by_facts.clear()
            for key, k in new.items():
                self._by_facts[key] = computed[k]
            for j in missing:
                found[j] = computed[new[keys[j]]]
        for k, hit in zip(shared.tolist(), found, strict=True):
            out[k] = hit
        return out

    def _fact_keys(self, batch: Batch, scenes: np.ndarray) -> list[bytes]:
        """The key of each of the shared ``scenes`` of ``batch``: its :meth:`Batch.discrete_facts` row."""
        sources = batch.block.image_source
        local = {src: self._id(("source", src)) for src in set(sources)}
        facts = batch.discrete_facts(
            np.array([self._id(("class", name)) for name in batch.class_names], np.int64),
            np.fromiter(map(local.__getitem__, sources), np.int64, batch.count),
        )[scenes]
        return _row_keys(facts, FACTS_HEAD + 3 * facts[:, 3])

    def _id(self, key: tuple) -> int:
        """The id of a class name or image source in :meth:`Batch.discrete_facts` rows (the same for the
        cache's lifetime)."""
        hit = self._ids.get(key)
        if hit is None:
            hit = self._ids[key] = len(self._ids)
        return hit

    def _from_values(self, batch: Batch) -> list[T]:
        """``derive`` of each scene's attribute values, memoised by them (see the class)."""
        rows = batch.values(self.names)
        out: list[Any] = list(map(self._memo.get, rows))
        shared = batch.shared
        for k in [k for k, hit in enumerate(out) if hit is None]:
            share = shared.item(k)
            hit = self._memo.get(rows[k]) if share else None  # an earlier scene of this batch may add it
            if hit is None:
                hit = self.derive(dict(zip(self.names, rows[k], strict=True)))
                if share:
                    if len(self._memo) >= self.limit:
                        self._memo.clear()
                    self._memo[rows[k]] = hit
            out[k] = hit
        return out

    def clear(self) -> None:
        self._memo.clear()
        self._signed.clear()
        self._by_facts.clear()


def signature(scene: Scene) -> tuple | None:
    """A hashable key of the discrete per-instance facts of ``scene`` that the count, position, size and
    orientation attributes read, or None when its attributes also read continuous geometry (gsd set, or three
    or more main-class instances), or its frame or boxes cannot be discretised in plain Python (zero or
    non-finite sizes). Per class its count and difficult count, and for the main-class instances their grid
    cell, size bucket and orientation codes (the scalar twins of the array helpers), sorted; whether the
    scene has a frame, whether it is partial, and its image source. Scenes with equal keys have equal :data:`SIGNATURE_SAFE`
    attributes."""
    if scene.gsd is not None:
        return None
    counts: dict[str, list[int]] = {}
    for i in scene.instances:
        c = counts.get(i.category)
        if c is None:
            c = counts[i.category] = [0, 0]
        c[0] += 1
        c[1] += bool(i.difficult)
    main = min(counts, key=lambda k: (-counts[k][0], k)) if counts else None
    if main is not None and counts[main][0] >= SHARED_MAX_MAIN:
        return None
    w, h = scene.width, scene.height
    framed = w is not None and h is not None
    per: list[tuple[int, int, int]] = []
    try:
        if framed:
            fw, fh = float(w), float(h)  # type: ignore[arg-type]
            frame = fw * fh  # as Batch.frame: the product of the two floats
        for i in scene.instances:
            if i.category == main:
                cx, cy, long, short, angle = i.obb
                orient = orientation_code(angle, long, short)
                if framed:
                    per.append((cell_code(cx, cy, fw, fh), size_code(i.area / frame), orient))
                else:
                    per.append((-1, -1, orient))
    except (ArithmeticError, ValueError):  # a zero frame, an infinite centre: leave it to the arrays
        return None
    classes = tuple(sorted((k, v[0], v[1]) for k, v in counts.items()))
    return (framed, PARTIAL_FLAG in scene.flags, scene.image_source, classes, tuple(sorted(per)))


# ---- partial scenes ----


@batch_attribute("partial")
def _partial(b: Batch) -> list[bool | None]:
    """True for a scene some of whose annotated objects were rejected (flagged ``objects_rejected``): the
    engine then chooses only among templates whose ``scenes`` is ``partial`` or ``any``, and a template
    requiring it may say only that the scene has annotated objects."""
    return [True if p else None for p in b.partial.tolist()]


# ---- counts ----


@batch_attribute("empty")
def _empty(b: Batch) -> list[bool | None]:
    """True for a scene with no annotated object (templates claim only 'no annotated targets')."""
    return [True if k == 0 else None for k in b.n.tolist()]


@batch_attribute("total")
def _total(b: Batch) -> list[tuple[int, int] | None]:
    """(objects, difficult objects) over all classes."""
    difficult = np.bincount(b.sid, weights=b.difficult, minlength=b.count).astype(np.int64)
    return [(n, d) if n else None for n, d in zip(b.n.tolist(), difficult.tolist(), strict=True)]


@batch_attribute("main")
def _main(b: Batch) -> list[tuple[str, int, int] | None]:
    """(class, count, difficult count) of the most frequent class."""
    return b.groups


@batch_attribute("only")
def _only(b: Batch) -> list[tuple[str, int, int] | None]:
    """Like ``main`` but only when it is the scene's single class (allows 'only ships')."""
    return b.where(b.classes.per_scene == 1, b.groups)


@batch_attribute("multi")
def _multi(b: Batch) -> list[tuple[tuple[str, int, int], ...] | None]:
    """((class, count, difficult), ...) by count then name, when two or more classes are present."""
    c = b.classes
    names = b.class_names
    multi = c.per_scene >= 2
    keep = multi[c.pair_scene]  # the pairs of those scenes only: tuples for the others would be dropped
    pairs = [(names[k], n, d) for k, n, d in zip(c.pair_class[keep].tolist(), c.pair_count[keep].tolist(),
                                                   c.pair_difficult[keep].tolist(), strict=True)]
    out: list[Any] = [None] * b.count
    lo = 0
    for s, hi in zip(np.flatnonzero(multi).tolist(), np.cumsum(c.per_scene[multi]).tolist(), strict=True):
        out[s] = tuple(pairs[lo:hi])
        lo = hi
    return out


# ---- position ----


@batch_attribute("single_cell")
def _single_cell(b: Batch) -> list[str | None]:
    """Grid cell of the scene's only object."""
    return b.named((b.n == 1) & b.framed, b.cell_counts.argmax(1), _CELLS)


@batch_attribute("region")
def _region(b: Batch) -> list[str | None]:
    """Cell shared by more than half of the main class's instances (two or more of them)."""
    counts, n_main = b.cell_counts, b.classes.n_main
    return b.named(b.framed & (n_main >= 2) & (counts.max(1) * 2 > n_main), counts.argmax(1), _CELLS)


@batch_attribute("centre_edge")
def _centre_edge(b: Batch) -> list[tuple[int, int] | None]:
    """(main-class instances in the centre cell, in edge cells), when both are non-zero."""
    centre, n_main = b.cell_counts[:, _CENTRE], b.classes.n_main
    pairs = zip(centre.tolist(), (n_main - centre).tolist(), strict=True)
    return b.where(b.framed & (centre > 0) & (centre < n_main), list(pairs))


@batch_attribute("all_edge")
def _all_edge(b: Batch) -> list[tuple[str, int, int] | None]:
    """The main group (see ``main``) when all of its two or more instances lie in edge cells."""
    return b.where(b.framed & (b.classes.n_main >= 2) & (b.cell_counts[:, _CENTRE] == 0), b.groups)


# ---- size ----


@batch_attribute("size_uniform")
def _size_uniform(b: Batch) -> list[str | None]:
    """Size bucket shared by every main-class instance."""
    counts, n_main = b.size_counts, b.classes.n_main
    return b.named(b.framed & (n_main >= 1) & (counts.max(1) == n_main), counts.argmax(1), SIZE_NAMES)


@batch_attribute("size_dominant")
def _size_dominant(b: Batch) -> list[str | None]:
    """Size bucket of more than half (not all) of three or more main-class instances."""
    counts, n_main = b.size_counts, b.classes.n_main
    top = counts.max(1)
    return b.named(b.framed & (n_main >= 3) & (top < n_main) & (top * 2 > n_main), counts.argmax(1), SIZE_NAMES)


def _main_lengths(b: Batch) -> tuple[np.ndarray, np.ndarray]:
    """Per scene the shortest and longest main-class length in metres (inf / -inf without one)."""
    i = b.main_idx[~np.isnan(b.gsd[b.sid[b.main_idx]])]
    s = b.sid[i]
    lengths = b.obb[i, 2] * b.gsd[s]
    lo = np.full(b.count, np.inf)
    hi = np.full(b.count, -np.inf)
    np.minimum.at(lo, s, lengths)
    np.maximum.at(hi, s, lengths)
    return lo, hi


@batch_attribute("length_single")
def _length_single(b: Batch) -> list[int | None]:
    """Rounded length in metres of the only main-class instance (OBB long side x gsd)."""
    ok = ~np.isnan(b.gsd) & (b.classes.n_main == 1)
    if not ok.any():
        return [None] * b.count
    lo, _ = _main_lengths(b)
    return [round_metres(v) if m else None for m, v in zip(ok.tolist(), lo.tolist(), strict=True)]


@batch_attribute("length_range")
def _length_range(b: Batch) -> list[tuple[int, int] | None]:
    """(shortest, longest) main-class length in metres, rounded outwards, when they differ."""
    ok = ~np.isnan(b.gsd) & (b.classes.n_main >= 2)
    if not ok.any():
        return [None] * b.count
    lo, hi = _main_lengths(b)
    return [metres_range(a, z) if m else None for m, a, z in zip(ok.tolist(), lo.tolist(), hi.tolist(), strict=True)]


# ---- orientation ----


@batch_attribute("orientation_uniform")
def _orientation_uniform(b: Batch) -> list[str | None]:
    """Orientation every main-class instance shares (none of them square-ish)."""
    counts, n_main = b.orientation_counts, b.classes.n_main
    return b.named((n_main >= 1) & (counts.max(1) == n_main), counts.argmax(1), ORIENTATION_NAMES)


@batch_attribute("orientation_dominant")
def _orientation_dominant(b: Batch) -> list[str | None]:
    """Orientation of more than half (not all) of three or more main-class instances."""
    counts, n_main = b.orientation_counts, b.classes.n_main
    top = counts.max(1)
    return b.named((n_main >= 3) & (top < n_main) & (top * 2 > n_main), counts.argmax(1), ORIENTATION_NAMES)


# ---- arrangement (scenes with three or more main-class instances) ----


def component_labels(centres: np.ndarray, long: np.ndarray, factor: float) -> np.ndarray:
    """For stacked scenes of n instances each (``centres`` (G, n, 2), ``long`` (G, n)), each instance's
    connected component under the link rule with ``factor`` (single linkage), labelled by its smallest
    instance index: (G, n).

    Labels start as the instance index and repeatedly take the smallest label among linked instances, then
    the label of that label (pointer jumping), until nothing changes."""
    d = np.sqrt(((centres[:, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1))
    linked = d <= factor * (long[:, :, None] + long[:, None, :]) / 2.0
    n = centres.shape[1]
    labels = np.broadcast_to(np.arange(n), long.shape).copy()
    while True:
        new = np.where(linked, labels[:, None, :], n).min(axis=2)
        new = np.take_along_axis(new, new, axis=1)
        if np.array_equal(new, labels):
            return labels
        labels = new


def component_sizes(labels: np.ndarray) -> np.ndarray:
    """The size of each instance's component, from :func:`component_labels`."""
    return (labels[:, :, None] == labels[:, None, :]).sum(2)


@dataclass
class _Arrangement:
    """Arrangement facts of the scenes with three or more main-class instances (others: None)."""

    dense: list[bool | None]
    clusters: list[int | None]
    scattered: list[bool | None]
    isolated: list[int | None]
    row: list[bool | None]


def _arrangement(b: Batch) -> _Arrangement:
    """All arrangement attributes at once: scenes are stacked by main-class count (and by instance count
    for ``isolated``), so each group costs a few array operations."""
    n_scenes = b.count
    out = _Arrangement(*([None] * n_scenes for _ in range(5)))
    n_main = b.classes.n_main
    if not (n_main >= 3).any():  # most small batches: nothing to arrange
        return out
    main_i = b.main_idx
    main_n = n_main[b.sid[main_i]]
    for m in np.unique(n_main[n_main >= 3]).tolist():
        group = np.flatnonzero(n_main == m)
        idx = main_i[main_n == m].reshape(len(group), m)
        _main_arrangement(b, group.tolist(), idx, out)
    for n in np.unique(b.n[n_main >= 3]).tolist():
        group = np.flatnonzero((n_main >= 3) & (b.n == n))
        idx = b.block.offsets[group][:, None] + np.arange(n)  # each scene's instances are consecutive
        sizes = component_sizes(component_labels(b.obb[idx, :2], b.obb[idx, 2], LINK_FACTOR))
        is_main = b.cls[idx] == b.classes.main[group][:, None]
        alone = ((sizes == 1) & is_main).sum(1)
        clustered = ((sizes >= 2) & is_main).sum(1)
        for s, a, c in zip(group.tolist(), alone.tolist(), clustered.tolist(), strict=True):
            out.isolated[s] = a if a >= 1 and c >= 2 else None
    return out


def _main_arrangement(b: Batch, group: list[int], idx: np.ndarray, out: _Arrangement) -> None:
    """``dense``, ``clusters``, ``scattered`` and ``row`` of scenes ``group``, whose main-class instances
    are ``idx`` (one row per scene, all of the same count)."""
    centres, long, short = b.obb[idx, :2], b.obb[idx, 2], b.obb[idx, 3]
    m = idx.shape[1]
    dense = (component_labels(centres, long, DENSE_FACTOR) == 0).all(1)
    labels = component_labels(centres, long, LINK_FACTOR)
    sizes = component_sizes(labels)
    clusters = ((labels == np.arange(m)) & (sizes >= 2)).sum(1)  # components (by their first member) of >= 2
    scattered = (sizes == 1).all(1)
    c = centres - centres.mean(axis=1, keepdims=True)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    tolerance = ROW_TOLERANCE * np.median(short, axis=1)
    facts = zip(group, dense.tolist(), clusters.tolist(), scattered.tolist(), tolerance.tolist(), strict=True)
    for k, (s, one, n_clusters, apart, tol) in enumerate(facts):
        out.dense[s] = True if m >= 4 and one else None
        out.clusters[s] = n_clusters if n_clusters >= 1 else None
        out.scattered[s] = True if apart else None
        out.row[s] = True if np.abs(c[k] @ vt[k, 1]).max() <= tol else None


@batch_attribute("dense")
def _dense(b: Batch) -> list[bool | None]:
    """Four or more main-class instances forming one component at the dense link factor."""
    return b.arrangement.dense


@batch_attribute("clusters")
def _clusters(b: Batch) -> list[int | None]:
    """Number of main-class clusters (components with two or more members), given three or more."""
    return b.arrangement.clusters


@batch_attribute("scattered")
def _scattered(b: Batch) -> list[bool | None]:
    """Three or more main-class instances with no link between any two of them."""
    return b.arrangement.scattered


@batch_attribute("isolated")
def _isolated(b: Batch) -> list[int | None]:
    """Main-class instances linked to no other instance of any class, when some others are clustered."""
    return b.arrangement.isolated


@batch_attribute("row")
def _row(b: Batch) -> list[bool | None]:
    """Three or more main-class centres within ``ROW_TOLERANCE`` x median short side of one line."""
    return b.arrangement.row


# ---- sensor ----


@batch_attribute("sensor")
def _sensor(b: Batch) -> list[str | None]:
    """Display name of the sensor named by ``scene.image_source``, when it names a known one."""
    known: dict[str | None, str | None] = {}
    for src in set(b.block.image_source):  # a few distinct sources: each looked up once
        key = (src or "").strip().lower()
        known[src] = b.sensors.get(key) if key else None
    return list(map(known.__getitem__, b.block.image_source))
