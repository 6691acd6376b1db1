"""Streaming training batches from Parquet shards (d2c.schema.SCHEMA), deterministic under any parallelism.

Order. For epoch ``e`` the *global* row sequence is a pure function of ``(seed, e)``: row groups in a seeded
random order, then a seeded shuffle buffer over row indices (simulated on indices, so it costs no I/O).
Rank ``r`` of ``R`` takes positions ``r, r+R, r+2R, ...`` (disjoint, and the union of the ranks' b-th
batches is the b-th batch of a single process with R times the batch size). Its batches go round-robin to
the DataLoader workers, which is also the order the DataLoader yields them in, so the stream does not depend
on the number of workers. Each worker reads only the row groups its batches need.

Equal batches per rank: ``tail = "drop"`` (default) drops the last ``N mod (R*B)`` rows of the epoch;
``"wrap"`` fills the last batches from the start of the sequence. Either way every rank runs the same
number of steps (an unequal count would hang the last all-reduce).

Per row and epoch, a generator seeded by ``scene_seed(seed, f"{key}|{epoch}")`` picks the caption and the
augmentation. Augmentation (flip and 90-degree rotations) moves the objects too and re-renders the
caption from the moved objects with d2c's CaptionEngine, so "left" stays true. Rows whose image fails to
decode are logged and counted; their slot is filled with another image of the same batch (its caption is
identical, so the loss masks the pair as a non-negative) and training goes on.

Resume: ``set_epoch(epoch, start_batch)`` skips the consumed batches without reading them.
"""

from __future__ import annotations

import io
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from d2c.errors import UsageError
from d2c.model import Instance, Scene, scene_seed, stable_digest
from d2c.rows import scene_from_row
from d2c.shards import read_metadata, shard_paths

log = logging.getLogger(__name__)
COLUMNS = ["key", "source", "split", "image", "image_format", "width", "height", "image_scale", "flags",
           "captions", "objects", "gsd", "image_source", "provenance"]
MAX_PIXELS = 1 << 28


@dataclass(frozen=True)
class RowGroup:
    path: str
    index: int
    rows: int
    start: int  # global index of its first row


def _require_embedded(path: Path) -> None:
    """Training reads image bytes from the shards; reference-mode shards name files instead."""
    if read_metadata(path).get("images_mode") == "reference":
        raise UsageError(f"{path}: written with --images-mode reference (rows name image files, no image bytes); "
                         "training needs embedded images: rebuild the shards with `d2c convert ... --images-mode "
                         "embed` (mmsar build embeds them)")


def index_shards(paths: list[str] | list[Path]) -> list[RowGroup]:
    """Row groups of every shard (folders expanded, sorted), from Parquet footers only."""
    groups: list[RowGroup] = []
    start = 0
    for entry in paths:
        for p in shard_paths(entry):
            _require_embedded(p)
            meta = pq.ParquetFile(p).metadata
            for i in range(meta.num_row_groups):
                n = meta.row_group(i).num_rows
                groups.append(RowGroup(str(p), i, n, start))
                start += n
    if not groups:
        raise FileNotFoundError(f"no rows in training shards {list(map(str, paths))}")
    return groups


def global_order(groups: list[RowGroup], seed: int, epoch: int, shuffle_buffer: int) -> np.ndarray:
    """The epoch's global row sequence (pure function of seed and epoch)."""
    rng = np.random.default_rng([seed, epoch])
    seq = np.concatenate([np.arange(groups[g].start, groups[g].start + groups[g].rows)
                          for g in rng.permutation(len(groups))])
    if shuffle_buffer <= 1:
        return seq
    out = np.empty_like(seq)
    buf = list(seq[:shuffle_buffer])
    picks = rng.integers(0, len(buf), size=max(0, len(seq) - len(buf)))
    for n, (row, j) in enumerate(zip(seq[len(buf):], picks, strict=True)):
        out[n] = buf[j]
        buf[j] = row
    tail = len(seq) - len(buf)
    out[tail:] = rng.permutation(np.asarray(buf, dtype=seq.dtype))
    return out


