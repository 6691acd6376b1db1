"""``ConvertOptions``: every setting of one ``convert`` run, checked once, recorded from one list.

Why one frozen dataclass: the CLI, the Python API and mmsar build the same object, so a setting is
added, defaulted and refused in one place; and which settings every shard records (and ``--resume``
compares) is read from the fields' metadata instead of a second hand-kept list that can drift.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from d2c.errors import UsageError
from d2c.imageio import StretchConfig
from d2c.limits import DEFAULT_MAX_PARTS, DEFAULT_MAX_VERTICES, check_limits
from d2c.schema import SCHEMA_VERSION
from d2c.tiling import BELOW_POLICIES, DEFAULT_MIN_VISIBLE, DEFAULT_NEGATIVE_RATE, check_params

# When a recorded setting appears in the run metadata. Settings added after shards were first written
# are recorded only when they matter, so shards of runs that do not use them keep their bytes (absent
# reads as None on resume).
ALWAYS = "always"
TILED = "tiled"  # only when ``tile`` is set
TILED_OR_NONE = "tiled_or_none"  # None when ``tile`` is not set
OTHER_LIMITS = "other_limits"  # only when the geometry limits are not the defaults
SPANNED = "spanned"  # only when ``span`` is set


@dataclass(frozen=True)
class Recorded:
    """How a setting goes into every shard's run metadata (the ``--resume`` fingerprint)."""

    key: str | None = None  # the metadata key; the field's name by default
    when: str = ALWAYS
    resume: bool = True  # must be equal for --resume to keep a shard
    as_: Callable[[Any], Any] | None = None  # how the value is written (int, float, ...)
    resolved: bool = False  # the run supplies the value (the engine's template hash, the loaded class map)


def _recorded(default: Any, **how: Any) -> Any:
    return field(default=default, metadata={"recorded": Recorded(**how)})


