"""Cut a large scene into overlapping tiles, splitting each object at the tile borders.

The scheme follows the DOTA devkit's splitter: square tiles of ``tile`` px stepping by ``tile - overlap``,
the last tile of each row and column placed flush with the image edge (so no tile pads past the image
and every pixel is covered). Each object is intersected with the tile (shapely); the share of its area
inside the tile decides what happens to it:

- share >= ``min_visible`` (default 0.7): kept, clipped to the tile, with its own ``difficult`` flag;
- 0 < share < ``min_visible``: ``below="difficult"`` keeps the clipped part marked difficult (the DOTA
  devkit's choice), ``below="drop"`` leaves it out and flags the tile ``tile_partial_dropped``.

A tile with no object touching it is a *negative*; negatives are kept at ``negative_rate``, decided by a
seed drawn from ``(seed, tile key)`` so the choice does not depend on order or worker. Under
``below="drop"`` a tile whose only objects were dropped is neither positive nor a clean negative (its
caption would deny objects that are partly visible) and is skipped.

A tile is a :class:`~d2c.model.Scene` whose key is ``f"{parent key}__{x}_{y}"`` (``x``, ``y``: the tile's
top-left corner in the parent's pixels), whose ``width``/``height`` are the tile's and whose coordinates are
tile pixels, so counts and captions describe the tile, not the scene. ``image_path`` still names the
parent image: read the pixels with :func:`read_window`, which never loads the scene whole.

Parent objects that end up in no tile (``below="drop"``, or lying outside the image) come back as
:class:`~d2c.model.Reject` records, so ``instances in = instances out + instances rejected`` still holds
when "out" counts each parent object once, whatever the number of tiles it was copied into.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from d2c.errors import D2CError, UsageError, error_code
from d2c.model import Instance, Reject, Scene, scene_seed
from d2c.rows import ImageRecord

log = logging.getLogger(__name__)

BELOW_POLICIES = ("difficult", "drop")
DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 200
DEFAULT_MIN_VISIBLE = 0.7
DEFAULT_NEGATIVE_RATE = 0.1
TILE_FLAG = "tile"
PARTIAL_DROPPED_FLAG = "tile_partial_dropped"
DEFAULT_CACHE_MB = 64


@dataclass(frozen=True, slots=True)
class Window:
    """A pixel window of the parent image: top-left ``(x, y)`` and size."""

    x: int
    y: int
    width: int
    height: int

    @property
    def offset(self) -> tuple[int, int]:
        return (self.x, self.y)

    def to_rasterio(self) -> Any:
        from rasterio.windows import Window as RioWindow

        return RioWindow(self.x, self.y, self.width, self.height)


@dataclass(slots=True)
class TiledScene:
    """The tiles of one scene (iterate it for ``(tile_scene, window)`` pairs) and what tiling left out.

    ``rejects`` holds one Reject per parent object that appears in no tile; ``negatives_skipped`` and
    ``partial_skipped`` count tiles not kept (empty tiles over the negative rate; tiles whose only objects
    were dropped)."""

    parent: Scene
    tiles: list[tuple[Scene, Window]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    negatives_kept: int = 0
    negatives_skipped: int = 0
    partial_skipped: int = 0

    def __iter__(self) -> Iterator[tuple[Scene, Window]]:
        return iter(self.tiles)

    def __len__(self) -> int:
        return len(self.tiles)


def tile_key(parent_key: str, x: int, y: int) -> str:
    """The key of the tile at ``(x, y)`` of ``parent_key``: ``f"{parent_key}__{x}_{y}"``."""
    return f"{parent_key}__{x}_{y}"


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis: every ``tile - overlap`` px, the last one flush with the edge."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_windows(width: int, height: int, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP) -> list[Window]:
    """Row-major windows covering a ``width`` x ``height`` image (a side smaller than ``tile`` gives a
    smaller tile rather than padding)."""
    check_params(tile, overlap)
    return [
        Window(x, y, min(tile, width - x), min(tile, height - y))
        for y in axis_starts(height, tile, overlap)
        for x in axis_starts(width, tile, overlap)
    ]


def check_params(
    tile: int, overlap: int, min_visible: float = DEFAULT_MIN_VISIBLE, below: str = "difficult",
    negative_rate: float = DEFAULT_NEGATIVE_RATE,
) -> None:
    """Refuse impossible settings with a usage error that names the option."""
    if not isinstance(tile, (int, np.integer)) or tile < 16:
        raise UsageError(f"--tile must be an integer of at least 16 px, got {tile!r}")
    if not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < tile:
        raise UsageError(f"--overlap must be an integer in [0, tile={tile}), got {overlap!r}")
    if not 0.0 < min_visible <= 1.0:
        raise UsageError(f"min_visible must be in (0, 1], got {min_visible!r}")
    if below not in BELOW_POLICIES:
        raise UsageError(f"below must be one of {BELOW_POLICIES}, got {below!r}")
    if not 0.0 <= negative_rate <= 1.0:
        raise UsageError(f"negative_rate must be in [0, 1], got {negative_rate!r}")


def scene_size(scene: Scene) -> tuple[int, int]:
    """``(width, height)`` of the scene, from the annotation or else the raster header."""
    if scene.width is not None and scene.height is not None:
        return int(scene.width), int(scene.height)
    from d2c.imageio import image_path_of

    path = image_path_of(scene)  # refuses paths that leave the dataset root
    try:
        with WindowReader(path) as reader:
            return reader.size
    except D2CError as exc:
        raise D2CError(f"{scene.key}: cannot tile, the image size is unknown and {path} is unreadable: {exc}") from exc


def tile_scene(
    scene: Scene,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    min_visible: float = DEFAULT_MIN_VISIBLE,
    below: str = "difficult",
    negative_rate: float = DEFAULT_NEGATIVE_RATE,
    seed: int = 0,
) -> TiledScene:
    """Split ``scene`` into tiles (no pixels are read). See the module docstring for the policy."""
    import shapely

    check_params(tile, overlap, min_visible, below, negative_rate)
    width, height = scene_size(scene)
    polys = np.empty(len(scene.instances), dtype=object)
    polys[:] = [shapely.make_valid(shapely.Polygon(inst.polygon)) for inst in scene.instances]
    areas = shapely.area(polys) if len(polys) else np.empty(0)
    placed = np.zeros(len(polys), dtype=bool)  # in at least one kept tile
    touched = np.zeros(len(polys), dtype=bool)  # overlaps at least one tile
    out = TiledScene(parent=scene)
    tree = shapely.STRtree(polys) if len(polys) else None
    for win in tile_windows(width, height, tile, overlap):
        box = shapely.box(win.x, win.y, win.x + win.width, win.y + win.height)
        hits = np.sort(tree.query(box, predicate="intersects")) if tree is not None else np.empty(0, int)
        instances, dropped = _clip_instances(scene, polys, areas, hits, box, win, min_visible, below, placed, touched)
        key = tile_key(scene.key, win.x, win.y)
        if not instances:
            if dropped:
                out.partial_skipped += 1
                continue
            keep = np.random.default_rng(scene_seed(seed, key)).random() < negative_rate
            if not keep:
                out.negatives_skipped += 1
                continue
            out.negatives_kept += 1
        flags = [f for f in scene.flags if f != PARTIAL_DROPPED_FLAG] + [TILE_FLAG]
        if dropped:
            flags.append(PARTIAL_DROPPED_FLAG)
        out.tiles.append((_tile_of(scene, key, win, instances, flags), win))
    out.rejects = _unplaced_rejects(scene, placed, touched, min_visible, (width, height))
    return out


def _clip_instances(
    scene: Scene, polys: np.ndarray, areas: np.ndarray, hits: np.ndarray, box: Any, win: Window,
    min_visible: float, below: str, placed: np.ndarray, touched: np.ndarray,
) -> tuple[list[Instance], int]:
    """The objects of one tile in tile pixels, and how many touching ones were dropped."""
    import shapely

    kept: list[Instance] = []
    dropped = 0
    if len(hits) == 0:
        return kept, dropped
    parts = shapely.intersection(polys[hits], box)
    shares = shapely.area(parts) / np.maximum(areas[hits], 1e-12)
    for idx, part, share in zip(hits, parts, shares, strict=True):
        if share <= 0:
            continue
        touched[idx] = True
        visible = share >= min_visible - 1e-9
        if not visible and below == "drop":
            dropped += 1
            continue
        inst = scene.instances[idx]
        if share >= 1.0 - 1e-9:
            clipped = _translated(inst, win)
        else:
            clipped = _as_instance(inst, part, win, difficult=inst.difficult or not visible)
        if clipped is None:
            continue
        kept.append(clipped)
        placed[idx] = True
    return kept, dropped


def _translated(inst: Instance, win: Window) -> Instance:
    """An object wholly inside the tile: the same shape, moved into tile pixels."""
    dx, dy = float(win.x), float(win.y)
    x0, y0, x1, y1 = inst.hbb
    cx, cy, w, h, a = inst.obb
    return Instance(
        raw_category=inst.raw_category, category=inst.category, polygon=inst.polygon - np.array([dx, dy]),
        hbb=(x0 - dx, y0 - dy, x1 - dx, y1 - dy), obb=(cx - dx, cy - dy, w, h, a), area=inst.area,
        difficult=inst.difficult, record=inst.record,
    )


def _as_instance(inst: Instance, part: Any, win: Window, *, difficult: bool) -> Instance | None:
    """The clipped part of ``inst`` as an Instance in tile pixels (its largest piece if it fell apart)."""
    import shapely

    if part.geom_type != "Polygon":
        pieces = [g for g in getattr(part, "geoms", []) if g.geom_type == "Polygon" and g.area > 0]
        if not pieces:
            return None
        part = max(pieces, key=lambda g: g.area)
    part = shapely.simplify(part, 0.0)  # drop repeated and collinear vertices left by the clip
    coords = np.asarray(part.exterior.coords, dtype=np.float64)[:-1]
    if coords.shape[0] < 3 or part.area <= 0:
        return None
    coords = coords - np.array([win.x, win.y], dtype=np.float64)
    return Instance.from_polygon(
        coords, inst.raw_category, inst.category, difficult=difficult, record=inst.record
    )


def _tile_of(scene: Scene, key: str, win: Window, instances: list[Instance], flags: list[str]) -> Scene:
    return Scene(
        key=key,
        source=scene.source,
        image_path=scene.image_path,
        root=scene.root,
        width=win.width,
        height=win.height,
        instances=instances,
        gsd=scene.gsd,
        image_source=scene.image_source,
        split=scene.split,
        provenance=scene.provenance,
        flags=flags,
        image_format=scene.image_format,
    )


def _unplaced_rejects(
    scene: Scene, placed: np.ndarray, touched: np.ndarray, min_visible: float, size: tuple[int, int]
) -> list[Reject]:
    """One Reject per parent object that no kept tile holds."""
    rejects = []
    for idx in np.flatnonzero(~placed):
        inst = scene.instances[int(idx)]
        if not touched[idx]:
            reason, code = f"object lies outside the {size[0]}x{size[1]} image, no tile holds it", "tile_outside"
        else:
            reason = f"object is never at least {min_visible:.0%} inside one tile (dropped by the tiling policy)"
            code = "tile_dropped"
        rejects.append(
            Reject(
                file=scene.provenance.file or scene.image_path,
                record=inst.record or scene.provenance.record,
                reason=f"{inst.category}: {reason}",
                code=code,
                instances=1,
                scene_key=scene.key,
            )
        )
    return rejects


class WindowReader:
    """An open raster that hands out windows (open once per scene, read one tile at a time)."""

    def __init__(self, path: str | Path, *, cache_mb: int = DEFAULT_CACHE_MB) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        self.path = Path(path)
        # GDAL's block cache defaults to 5 % of RAM; a small one keeps a scan of a huge scene bounded while
        # still holding the rows that overlapping tiles read twice.
        self._cache = int(cache_mb) * (1 << 20)
        try:
            with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=self._cache):
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(self.path)
        except Exception as exc:
            raise D2CError(f"{self.path}: cannot open the image for windowed reads: {exc}") from exc

    @property
    def dtype(self) -> str:
        return str(self._ds.dtypes[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self._ds.width), int(self._ds.height)

    def read(self, window: Window) -> np.ndarray:
        """The window's pixels, ``(H, W)`` for one band and ``(H, W, C)`` for several, source dtype."""
        w, h = self.size
        if window.x < 0 or window.y < 0 or window.x + window.width > w or window.y + window.height > h:
            raise D2CError(f"{self.path}: window {window} lies outside the {w}x{h} image")
        import rasterio

        with rasterio.Env(GDAL_CACHEMAX=self._cache):
            data = self._ds.read(window=window.to_rasterio())
        return data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> WindowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_window(path: str | Path, window: Window) -> np.ndarray:
    """Read one window of a raster (GeoTIFF, PNG, JPEG ...) without loading the rest of it."""
    with WindowReader(path) as reader:
        return reader.read(window)


