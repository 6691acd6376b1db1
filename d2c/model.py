"""The canonical annotation model: every reader yields :class:`Scene` and :class:`Reject`, nothing else.

A ``Scene`` is one image with its ``Instance``s. Constructors validate and say what they expected and
what they got, so a bad record fails where it is built, not three stages later.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from d2c import geometry

SPLITS = ("train", "val", "test")


def scene_key(source: str, image_path: str) -> str:
    """``{source}/{image path without extension}``, posix separators (the path as PurePosixPath prints it)."""
    text = image_path.replace("\\", "/")
    if is_plain_relpath(text):  # PurePosixPath would print it unchanged: string work, as this runs per image
        cut = text.rfind("/") + 1
        return f"{source}/{text[:cut]}{_without_suffix(text[cut:])}"
    p = PurePosixPath(text)
    stem = str(p.with_suffix("")) if p.suffix else str(p)
    return f"{source}/{stem}"


def scene_keys(source: str, image_paths: Sequence[str]) -> list[str]:
    """:func:`scene_key` of each path. A reader keys a chunk of thousands of images at once: when every
    path is a file name without folder part, each key is the name cut at its suffix (PurePosixPath prints
    ``.`` and ``..`` as they are too, but an empty path as ``.``)."""
    joined = "\n".join(image_paths)
    if "/" in joined or "\\" in joined or "" in image_paths:
        return [scene_key(source, p) for p in image_paths]
    prefix = f"{source}/"
    return [prefix + stem for stem in map(_without_suffix, image_paths)]


def _without_suffix(name: str) -> str:
    """A file name without its suffix, as PurePosixPath.suffix sees one: a dot that neither starts nor ends it."""
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name


def is_plain_relpath(text: str) -> bool:
    """A relative posix path without empty, ``.`` or ``..`` parts: one that path normalisation leaves as it is."""
    parts = text.split("/")
    return all(parts) and "." not in parts and ".." not in parts


def stable_digest(text: str, nbytes: int = 8) -> int:
    """A stable integer digest of ``text`` (never Python's salted ``hash()``), for per-scene seeding."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=nbytes).digest(), "little")


def scene_seed(seed: int, key: str) -> int:
    """The per-scene random seed: a function of (global seed, scene key) alone."""
    return stable_digest(f"{int(seed)}|{key}")


def scene_seeds(seed: int, keys: Sequence[str]) -> np.ndarray:
    """:func:`scene_seed` of every key, as a uint64 array (the digests joined and read at once: this runs
    for every scene of a conversion)."""
    prefix = f"{int(seed)}|".encode()
    blake2b = hashlib.blake2b
    data = b"".join([blake2b(prefix + k.encode("utf-8"), digest_size=8).digest() for k in keys])
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a record came from: the annotation file (relative to the dataset root where possible) and
    the record inside it ("line 12", "annotation 345", "image 7", or None for a whole file)."""

    file: str
    record: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.record}" if self.record else self.file


@dataclass(frozen=True, slots=True)
class Reject:
    """An input object that was not written, with the reason. ``instances`` is how many annotated
    instances it takes with it (so ``instances in = instances out + instances rejected`` can be checked);
    ``code`` is a short machine-readable reason used to group the summary."""

    file: str
    record: str | None
    reason: str
    code: str
    instances: int = 0
    scene_key: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.record}" if self.record else self.file
        return f"{where}: {self.reason}"

    @classmethod
    def of_scene(cls, scene: Scene, code: str, reason: str) -> Reject:
        """The Reject of a whole scene (all its instances), where its provenance says."""
        prov = scene.provenance
        return cls(prov.file, prov.record, reason, code, len(scene.instances), scene.key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "record": self.record,
            "code": self.code,
            "reason": self.reason,
            "instances": self.instances,
            "scene_key": self.scene_key,
        }


@dataclass(frozen=True, slots=True, eq=False)
class Instance:
    """One annotated object. Build with :meth:`from_polygon` or :meth:`from_hbb`; the polygon is stored
    canonical (see :mod:`d2c.geometry`), ``hbb`` is ``(x_min, y_min, x_max, y_max)`` and ``obb`` is
    ``(cx, cy, w, h, angle)`` in the project-wide convention."""

    raw_category: str
    category: str
    polygon: np.ndarray
    hbb: tuple[float, float, float, float]
    obb: tuple[float, float, float, float, float]
    area: float
    difficult: bool = False
    record: str | None = None

    def __post_init__(self) -> None:
        poly = self.polygon
        if not isinstance(poly, np.ndarray) or poly.ndim != 2 or poly.shape[1] != 2 or poly.shape[0] < 3:
            got = getattr(poly, "shape", type(poly).__name__)
            raise ValueError(f"polygon must be an (N>=3, 2) array, got {got}")
        if not np.isfinite(poly).all():
            raise ValueError(f"polygon has NaN or infinite coordinates: {poly.tolist()}")
        if len(self.hbb) != 4 or len(self.obb) != 5:
            raise ValueError(f"hbb needs 4 values and obb 5, got {len(self.hbb)} and {len(self.obb)}")
        w, h, a = self.obb[2], self.obb[3], self.obb[4]
        if w < h:
            raise ValueError(f"obb w must be the long side (w >= h), got w={w}, h={h}")
        if not 0.0 <= a < 180.0:
            raise ValueError(f"obb angle must be in [0, 180), got {a}")
        if not self.area > 0:
            raise ValueError(f"instance area must be positive, got {self.area}")
        if not self.category or not self.raw_category:
            raise ValueError(f"category names must be non-empty, got {self.raw_category!r} -> {self.category!r}")

    @classmethod
    def trusted(
        cls,
        raw_category: str,
        category: str,
        polygon: np.ndarray,
        hbb: tuple[float, float, float, float],
        obb: tuple[float, float, float, float, float],
        area: float,
        difficult: bool = False,
        record: str | None = None,
    ) -> Instance:
        """An Instance without the per-object checks of the constructor, for a builder that has already made
        exactly those checks (:func:`valid_instance_rows` and non-empty names) on thousands of objects at
        once: the readers' vectorised pass, where the per-object checks cost more than the rest of building."""
        inst = object.__new__(cls)
        set_raw, set_cat, set_poly, set_hbb, set_obb, set_area, set_difficult, set_record = _INSTANCE_SLOT_SETTERS
        set_raw(inst, raw_category)
        set_cat(inst, category)
        set_poly(inst, polygon)
        set_hbb(inst, hbb)
        set_obb(inst, obb)
        set_area(inst, area)
        set_difficult(inst, difficult)
        set_record(inst, record)
        return inst

    @classmethod
    def from_polygon(
        cls,
        points: np.ndarray | list[float] | list[tuple[float, float]],
        raw_category: str,
        category: str | None = None,
        *,
        difficult: bool = False,
        record: str | None = None,
    ) -> Instance:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if pts.shape[0] < 3:
            raise ValueError(f"a polygon needs at least 3 points, got {pts.shape[0]}")
        if not np.all(np.isfinite(pts)):
            raise ValueError(f"polygon has NaN or infinite coordinates: {pts.tolist()}")
        poly = geometry.canonical_polygon(pts)
        area = float(abs(geometry.signed_area(poly)))
        obb = geometry.min_area_rect(poly)
        hbb = tuple(float(v) for v in geometry.hbb_of(poly))
        return cls(
            raw_category=str(raw_category),
            category=str(category if category is not None else raw_category),
            polygon=poly,
            hbb=hbb,  # type: ignore[arg-type]
            obb=obb,
            area=area,
            difficult=bool(difficult),
            record=record,
        )

    @classmethod
    def from_hbb(
        cls,
        x_min: float,
        y_min: float,
        x_max: float,
        y_max: float,
        raw_category: str,
        category: str | None = None,
        *,
        difficult: bool = False,
        record: str | None = None,
    ) -> Instance:
        pts = [(x_min, y_min), (x_max, y_min), (x_max, y_max), (x_min, y_max)]
        return cls.from_polygon(pts, raw_category, category, difficult=difficult, record=record)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.obb[0], self.obb[1])

    def with_category(self, category: str) -> Instance:
        return dataclasses.replace(self, category=category)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Instance):
            return NotImplemented
        return (
            self.raw_category == other.raw_category
            and self.category == other.category
            and self.difficult == other.difficult
            and self.polygon.shape == other.polygon.shape
            and bool(np.allclose(self.polygon, other.polygon))
        )

    __hash__ = None  # type: ignore[assignment]