@dataclass(frozen=True)
class ConvertOptions:
    """The settings of :func:`d2c.convert.convert` (the CLI's options; see ``d2c convert --help``).

    ``include_default_templates=False`` captions with the ``templates`` folder alone. With ``tile``,
    ``tile_min_visible``/``tile_below``/``tile_negative_rate`` are :func:`d2c.tiling.tile_scene`'s
    ``min_visible``/``below``/``negative_rate`` (ignored without ``tile``). ``keep_partial_scenes``: a scene
    some of whose objects were rejected is written flagged ``objects_rejected`` (see :mod:`d2c.partial`)
    instead of rejected whole. ``max_vertices``/``max_parts``: one object's geometry budget
    (:mod:`d2c.limits`). ``span=(start, stop)``: only the reader's plan units ``start`` .. ``stop - 1``
    (COCO images, DOTA/VOC annotation files), so the spans of one input converted apart and joined in order
    give the rows and rejects of the whole; the span is in the shards' metadata, so ``resume`` keeps only
    shards of the same span, and a format that cannot plan units refuses it. Impossible settings raise :class:`d2c.errors.UsageError` when the object is made.
    The fields are in the order the run metadata records them."""

    format: str = "auto"
    images: str | Path | None = None
    annotations: str | Path | None = None
    seed: int = _recorded(0, as_=int)
    templates: str | Path | None = _recorded(None, key="template_set_hash", resolved=True)
    include_default_templates: bool = True
    captions_per_image: int = _recorded(5)
    images_mode: str = _recorded("reference")
    shard_rows: int = _recorded(2000)
    max_bytes: int = _recorded(512 << 20)
    max_side: int | None = _recorded(None)
    class_map: Any = _recorded(None, resolved=True)  # a ClassMap, a TOML path or a built-in name (None: SAR)
    source: str | None = _recorded(None, resume=False)  # a resumed run goes on with the kept shards' prefix
    tile: int | None = _recorded(None)
    overlap: int = _recorded(200, when=TILED_OR_NONE)
    stretch: StretchConfig = _recorded(StretchConfig(), as_=dataclasses.asdict)
    keep_partial_scenes: bool = _recorded(False, as_=bool)
    tile_min_visible: float = _recorded(DEFAULT_MIN_VISIBLE, when=TILED, as_=float)
    tile_below: str = _recorded("difficult", when=TILED)
    tile_negative_rate: float = _recorded(DEFAULT_NEGATIVE_RATE, when=TILED, as_=float)
    max_vertices: int = _recorded(DEFAULT_MAX_VERTICES, when=OTHER_LIMITS)
    max_parts: int = _recorded(DEFAULT_MAX_PARTS, when=OTHER_LIMITS)
    # only the reader's plan units start .. stop - 1 (mmsar's tasks): see d2c.readers.plan.SpanPlan
    span: tuple[int, int] | None = _recorded(None, when=SPANNED, as_=lambda s: [int(s[0]), int(s[1])])
    # scene keys located before the span that its units meet (the caller's second reading of a span; see
    # SpanPlan): not recorded, the rows are those of the whole reading either way
    span_taken: tuple[str, ...] = ()
    max_pixels: int = 1 << 30
    workers: int = 1
    resume: bool = False
    strict: bool = False
    progress: bool | str | None = None

    def __post_init__(self) -> None:
        """Refuse impossible settings, naming the command-line option."""
        if self.images_mode not in ("embed", "reference"):
            raise UsageError(f"--images-mode must be 'embed' or 'reference', got {self.images_mode!r}")
        if self.shard_rows < 1:
            raise UsageError(f"--shard-rows must be at least 1, got {self.shard_rows}")
        if self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.captions_per_image < 1:
            raise UsageError(f"--captions-per-image must be at least 1, got {self.captions_per_image}")
        if self.max_side is not None and self.max_side < 16:
            raise UsageError(f"--max-side must be at least 16 px, got {self.max_side}")
        try:
            check_limits(self.max_vertices, self.max_parts)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if self.tile is not None:
            self._check_tiling()
        if self.span is not None:
            _check_span(self.span)
        elif self.span_taken:
            raise UsageError("span_taken needs a span")

    def _check_tiling(self) -> None:
        if not _is_number(self.tile_min_visible) or not 0.0 < self.tile_min_visible <= 1.0:
            raise UsageError(f"--tile-min-visible must be a number in (0, 1], got {self.tile_min_visible!r}")
        if self.tile_below not in BELOW_POLICIES:
            raise UsageError(f"--tile-below must be one of {', '.join(BELOW_POLICIES)}, "
                             f"got {self.tile_below!r}")
        if not _is_number(self.tile_negative_rate) or not 0.0 <= self.tile_negative_rate <= 1.0:
            raise UsageError("--tile-negative-rate must be a number in [0, 1], "
                             f"got {self.tile_negative_rate!r}")
        check_params(self.tile, self.overlap, self.tile_min_visible, self.tile_below, self.tile_negative_rate)

    def run_metadata(self, resolved: dict[str, Any]) -> dict[str, Any]:
        """What every shard of the run records about it: the schema version, then each recorded field
        (see :class:`Recorded`); ``resolved`` gives the values of the fields the run resolves, by name."""
        tiled = self.tile is not None
        other_limits = (self.max_vertices, self.max_parts) != (DEFAULT_MAX_VERTICES, DEFAULT_MAX_PARTS)
        meta: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for f, how in _recorded_fields():
            if (how.when == TILED and not tiled) or (how.when == OTHER_LIMITS and not other_limits) or \
                    (how.when == SPANNED and self.span is None):
                continue
            value = resolved[f.name] if how.resolved else getattr(self, f.name)
            if how.when == TILED_OR_NONE and not tiled:
                value = None
            meta[how.key or f.name] = how.as_(value) if how.as_ is not None and value is not None else value
        return meta


def _recorded_fields() -> list[tuple[dataclasses.Field, Recorded]]:
    return [(f, f.metadata["recorded"]) for f in fields(ConvertOptions) if "recorded" in f.metadata]


# The run metadata that must match for --resume to reuse shards written earlier.
RUN_KEYS: tuple[str, ...] = ("schema_version",
                             *(how.key or f.name for f, how in _recorded_fields() if how.resume))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # NaN fails the last test


def _check_span(span: Any) -> None:
    ok = isinstance(span, (tuple, list)) and len(span) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in span)
    if not ok or span[0] < 0 or span[1] < span[0]:
        raise UsageError(f"span must be (start, stop) with 0 <= start <= stop, got {span!r}")
