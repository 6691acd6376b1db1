"""A picture of the data: a grid of sample images, one row per source and one column per class, each
with its oriented boxes drawn in the class's colour and one of its captions underneath.

Why: the first thing people look at in a dataset (HF viewers, FiftyOne) is its images; a wrong class map,
boxes off by a scale factor or captions that do not match show at a glance here and nowhere in a table.
Used by ``mmsar build`` (``gallery.png`` beside the card) and ``d2c inspect --gallery`` (any shard
folder). Pillow only, so the base install draws it; same shards, same PNG bytes.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

# Distinct, saturated colours (tab10 without grey), cycled per class in sorted order.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (188, 189, 34), (23, 190, 207))
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
EMPTY = (235, 235, 235)
LINE_WIDTH = 2


@dataclass(frozen=True)
class GalleryOptions:
    """Layout: ``thumb`` px per image side, ``per_class`` samples per (source, class), ``max_classes``
    columns at most (the most frequent classes), ``caption_lines`` of caption text per image;
    ``min_images``: a small grid (one source, one class) takes more samples per cell, up to this many
    images in all, where the data has them."""

    thumb: int = 224
    per_class: int = 1
    min_images: int = 0
    max_classes: int = 12
    caption_lines: int = 4
    label_width: int = 130
    pad: int = 8


@dataclass
class Placed:
    """One sample in the grid: where its thumbnail lies and its boxes in gallery pixels (for tests)."""

    source: str
    category: str
    key: str
    caption: str
    origin: tuple[int, int]  # top-left of the thumbnail in the gallery
    scale: float  # gallery px per original image px
    boxes: list[tuple[str, list[tuple[float, float]]]] = field(default_factory=list)


@dataclass
class Gallery:
    path: Path
    size: tuple[int, int]
    sources: list[str]
    classes: list[str]
    samples: list[Placed]


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font has no size
        return ImageFont.load_default()


def _choose(folders: Sequence[Path], opts: GalleryOptions) -> tuple[dict[tuple[str, str], list[tuple[Path, int]]],
                                                                     list[str], list[str]]:
    """Per (source, class) the first ``per_class`` rows (shard order) holding that class, read from the
    light columns only; the classes are the ``max_classes`` most frequent."""
    import pyarrow.parquet as pq

    from d2c.shards import shard_paths

    picks: dict[tuple[str, str], list[tuple[Path, int]]] = {}
    freq: dict[str, int] = {}
    sources: list[str] = []
    for folder in folders:
        for path in shard_paths(folder):
            pf = pq.ParquetFile(path)
            if "objects" not in pf.schema_arrow.names:
                continue  # not a scene shard (chips): nothing to draw boxes of
            rows = pf.read(columns=["source", "counts"]).to_pylist()
            for i, row in enumerate(rows):
                src = row["source"] or "?"
                if src not in sources:
                    sources.append(src)
                for c in row["counts"] or []:
                    freq[c["category"]] = freq.get(c["category"], 0) + c["count"]
                    cell = picks.setdefault((src, c["category"]), [])
                    if len(cell) < max(opts.per_class, opts.min_images):
                        cell.append((path, i))
    classes = sorted(sorted(freq), key=lambda c: -freq[c])[: opts.max_classes]
    return picks, sorted(sources), sorted(classes)


def _per_class(picks: dict[tuple[str, str], list[Any]], cells: int, opts: GalleryOptions) -> int:
    """Samples per cell: ``per_class``, or more for a small grid (as many as the fullest cell holds)."""
    if not opts.min_images or not cells:
        return opts.per_class
    want = -(-opts.min_images // cells)
    return max(opts.per_class, min(want, max((len(v) for v in picks.values()), default=0)))


def _read_rows(wanted: list[tuple[Path, int]]) -> dict[tuple[Path, int], tuple[dict[str, Any], str]]:
    """The wanted rows in full (only their row groups are read), each with its shard's dataset root."""
    import pyarrow.parquet as pq

    from d2c.shards import read_metadata

    out: dict[tuple[Path, int], tuple[dict[str, Any], str]] = {}
    by_path: dict[Path, list[int]] = {}
    for path, i in wanted:
        by_path.setdefault(path, []).append(i)
    for path, idx in by_path.items():
        pf = pq.ParquetFile(path)
        root = read_metadata(path).get("dataset_root") or str(path.parent)
        starts, n = [], 0
        for g in range(pf.num_row_groups):
            starts.append(n)
            n += pf.metadata.row_group(g).num_rows
        for i in sorted(set(idx)):
            g = max(k for k, s in enumerate(starts) if s <= i)
            out[(path, i)] = (pf.read_row_group(g).slice(i - starts[g], 1).to_pylist()[0], root)
    return out


