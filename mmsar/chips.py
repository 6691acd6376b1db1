"""Object chips for zero-shot, few-shot and linear-probe classification sets.

Why square crops with context: a SAR target is recognised by its surroundings too (a ship's wake, an
aircraft's apron), and a fixed-size square keeps the aspect ratio of what the encoder sees. The crop may
run past the image edge; the outside is filled with zeros (no radar return) so the object stays centred.
Rows follow :data:`d2c.schema.CHIP_SCHEMA`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def crop_box(hbb: Sequence[float], context: float, min_crop: int) -> tuple[float, float, float, float]:
    """The square crop around a box: side = long side * (1 + context), at least ``min_crop``, whole pixels."""
    x0, y0, x1, y1 = (float(v) for v in hbb)
    side = max(max(x1 - x0, y1 - y0) * (1.0 + context), float(min_crop))
    side = float(np.ceil(side))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    left, top = float(np.floor(cx - side / 2.0)), float(np.floor(cy - side / 2.0))
    return (left, top, left + side, top + side)


def cut_chip(image: np.ndarray, crop: Sequence[float], size: int) -> np.ndarray:
    """Cut ``crop`` (may extend past the edges: zero-filled) from an (H, W, 3) uint8 array, resize to size."""
    from PIL import Image

    left, top, right, bottom = (int(v) for v in crop)
    out = np.zeros((bottom - top, right - left, 3), dtype=np.uint8)
    h, w = image.shape[:2]
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(right, w), min(bottom, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = image[sy0:sy1, sx0:sx1, :3]
    pil = Image.fromarray(out)
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(pil)


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes with fixed settings (same pixels, same bytes); fast compression: chips are small."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def chip_rows(row: dict[str, Any], image: np.ndarray, split: str, *, size: int, context: float,
              min_crop: int) -> Iterator[dict[str, Any]]:
    """One CHIP_SCHEMA row per object of a scene row. ``image`` is the stored image; when it was reduced
    (``image_scale`` < 1) crops are scaled into it while boxes stay in the parent's original pixels."""
    scale = float(row.get("image_scale") or 1.0)
    for i, obj in enumerate(row.get("objects") or []):
        crop = crop_box(obj["hbb"], context, min_crop)  # tile rows are already in tile pixels
        local = crop
        if scale != 1.0:
            local = tuple(float(np.floor(v * scale)) for v in local)
            local = (local[0], local[1], max(local[2], local[0] + 1), max(local[3], local[1] + 1))
        chip = cut_chip(image, local, size)
        yield {
            "key": f"{row['key']}#{i}",
            "parent_key": row["key"],
            "source": row["source"],
            "split": split,
            "image": {"bytes": encode_png(chip), "path": None},
            "image_format": "png",
            "width": size,
            "height": size,
            "label": obj["category"],
            "box": [float(v) for v in obj["hbb"]],
            "obb": [float(v) for v in obj["obb"]],
            "crop": [float(v) for v in crop],
        }


def image_folder_items(root: Path) -> list[tuple[str, Path]]:
    """(class, file) pairs of an ImageFolder-style set (``root/<class>/<image>``), sorted."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: external chip folder not found")
    items = []
    for cls_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(cls_dir.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."):
                items.append((cls_dir.name, f))
    return items


def external_chip_row(name: str, root: Path, cls: str, path: Path, image: np.ndarray, split: str,
                      size: int) -> dict[str, Any]:
    """A CHIP_SCHEMA row for one image of an external classification set: the whole image, resized."""
    h, w = image.shape[:2]
    rel = path.relative_to(root).with_suffix("").as_posix()
    chip = cut_chip(image, (0, 0, w, h), size) if (w, h) != (size, size) else np.ascontiguousarray(image[:, :, :3])
    return {
        "key": f"{name}/{rel}",
        "parent_key": None,
        "source": name,
        "split": split,
        "image": {"bytes": encode_png(chip), "path": None},
        "image_format": "png",
        "width": size,
        "height": size,
        "label": cls,
        "box": [0.0, 0.0, float(w), float(h)],
        "obb": [w / 2.0, h / 2.0, float(max(w, h)), float(min(w, h)), 0.0 if w >= h else 90.0],
        "crop": [0.0, 0.0, float(w), float(h)],
    }
