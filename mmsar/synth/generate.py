"""``generate``: many synthetic scenes, their images and their annotations in COCO, DOTA and VOC.

Each scene draws everything from its own generator seeded by ``scene_seed(seed, key)``, so the output is
byte-identical for any number of workers; workers render and write images, the parent writes annotations.
"""

from __future__ import annotations

import logging
import multiprocessing
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from d2c.errors import UsageError
from d2c.model import Instance, Provenance, Scene, scene_key, scene_seed
from mmsar.synth import layout, render
from mmsar.synth.raster import EXTENSIONS, write_image
from mmsar.synth.targets import CLASSES

log = logging.getLogger(__name__)
FORMATS = ("coco", "dota", "voc")
SOURCE = "synth"
MIN_SIDE, MAX_SIDE = 32, 16384
DIFFICULT_PX = 6.0  # targets shorter than this (pixels) are flagged difficult


@dataclass(frozen=True)
class Params:
    """The validated arguments one scene needs (picklable for worker processes)."""

    out: Path
    seed: int
    size: int
    size_range: tuple[int, int] | None
    dtype: str
    classes: tuple[str, ...]
    max_objects: int
    gsd: float | None
    aspect: float | None = None


@dataclass
class SynthResult:
    """What was generated: the tree, scene and instance counts, and the Scenes themselves."""

    out: Path
    images: int
    instances: int
    counts: dict[str, int]
    scenes: list[Scene] = field(repr=False)
    files: dict[str, Path] = field(default_factory=dict)


def image_name(index: int, dtype: str) -> str:
    return f"synth_{index:06d}{EXTENSIONS[dtype]}"


def seed_key(index: int) -> str:
    """The per-scene seeding key: independent of the output folder, format and dtype."""
    return f"{SOURCE}/images/synth_{index:06d}"


def scene_size(
    rng: np.random.Generator, size_range: tuple[int, int], aspect: float | None = None
) -> tuple[int, int]:
    """(width, height) of one scene. ``aspect`` None: near-square, one side log-uniform in ``size_range`` and
    the other 0.75-1.33 times it (clipped to the range); ``aspect`` A: the long side log-uniform in the range,
    the long-to-short ratio log-uniform in [1, A] and the orientation drawn (strip-like scenes, where
    letterboxing to a square wastes most of the canvas)."""
    lo, hi = size_range
    side = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    if aspect is None:
        other = float(np.clip(side * rng.uniform(0.75, 1.33), lo, hi))
        return int(round(side)), int(round(other))
    short = max(MIN_SIDE, int(round(side / float(np.exp(rng.uniform(0.0, np.log(aspect)))))))
    return (int(round(side)), short) if rng.random() < 0.5 else (short, int(round(side)))


def _scene_size(rng: np.random.Generator, p: Params) -> tuple[int, int]:
    if p.size_range is None:
        return p.size, p.size
    return scene_size(rng, p.size_range, p.aspect)


def make_scene(index: int, p: Params) -> Scene:
    """Draw, render and write scene ``index``; returns its annotated Scene."""
    rng = np.random.default_rng(scene_seed(p.seed, seed_key(index)))
    width, height = _scene_size(rng, p)
    spec = layout.draw_spec(rng, width, height, p.classes, p.max_objects, p.gsd)
    sigma, water = render.background(rng, spec)
    wanted = layout.allot(rng, spec.kind, layout.draw_count(rng, p.max_objects), p.classes)
    spec.targets = layout.place(rng, spec, water, wanted)
    render.reflectivity(rng, spec, sigma, water)
    image = render.intensity(rng, spec, sigma)
    name = image_name(index, p.dtype)
    write_image(p.out / "images" / name, image, p.dtype, spec.gsd, spec.looks)
    rel = f"images/{name}"
    instances = [
        Instance.from_polygon(t.polygon(), t.cls, t.cls, difficult=t.length < DIFFICULT_PX, record=str(i))
        for i, t in enumerate(spec.targets)
    ]
    return Scene(
        key=scene_key(SOURCE, rel),
        source=SOURCE,
        image_path=rel,
        root=str(p.out),
        width=width,
        height=height,
        instances=instances,
        gsd=spec.gsd,
        image_source="synthetic",
        provenance=Provenance("synth", f"scene {index} kind={spec.kind} looks={spec.looks}"),
        image_format="png" if p.dtype == "uint8" else "tiff",
    )