def _image(row: dict[str, Any], root: str) -> Image.Image | None:
    """The row's stored image, or its referenced file through d2c's image pipeline (root-escape check,
    pixel cap, stretch of non-8-bit rasters); None when neither can be had."""
    from d2c.errors import D2CError
    from d2c.imageio import decode_image, load_image_record
    from d2c.rows import scene_from_row

    data = (row.get("image") or {}).get("bytes")
    try:
        if data is None and (row.get("image") or {}).get("path"):
            data = load_image_record(scene_from_row(row, root=root, instances=False), mode="embed").bytes
        if data is None:
            return None
        return Image.fromarray(decode_image(data))
    except (OSError, ValueError, D2CError):
        return None


def _wrap(text: str, width_px: int, lines: int) -> list[str]:
    out = textwrap.wrap(text, width=max(8, width_px // 7)) or [""]
    if len(out) > lines:
        out = [*out[: lines - 1], out[lines - 1][: max(0, len(out[lines - 1]) - 1)] + "…"]
    return out


def draw_gallery(folders: Sequence[Path | str], out: Path | str, options: GalleryOptions | None = None,
                 *, title: str | None = None) -> Gallery:
    """Draw the gallery of the scene shards in ``folders`` into the PNG ``out`` (written atomically)."""
    from d2c.shards import atomic_write_bytes

    opts = options or GalleryOptions()
    folders = [Path(f) for f in folders]
    picks, sources, classes = _choose(folders, opts)
    if not sources:
        raise ValueError(f"{', '.join(map(str, folders))}: no scene rows to draw")
    if not classes:
        classes = ["(no objects)"]
    opts = replace(opts, per_class=_per_class(picks, len(sources) * len(classes), opts))
    picks = {k: v[: opts.per_class] for k, v in picks.items()}
    rows = _read_rows([p for c in classes for s in sources for p in picks.get((s, c), [])])
    colour = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}
    t, pad = opts.thumb, opts.pad
    cap_h = 14 * opts.caption_lines
    cell_w, cell_h = t + pad, t + cap_h + 2 * pad
    head_h = 40 if title else 22
    width = opts.label_width + cell_w * len(classes) * opts.per_class + pad
    height = head_h + cell_h * len(sources) + pad
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font, small = _font(13), _font(11)
    if title:
        draw.text((pad, 4), title, fill=TEXT, font=_font(15))
    for j, cls in enumerate(classes):
        x = opts.label_width + j * cell_w * opts.per_class
        draw.rectangle([x, head_h - 18, x + 12, head_h - 6], fill=colour[cls])
        draw.text((x + 16, head_h - 20), cls, fill=TEXT, font=font)
    placed: list[Placed] = []
    for i, src in enumerate(sources):
        y0 = head_h + i * cell_h
        draw.text((pad, y0 + t // 2), src, fill=TEXT, font=font)
        for j, cls in enumerate(classes):
            cell = picks.get((src, cls), [])
            for k in range(opts.per_class):
                x0 = opts.label_width + (j * opts.per_class + k) * cell_w
                if k >= len(cell):
                    draw.rectangle([x0, y0, x0 + t - 1, y0 + t - 1], fill=EMPTY)
                    draw.text((x0 + 6, y0 + t // 2 - 6), f"no {cls}" if k == 0 else "-", fill=TEXT, font=small)
                    continue
                row, root = rows[cell[k]]
                placed.append(_draw_sample(canvas, draw, row, root, src, cls, (x0, y0), opts, colour, small))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    return Gallery(out, canvas.size, sources, classes, placed)


def _draw_sample(canvas: Image.Image, draw: ImageDraw.ImageDraw, row: dict[str, Any], root: str, src: str,
                 cls: str, at: tuple[int, int], opts: GalleryOptions, colour: dict[str, tuple[int, int, int]],
                 font: Any) -> Placed:
    """One thumbnail with every object's polygon in its class colour and the row's first caption."""
    t = opts.thumb
    x0, y0 = at
    caption = (row.get("captions") or [""])[0]
    im = _image(row, root)
    w, h = row.get("width") or (im.width if im else t), row.get("height") or (im.height if im else t)
    scale = t / max(w, h)  # gallery px per original px (the stored image may be reduced: image_scale)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    ox, oy = x0 + (t - tw) // 2, y0 + (t - th) // 2
    if im is not None:
        canvas.paste(im.resize((tw, th), Image.Resampling.BILINEAR), (ox, oy))
    else:
        draw.rectangle([ox, oy, ox + tw - 1, oy + th - 1], fill=EMPTY)
        draw.text((ox + 6, oy + 6), "image not available", fill=TEXT, font=font)
    item = Placed(src, cls, row["key"], caption, (ox, oy), scale)
    for obj in row.get("objects") or []:
        poly = obj.get("polygon") or []
        if len(poly) < 6:
            continue
        pts = [(ox + poly[q] * scale, oy + poly[q + 1] * scale) for q in range(0, len(poly) - 1, 2)]
        draw.line([*pts, pts[0]], fill=colour.get(obj["category"], PALETTE[-1]), width=LINE_WIDTH)
        item.boxes.append((obj["category"], pts))
    for n, line in enumerate(_wrap(caption, t, opts.caption_lines)):
        draw.text((x0, y0 + t + 4 + 14 * n), line, fill=TEXT, font=font)
    return item