# The slots' own setters, for Instance.trusted: the frozen dataclass's __setattr__ refuses, and
# object.__setattr__ costs twice as much (a quarter of building an instance).
# In field order: a field added to Instance makes the unpacking in Instance.trusted fail loudly.
_INSTANCE_SLOT_SETTERS = tuple(getattr(Instance, f.name).__set__ for f in dataclasses.fields(Instance))


def valid_instance_rows(polygons: np.ndarray, obbs: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Which of M objects (``polygons`` (M, N>=3, 2), ``obbs`` (M, 5), ``areas`` (M,)) pass the geometry checks
    of :class:`Instance`'s constructor, as a boolean (M,) mask: the same checks done on whole arrays, for
    :meth:`Instance.trusted`. Keep it in step with ``Instance.__post_init__``."""
    w, h, angle = obbs[:, 2], obbs[:, 3], obbs[:, 4]
    return (
        np.isfinite(polygons).all(axis=(1, 2))
        & ~(w < h)  # NaN passes, as in the constructor
        & (angle >= 0.0)
        & (angle < 180.0)
        & (areas > 0)
    )


@dataclass(slots=True)
class Scene:
    """One image and its annotated instances.

    ``image_path`` is relative to ``root`` (the dataset root, absolute), posix separators. ``width`` and
    ``height`` are None only when neither the annotation nor the image gives them. ``flags`` carries
    facts such as ``image_missing`` or ``image_found_by_stem``.
    """

    key: str
    source: str
    image_path: str
    root: str
    width: int | None
    height: int | None
    instances: list[Instance] = field(default_factory=list)
    gsd: float | None = None
    image_source: str | None = None
    split: str | None = None
    provenance: Provenance = field(default_factory=lambda: Provenance(""))
    flags: list[str] = field(default_factory=list)
    image_format: str | None = None
    clipped: int = 0  # instances whose coordinates were clipped to the image when read (for the stats)

    def __post_init__(self) -> None:
        if not self.key or "/" not in self.key:
            raise ValueError(f"scene key must look like 'source/path', got {self.key!r}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or v <= 0):
                raise ValueError(f"scene {self.key}: {name} must be a positive int or None, got {v!r}")
        if self.gsd is not None and not (self.gsd > 0 and np.isfinite(self.gsd)):
            raise ValueError(f"scene {self.key}: gsd must be positive and finite, got {self.gsd!r}")
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"scene {self.key}: split must be one of {SPLITS} or None, got {self.split!r}")

    @property
    def num_instances(self) -> int:
        return len(self.instances)

    @property
    def categories(self) -> list[str]:
        """The canonical category of each instance, in order."""
        return [i.category for i in self.instances]

    def counts(self) -> dict[str, int]:
        """Instances per canonical category, sorted by name."""
        out: dict[str, int] = {}
        for inst in self.instances:
            out[inst.category] = out.get(inst.category, 0) + 1
        return dict(sorted(out.items()))

    def add_flag(self, flag: str) -> None:
        if flag not in self.flags:
            self.flags.append(flag)