def tile_image_record(
    tile: Scene,
    window: Window,
    reader: WindowReader | None,
    *,
    mode: str = "embed",
    max_side: int | None = None,
    stretch: Any = None,
) -> ImageRecord:
    """What a shard stores for one tile's image, reading only the tile's window.

    ``path`` is the parent image (relative to the dataset root; the row's ``tile_offset`` and size locate
    the tile in it) and ``sha256`` is taken over the window's raw samples (C order, source dtype), so equal
    tiles hash equal. ``embed`` stores an 8-bit PNG of the window: uint8 samples as they are, other dtypes
    through :func:`d2c.imageio.stretch_to_rgb`, fitted to the tile (parameters in ``stretch``). ``reader``
    None (image missing) gives a record without bytes or checksum.
    """
    from d2c.imageio import PNG_COMPRESS_LEVEL, StretchConfig, stretch_to_rgb

    if mode not in ("embed", "reference"):
        raise ValueError(f"mode must be 'embed' or 'reference', got {mode!r}")
    rel = tile.image_path.replace("\\", "/")
    if reader is None:
        return ImageRecord(bytes=None, path=rel, format=tile.image_format, sha256=None)
    pixels = reader.read(window)
    digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
    dtype = str(pixels.dtype)
    if mode == "reference":
        return ImageRecord(bytes=None, path=rel, format=tile.image_format, sha256=digest, orig_dtype=dtype)
    bands = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)
    rgb, params = stretch_to_rgb(bands, stretch or StretchConfig())
    del pixels, bands
    from PIL import Image

    im = Image.fromarray(rgb, mode="RGB")
    scale = 1.0
    if max_side is not None and max(im.size) > max_side:
        scale = max_side / max(im.size)
        size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    params["orig_dtype"] = dtype
    stretch_json = None if dtype == "uint8" else json.dumps(params, sort_keys=True)
    return ImageRecord(bytes=buf.getvalue(), path=rel, format="png", sha256=digest, orig_dtype=dtype,
                       stretch=stretch_json, scale=scale)