def _check(images, size, size_range, formats, dtype, classes, max_objects, workers, gsd, aspect=None) -> None:
    if images < 0:
        raise UsageError(f"--images must be >= 0, got {images}")
    if not MIN_SIDE <= size <= MAX_SIDE:
        raise UsageError(f"--size must be in [{MIN_SIDE}, {MAX_SIDE}], got {size}")
    if size_range is not None and not MIN_SIDE <= size_range[0] <= size_range[1] <= MAX_SIDE:
        raise UsageError(
            f"--size-range must be LO:HI with {MIN_SIDE} <= LO <= HI <= {MAX_SIDE}, got {size_range}"
        )
    for f in formats:
        if f not in FORMATS:
            raise UsageError(f"unknown format {f!r}: choose from {', '.join(FORMATS)}")
    if dtype not in EXTENSIONS:
        raise UsageError(f"--dtype must be one of {', '.join(EXTENSIONS)}, got {dtype!r}")
    for c in classes:
        if c not in CLASSES:
            raise UsageError(f"unknown class {c!r}: choose from {', '.join(CLASSES)}")
    if not classes:
        raise UsageError("--classes names no class")
    if max_objects < 0 or workers < 1:
        raise UsageError(f"--max-objects must be >= 0 and --workers >= 1, got {max_objects} and {workers}")
    if gsd is not None and not (gsd > 0 and np.isfinite(gsd)):
        raise UsageError(f"--gsd must be a positive number of metres, got {gsd}")
    if aspect is not None and not (aspect >= 1 and np.isfinite(aspect)):
        raise UsageError(f"--aspect must be a ratio >= 1 (long side over short side), got {aspect}")
    if aspect is not None and size_range is None:
        raise UsageError("--aspect needs --size-range (square scenes of --size have no aspect to draw)")


_STALE = {
    "images": r"synth_\d{6}\.(png|tif)",
    "labelTxt": r"synth_\d{6}\.txt",
    "Annotations": r"synth_\d{6}\.xml",
}


def _clear_stale(out: Path) -> None:
    """Remove files a previous synth run left in ``out`` (only names this generator writes)."""
    for sub, pattern in _STALE.items():
        folder = out / sub
        if folder.is_dir():
            for f in folder.iterdir():
                if re.fullmatch(pattern, f.name):
                    f.unlink()
    (out / "coco.json").unlink(missing_ok=True)


def _render_all(n: int, p: Params, workers: int, tick: Callable[[], None]) -> list[Scene]:
    if workers == 1 or n < 2:
        scenes = []
        for i in range(n):
            scenes.append(make_scene(i, p))
            tick()
        return scenes
    from functools import partial

    ctx = multiprocessing.get_context("fork")
    scenes = []
    with ctx.Pool(min(workers, n)) as pool:
        for scene in pool.imap(partial(make_scene, p=p), range(n), chunksize=1):
            scenes.append(scene)
            tick()
    return scenes


def _write_annotations(scenes: list[Scene], out: Path, formats: Sequence[str]) -> dict[str, Path]:
    from d2c.writers import write_coco, write_dota, write_voc

    files: dict[str, Path] = {"images": out / "images"}
    if "coco" in formats:
        files["coco"] = write_coco(scenes, out / "coco.json", images_dir=out / "images")
    if "dota" in formats:
        files["dota"] = write_dota(scenes, out)
    if "voc" in formats:
        files["voc"] = write_voc(scenes, out)
    return files


def generate(
    out: Path | str,
    *,
    images: int,
    size: int = 800,
    size_range: tuple[int, int] | None = None,
    formats: Sequence[str] = FORMATS,
    dtype: str = "uint8",
    classes: Sequence[str] | None = None,
    max_objects: int = 60,
    seed: int = 0,
    workers: int = 1,
    gsd: float | None = None,
    progress: bool | Callable[[int, int], None] | None = None,
    aspect: float | None = None,
) -> SynthResult:
    """Generate ``images`` scenes into ``out`` (``images/``, ``coco.json``, ``labelTxt/``, ``Annotations/``).

    ``progress``: True for a rich progress bar, a callable ``(done, total)``, or None for silence.
    ``aspect``: the largest long-to-short side ratio (with ``size_range``; see :func:`scene_size`).
    """
    formats = tuple(dict.fromkeys(formats))
    cls = tuple(classes) if classes is not None else CLASSES
    _check(images, size, size_range, formats, dtype, cls, max_objects, workers, gsd, aspect)
    out = Path(out).resolve()
    (out / "images").mkdir(parents=True, exist_ok=True)
    _clear_stale(out)
    p = Params(
        out,
        int(seed),
        int(size),
        tuple(size_range) if size_range else None,
        dtype,
        cls,
        int(max_objects),
        float(gsd) if gsd is not None else None,
        float(aspect) if aspect is not None else None,
    )
    scenes = _with_progress(images, p, workers, progress)
    files = _write_annotations(scenes, out, formats)
    counts: dict[str, int] = {}
    for s in scenes:
        for c, k in s.counts().items():
            counts[c] = counts.get(c, 0) + k
    n_inst = sum(counts.values())
    log.info("synth: %d images, %d instances into %s", len(scenes), n_inst, out)
    return SynthResult(out, len(scenes), n_inst, dict(sorted(counts.items())), scenes, files)


def _with_progress(n: int, p: Params, workers: int, progress) -> list[Scene]:
    if progress is True:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task("synth", total=n)
            return _render_all(n, p, workers, lambda: bar.advance(task))
    done = [0]

    def tick() -> None:
        done[0] += 1
        if callable(progress):
            progress(done[0], n)

    return _render_all(n, p, workers, tick)