def rank_batches(seq: np.ndarray, batch_size: int, rank: int, world_size: int, tail: str) -> np.ndarray:
    """(num_batches, batch_size) global row ids for ``rank``; the same num_batches on every rank."""
    per_step = batch_size * world_size
    if tail == "drop":
        nb = len(seq) // per_step
        used = seq[: nb * per_step]
    else:
        nb = -(-len(seq) // per_step)
        used = np.resize(seq, nb * per_step)
    return used[rank::world_size].reshape(nb, batch_size)


def dihedral_points(pts: np.ndarray, width: float, height: float, flip: bool, rot: int) -> np.ndarray:
    """Map (N, 2) points under a horizontal flip, then ``rot`` clockwise quarter turns (y points down)."""
    x, y = pts[:, 0].copy(), pts[:, 1].copy()
    w, h = width, height
    if flip:
        x = w - x
    for _ in range(rot % 4):
        x, y = h - y, x
        w, h = h, w
    return np.stack([x, y], 1)


def dihedral_scene(scene: Scene, flip: bool, rot: int) -> Scene:
    """The scene as seen after the same flip/rotation applied to its image."""
    w, h = scene.width, scene.height
    insts = [Instance.from_polygon(dihedral_points(i.polygon, w, h, flip, rot), i.raw_category, i.category,
                                   difficult=i.difficult) for i in scene.instances]
    nw, nh = (h, w) if rot % 2 else (w, h)
    return Scene(key=scene.key, source=scene.source, image_path=scene.image_path, root=scene.root, width=nw,
                 height=nh, instances=insts, gsd=scene.gsd, image_source=scene.image_source, split=scene.split,
                 provenance=scene.provenance, flags=list(scene.flags), image_format=scene.image_format)


def dihedral_image(arr: np.ndarray, flip: bool, rot: int) -> np.ndarray:
    if flip:
        arr = arr[:, ::-1]
    return np.ascontiguousarray(np.rot90(arr, k=-(rot % 4)))


def decode_gray(data: bytes) -> np.ndarray:
    """8-bit PNG/JPEG bytes -> (H, W) uint8 (colour converted to luminance); raises on bad data."""
    with Image.open(io.BytesIO(data)) as im:
        if im.width * im.height > MAX_PIXELS:
            raise ValueError(f"image of {im.width}x{im.height} exceeds the pixel cap")
        return np.asarray(im.convert("L"))


class ShardStream(IterableDataset):
    """Yields whole batches (dicts) for one rank; use ``DataLoader(ds, batch_size=None)``."""

    def __init__(self, paths: list[str], *, batch_size: int, transform: Callable[[list[Image.Image]], dict],
                 seed: int = 0, rank: int = 0, world_size: int = 1, shuffle_buffer: int = 256,
                 tail: str = "drop", augment: bool = False, caption_seed: int = 0,
                 tokenizer: Callable[[list[str]], torch.Tensor] | None = None) -> None:
        self.groups = index_shards(paths)
        self.batch_size, self.transform, self.seed = batch_size, transform, seed
        self.rank, self.world_size, self.shuffle_buffer, self.tail = rank, world_size, shuffle_buffer, tail
        self.augment, self.caption_seed, self.tokenizer = augment, caption_seed, tokenizer
        self.epoch, self.start_batch = 0, 0
        self.num_rows = sum(g.rows for g in self.groups)
        self._starts = np.array([g.start for g in self.groups])
        self._cache: OrderedDict[int, list[dict]] = OrderedDict()
        self._engine = None
        if augment:
            self._caption_engine()  # built once here, inherited by forked loader workers

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __len__(self) -> int:
        per_step = self.batch_size * self.world_size
        return self.num_rows // per_step if self.tail == "drop" else -(-self.num_rows // per_step)

    def batches(self, epoch: int) -> np.ndarray:
        seq = global_order(self.groups, self.seed, epoch, self.shuffle_buffer)
        return rank_batches(seq, self.batch_size, self.rank, self.world_size, self.tail)

    def __iter__(self):
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        plan = self.batches(self.epoch)
        for b in range(self.start_batch, len(plan)):
            if (b - self.start_batch) % workers == worker:
                yield self.make_batch(b, plan[b])

    def _row(self, gid: int) -> dict[str, Any]:
        g = int(np.searchsorted(self._starts, gid, side="right") - 1)
        if g not in self._cache:
            grp = self.groups[g]
            table = pq.ParquetFile(grp.path).read_row_group(grp.index, columns=COLUMNS)
            self._cache[g] = table.to_pylist()
            while len(self._cache) > 8:
                self._cache.popitem(last=False)
        self._cache.move_to_end(g)
        return self._cache[g][gid - self.groups[g].start]

    def _caption_engine(self):
        if self._engine is None:
            from d2c.captions import CaptionEngine

            self._engine = CaptionEngine(seed=self.caption_seed)
        return self._engine

    def row_rng(self, key: str) -> np.random.Generator:
        """The row's generator for this epoch: first draw = augmentation, then the caption index."""
        return np.random.default_rng(scene_seed(self.seed, f"{key}|{self.epoch}"))

    def augmentation(self, key: str) -> tuple[bool, int]:
        """(horizontal flip, clockwise quarter turns) applied to row ``key`` this epoch."""
        if not self.augment:
            return False, 0
        op = int(self.row_rng(key).integers(8))
        return bool(op & 4), op & 3

    def sample(self, row: dict[str, Any]) -> tuple[np.ndarray, str]:
        """One row -> (augmented grayscale image, caption true of it). Raises on undecodable data."""
        rng = self.row_rng(row["key"])
        data = (row.get("image") or {}).get("bytes")
        if not data:
            raise ValueError("no embedded image bytes (shards must be written with images embedded: "
                             "d2c convert --images-mode embed, or mmsar build)")
        arr = decode_gray(data)
        captions = list(row.get("captions") or [])
        if self.augment:
            op = int(rng.integers(8))
            flip, rot = bool(op & 4), op & 3
            if op:
                arr = dihedral_image(arr, flip, rot)
                scene = dihedral_scene(scene_from_row(row), flip, rot)
                captions = [c.text for c in self._caption_engine().caption(scene)]
        if not captions:
            raise ValueError("row has no captions")
        return arr, captions[int(rng.integers(len(captions)))]

    def make_batch(self, b: int, gids: np.ndarray) -> dict[str, Any]:
        images: list[np.ndarray | None] = []
        texts: list[str] = []
        keys: list[str] = []
        errors = 0
        for gid in gids:
            row = self._row(int(gid))
            keys.append(row["key"])
            try:
                arr, text = self.sample(row)
            except Exception as e:  # noqa: BLE001 - a bad row must never stop training
                errors += 1
                log.warning("%s: row %s skipped: %s", row.get("key"), int(gid), e)
                arr, text = None, ""
            images.append(arr)
            texts.append(text)
        good = [i for i, a in enumerate(images) if a is not None]
        for i, a in enumerate(images):
            if a is None:
                j = good[i % len(good)] if good else None
                images[i] = images[j] if j is not None else np.zeros((8, 8), np.uint8)
                texts[i] = texts[j] if j is not None else ""
        batch = self.transform([Image.fromarray(a) for a in images])
        batch.update(texts=texts, keys=keys, rows=torch.as_tensor(gids, dtype=torch.long), batch_index=b,
                     decode_errors=errors,
                     text_ids=torch.tensor([stable_digest(t, 7) for t in texts], dtype=torch.long))
        if self.tokenizer is not None:
            batch["tokens"] = self.tokenizer(texts)
        return batch


def norm_stats(paths: list[str], max_rows: int = 256) -> tuple[list[float], list[float]]:
    """Grayscale mean/std (in [0, 1]) of the first ``max_rows`` decodable images, replicated to 3 channels."""
    total = total_sq = count = 0.0
    seen = 0
    for g in index_shards(paths):
        table = pq.ParquetFile(g.path).read_row_group(g.index, columns=["key", "image"])
        for row in table.to_pylist():
            if seen >= max_rows:
                break
            seen += 1
            try:
                x = decode_gray(row["image"]["bytes"]).astype(np.float64) / 255.0
            except Exception as e:  # noqa: BLE001
                log.warning("%s: not used for normalisation stats: %s", row.get("key"), e)
                continue
            total, total_sq, count = total + x.sum(), total_sq + (x * x).sum(), count + x.size
        if seen >= max_rows:
            break
    if not count:
        raise ValueError(f"no decodable image in {paths} to compute normalisation statistics")
    mean = total / count
    std = max(float(np.sqrt(max(total_sq / count - mean * mean, 0.0))), 1e-3)
    return [float(mean)] * 3, [std] * 3
