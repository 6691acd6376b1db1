"""Small shards for the sarclip_train tests: PIL-drawn scenes with bright rectangles, captioned by d2c."""

from __future__ import annotations

import io
from math import comb
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageDraw

from d2c.model import Instance, Scene
from d2c.rows import ImageRecord, scene_to_row
from d2c.schema import SCHEMA

CLASSES = ("ship", "aircraft")


def make_scene(i: int, rng: np.random.Generator, size: tuple[int, int], cell: bool = False,
               max_objects: int = 4) -> tuple[Scene, bytes]:
    """Bright rectangles on dark noise; ``cell``: all objects inside one random cell of a 3x3 grid."""
    w, h = size
    img = Image.fromarray(rng.integers(0, 40, (h, w), dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    insts = []
    cls = CLASSES[int(rng.integers(len(CLASSES)))]
    cx, cy = int(rng.integers(3)), int(rng.integers(3))
    for _ in range(int(rng.integers(1, max_objects + 1))):
        bw, bh = (max(4, w // 6), max(2, h // 16)) if cls == "ship" else (max(4, w // 10), max(4, h // 10))
        if cell:
            x0 = int(rng.integers(cx * w // 3, (cx + 1) * w // 3 - bw))
            y0 = int(rng.integers(cy * h // 3, (cy + 1) * h // 3 - bh))
        else:
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        draw.rectangle([x0, y0, x0 + bw - 1, y0 + bh - 1], fill=230)
        insts.append(Instance.from_hbb(x0, y0, x0 + bw, y0 + bh, cls))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    scene = Scene(key=f"toy/img{i:05d}", source="toy", image_path=f"img{i:05d}.png", root="", width=w, height=h,
                  instances=insts, split="train")
    return scene, buf.getvalue()


def make_shards(out: Path, n: int, *, seed: int = 0, size: tuple[int, int] | None = None, rows_per_group: int = 8,
                files: int = 2, bad: tuple[int, ...] = (), captions_per_image: int = 3, cell: bool = False,
                max_objects: int = 4, templates: Path | None = None) -> Path:
    """``n`` rows over ``files`` shard files; rows listed in ``bad`` get undecodable image bytes.
    ``templates``: caption with only that template folder (d2c's defaults left out)."""
    from d2c.captions import CaptionEngine

    engine = CaptionEngine(templates, captions_per_image=captions_per_image, seed=seed,
                           include_defaults=templates is None)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        sz = size or (int(rng.integers(48, 200)), int(rng.integers(48, 200)))
        scene, data = make_scene(i, rng, sz, cell, max_objects)
        caps = engine.caption(scene)
        if i in bad:
            data = b"\x89PNG broken"
        rec = ImageRecord(bytes=data, path=scene.image_path, format="png", sha256=None)
        rows.append(scene_to_row(scene, [c.text for c in caps], [c.template_id for c in caps], rec))
    per = -(-n // files)
    for f in range(files):
        chunk = rows[f * per:(f + 1) * per]
        if chunk:
            table = pa.Table.from_pylist(chunk, schema=SCHEMA)
            pq.write_table(table, out / f"toy-{f:05d}.parquet", row_group_size=rows_per_group)
    return out


def recall_at_5(model, rows) -> tuple[float, float]:
    """Image-to-text R@5 over the pool of unique held-out captions, and its chance level."""
    pool = sorted({c for r in rows for c in r["captions"]})
    images = [Image.open(io.BytesIO(r["image"]["bytes"])) for r in rows]
    with torch.no_grad():
        sims = model.encode_image(images) @ model.encode_text(pool).T
    top = sims.topk(5, dim=1).indices.tolist()
    hits, chance = [], []
    for r, t in zip(rows, top, strict=True):
        pos = {pool.index(c) for c in r["captions"]}
        hits.append(bool(pos & set(t)))
        chance.append(1 - comb(len(pool) - len(pos), 5) / comb(len(pool), 5))
    return float(np.mean(hits)), float(np.mean(chance))