@dataclass
class TiledRows:
    """One scene cut into tiles for ``convert --tile``: the rows of its kept tiles (row-major, captioned,
    ``parent_key`` and ``tile_offset`` set), the Rejects of parent objects no tile holds, and how many
    tiles were left out because their rows are already written (``skip``)."""

    rows: list[Any]  # d2c.rows.RowInput
    rejects: list[Reject]
    skipped: int = 0


def tile_rows(
    scene: Scene,
    caption_many: Callable[[list[Scene]], list[Any]],
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    min_visible: float = DEFAULT_MIN_VISIBLE,
    below: str = "difficult",
    negative_rate: float = DEFAULT_NEGATIVE_RATE,
    seed: int = 0,
    mode: str = "reference",
    max_side: int | None = None,
    stretch: Any = None,
    skip: frozenset[str] = frozenset(),
) -> TiledRows | Reject:
    """What ``convert --tile`` writes for one scene, or the Reject of the whole scene (all its objects)
    when its image cannot be read, a tile fails or a caption fails: accounting stays exact. Pixels are
    read one window at a time; the kept tiles are captioned in one ``caption_many`` call (per scene
    ``(texts, template ids)`` or the exception: ``CaptionEngine.caption_many``). Tiles whose key is in
    ``skip`` (rows a resumed run keeps) are neither read nor captioned."""
    import contextlib

    from d2c.imageio import image_path_of
    from d2c.rows import RowInput

    try:
        path = image_path_of(scene)
        if mode == "embed" and not path.is_file():
            return Reject.of_scene(scene, "image_missing", f"image {scene.image_path!r} not found (needed in embed mode)")
        tiled = tile_scene(scene, tile=tile, overlap=overlap, min_visible=min_visible, below=below,
                           negative_rate=negative_rate, seed=seed)
        todo, skipped = [], 0
        with WindowReader(path) if path.is_file() else contextlib.nullcontext(None) as reader:
            for tile_sc, window in tiled:
                if tile_sc.key in skip:
                    skipped += 1
                    continue
                record = tile_image_record(tile_sc, window, reader, mode=mode, max_side=max_side, stretch=stretch)
                todo.append((tile_sc, record, window.offset))
        rows = []
        for (tile_sc, record, offset), caps in zip(todo, caption_many([t for t, _, _ in todo]), strict=True):
            if isinstance(caps, Exception):
                raise caps
            rows.append(RowInput(tile_sc, caps[0], caps[1], record, parent_key=scene.key, tile_offset=offset))
    except UsageError:
        raise
    except D2CError as exc:
        return Reject.of_scene(scene, error_code(exc), str(exc))
    except (OSError, ValueError) as exc:
        return Reject.of_scene(scene, "tile_error", f"{scene.image_path}: {exc}")
    return TiledRows(rows, tiled.rejects, skipped)


def tiled_rows(scene: Scene, caption: Callable[[Scene], list[Any]], **settings: Any
               ) -> tuple[list[dict[str, Any]], list[Reject]]:
    """:func:`tile_rows` as shard rows (dicts) and Rejects, captioning one tile at a time with
    ``caption(tile_scene)``, which returns objects with ``text`` and ``template_id``
    (``CaptionEngine.caption``). ``settings``: :func:`tile_rows`'s keyword arguments (tile, overlap,
    min_visible, below, negative_rate, seed, mode, max_side, stretch)."""
    from d2c.rows import scene_to_row

    def caption_many(scenes: list[Scene]) -> list[Any]:
        out: list[Any] = []
        for sc in scenes:
            caps = caption(sc)
            out.append(([c.text for c in caps], [c.template_id for c in caps]))
        return out

    res = tile_rows(scene, caption_many, **settings)
    if isinstance(res, Reject):
        return [], [res]
    rows = [scene_to_row(r.scene, r.captions, r.template_ids, r.image, parent_key=r.parent_key,
                         tile_offset=r.tile_offset) for r in res.rows]
    return rows, res.rejects
