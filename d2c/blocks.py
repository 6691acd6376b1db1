"""Scenes as columns: a :class:`SceneBlock` holds many scenes' fields as lists and all their instances as a
few flat arrays.

Why: annotation-only conversion spends most of its time on Python objects per scene and per instance,
built by the reader only to be taken apart again by the caption engine (arrays of boxes), the row builder
(Arrow columns) and the accounting (counts). A reader that can (COCO) hands convert blocks instead, and the
rest of the pipeline works on the columns. :meth:`SceneBlock.from_scenes` and :meth:`SceneBlock.scenes`
convert both ways, so code that takes a block serves lists of Scenes too, and a block is also the compact
form in which scenes travel to worker processes (a few arrays pickle much faster than many objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from operator import attrgetter

import numpy as np

from d2c.model import Instance, Provenance, Scene

_SCENE_COLUMNS = ("key", "source", "image_path", "root", "width", "height", "gsd", "image_source", "split",
                  "flags", "image_format", "clipped")

_EMPTY_ARRAYS = {"n": np.zeros(0, np.int64), "points": np.zeros((0, 2)), "sizes": np.zeros(0, np.int64),
                 "hbb": np.zeros((0, 4)), "obb": np.zeros((0, 5)), "area": np.zeros(0), "difficult": np.zeros(0, bool)}
_LIST_FIELDS = (*_SCENE_COLUMNS, "file", "record", "raw_category", "category", "instance_record")


@dataclass(eq=False)
class SceneBlock:
    """S scenes and their M instances, in order: scene ``s`` owns instances ``offsets[s]:offsets[s + 1]``."""

    # per scene (S): the Scene fields of the same names
    key: list[str]
    source: list[str]
    image_path: list[str]
    root: list[str]
    width: list[int | None]
    height: list[int | None]
    gsd: list[float | None]
    image_source: list[str | None]
    split: list[str | None]
    flags: list[list[str]]
    image_format: list[str | None]
    clipped: list[int]
    file: list[str]  # the provenance's annotation file and record
    record: list[str | None]
    n: np.ndarray  # (S,) int64: instances per scene
    # per instance (M): the Instance fields of the same names
    raw_category: list[str]
    category: list[str]
    points: np.ndarray  # (P, 2) float64: the vertices of every polygon, one after the other
    sizes: np.ndarray  # (M,) int64: vertices per polygon
    hbb: np.ndarray  # (M, 4) float64
    obb: np.ndarray  # (M, 5) float64
    area: np.ndarray  # (M,) float64
    difficult: np.ndarray  # (M,) bool
    instance_record: list[str | None]

    def __len__(self) -> int:
        return len(self.key)

    @property
    def num_instances(self) -> int:
        return len(self.category)

    @cached_property
    def offsets(self) -> np.ndarray:
        """(S + 1,) where each scene's instances start, and the end."""
        out = np.zeros(len(self.n) + 1, dtype=np.int64)
        np.cumsum(self.n, out=out[1:])
        return out

    @cached_property
    def point_offsets(self) -> np.ndarray:
        """(M + 1,) where each polygon's vertices start in :attr:`points`, and the end."""
        out = np.zeros(len(self.sizes) + 1, dtype=np.int64)
        np.cumsum(self.sizes, out=out[1:])
        return out

    @classmethod
    def from_scenes(cls, scenes: Sequence[Scene]) -> SceneBlock:
        """The columns of ``scenes`` (their values, not copies of their lists: do not mutate either side)."""
        insts = list(chain.from_iterable(map(attrgetter("instances"), scenes)))
        m = len(insts)
        polys = list(map(attrgetter("polygon"), insts))
        provs = list(map(attrgetter("provenance"), scenes))
        scene_cols = {name: list(map(attrgetter(name), scenes)) for name in _SCENE_COLUMNS}
        return cls(
            **scene_cols,
            file=[p.file for p in provs],
            record=[p.record for p in provs],
            n=np.fromiter(map(len, map(attrgetter("instances"), scenes)), np.int64, len(scenes)),
            raw_category=list(map(attrgetter("raw_category"), insts)),
            category=list(map(attrgetter("category"), insts)),
            points=np.concatenate(polys) if polys else np.zeros((0, 2)),
            sizes=np.fromiter(map(len, polys), np.int64, m),
            hbb=np.fromiter(chain.from_iterable(map(attrgetter("hbb"), insts)), np.float64, 4 * m).reshape(m, 4),
            obb=np.fromiter(chain.from_iterable(map(attrgetter("obb"), insts)), np.float64, 5 * m).reshape(m, 5),
            area=np.fromiter(map(attrgetter("area"), insts), np.float64, m),
            difficult=np.fromiter(map(attrgetter("difficult"), insts), bool, m),
            instance_record=list(map(attrgetter("record"), insts)),
        )

    def instances(self) -> list[Instance]:
        """Every instance as an :class:`Instance` (values as Python floats; polygons are views of
        :attr:`points`)."""
        ends = self.point_offsets[1:].tolist()
        hbbs, obbs, areas = self.hbb.tolist(), self.obb.tolist(), self.area.tolist()
        out: list[Instance] = []
        start = 0
        for k, end in enumerate(ends):
            out.append(Instance.trusted(self.raw_category[k], self.category[k], self.points[start:end],
                                        tuple(hbbs[k]), tuple(obbs[k]), areas[k],  # type: ignore[arg-type]
                                        bool(self.difficult[k]), self.instance_record[k]))
            start = end
        return out

    def scenes(self) -> list[Scene]:
        """The block as Scenes, equal to the ones :meth:`from_scenes` was given."""
        insts = self.instances()
        bounds = self.offsets.tolist()
        out = []
        for s in range(len(self)):
            fields = {name: getattr(self, name)[s] for name in _SCENE_COLUMNS}
            out.append(Scene(**fields, instances=insts[bounds[s] : bounds[s + 1]],
                             provenance=Provenance(self.file[s], self.record[s])))
        return out

    def take(self, rows: Sequence[int]) -> SceneBlock:
        """The scenes ``rows`` (ascending) as a new block."""
        rows = list(rows)
        if rows == list(range(len(self))):
            return self
        inst = _ranges(self.offsets[:-1][rows], self.offsets[1:][rows])
        pts = _ranges(self.point_offsets[:-1][inst], self.point_offsets[1:][inst])
        inst_l = inst.tolist()
        per_scene = {name: [getattr(self, name)[s] for s in rows] for name in (*_SCENE_COLUMNS, "file", "record")}
        return SceneBlock(
            **per_scene,
            n=self.n[rows],
            raw_category=[self.raw_category[i] for i in inst_l],
            category=[self.category[i] for i in inst_l],
            points=self.points[pts].reshape(-1, 2),
            sizes=self.sizes[inst],
            hbb=self.hbb[inst].reshape(-1, 4),
            obb=self.obb[inst].reshape(-1, 5),
            area=self.area[inst],
            difficult=self.difficult[inst],
            instance_record=[self.instance_record[i] for i in inst_l],
        )


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The concatenated ``arange(starts[k], ends[k])``, without a Python loop."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(total, dtype=np.int64) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)


def concat(blocks: Sequence[SceneBlock]) -> SceneBlock:
    """The scenes of ``blocks``, in order, as one block."""
    if len(blocks) == 1:
        return blocks[0]
    lists = {name: list(chain.from_iterable(getattr(b, name) for b in blocks)) for name in _LIST_FIELDS}
    arrays = {name: np.concatenate([getattr(b, name) for b in blocks]) if blocks else empty
              for name, empty in _EMPTY_ARRAYS.items()}
    return SceneBlock(**lists, **arrays)
