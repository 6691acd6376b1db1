"""Duplicate images across sources.

Why: merged SAR datasets re-publish the same chips (SARDet-100K merges ten datasets; the SSDD VOC and DOTA
releases hold byte-identical images with different boxes). A duplicate in train and test inflates every
score, so exact copies keep one row (the first source in config order wins) and the dropped copy is
reported with its annotations and whether the two label sets disagree. Near-duplicates (re-encodes,
slight crops) are grouped by a 64-bit perceptual hash so the splitter keeps a group together.

Scene records are plain dicts (see :mod:`mmsar.sources`): ``key``, ``source``, ``sha256``, ``phash`` (16 hex
digits or None), ``tile_offset``, ``objects`` (``[category, x0, y0, x1, y1, difficult]`` lists), ``counts``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class DedupeResult:
    kept: list[dict[str, Any]]
    exact: list[dict[str, Any]] = field(default_factory=list)  # dropped exact copies, report entries
    near_groups: list[list[str]] = field(default_factory=list)  # keys, record order; first is the anchor
    near_dropped: list[dict[str, Any]] = field(default_factory=list)


def identity(rec: dict[str, Any]) -> str | None:
    """What makes two rows the same picture: the image bytes' sha256 (plus the tile offset for tiles)."""
    if not rec.get("sha256"):
        return None
    off = rec.get("tile_offset")
    return rec["sha256"] if not off else f"{rec['sha256']}@{off[0]},{off[1]}"


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def unmatched_objects(a: Sequence[Sequence[Any]], b: Sequence[Sequence[Any]], iou: float) -> int:
    """How many boxes of ``a`` and ``b`` find no partner of the same class with IoU >= ``iou`` (greedy,
    best pairs first)."""
    unmatched = 0
    classes = sorted({o[0] for o in a} | {o[0] for o in b})
    for cls in classes:
        ba = np.array([o[1:5] for o in a if o[0] == cls], dtype=np.float64).reshape(-1, 4)
        bb = np.array([o[1:5] for o in b if o[0] == cls], dtype=np.float64).reshape(-1, 4)
        if len(ba) == 0 or len(bb) == 0:
            unmatched += len(ba) + len(bb)
            continue
        m = _iou_matrix(ba, bb)
        pairs = 0
        while m.size and m.max() >= iou:
            i, j = np.unravel_index(int(np.argmax(m)), m.shape)
            m[i, :] = -1
            m[:, j] = -1
            pairs += 1
        unmatched += len(ba) + len(bb) - 2 * pairs
    return unmatched


def _exact_entry(kept: dict[str, Any], dropped: dict[str, Any], iou: float) -> dict[str, Any]:
    unmatched = unmatched_objects(kept["objects"], dropped["objects"], iou)
    return {
        "key": dropped["key"],
        "source": dropped["source"],
        "kept_key": kept["key"],
        "kept_source": kept["source"],
        "sha256": dropped["sha256"],
        "instances": len(dropped["objects"]),
        "counts": dropped["counts"],
        "kept_counts": kept["counts"],
        "objects": dropped["objects"],
        "unmatched_objects": unmatched,
        "labels_disagree": unmatched > 0,
    }


def _near_pairs(hashes: np.ndarray, threshold: int) -> list[tuple[int, int]]:
    """Index pairs with Hamming distance < ``threshold``. Pigeonhole: two hashes within distance d agree
    exactly on at least one of d + 1 bit blocks, so only rows sharing a block are compared."""
    d = threshold - 1
    if d < 0 or len(hashes) < 2:
        return []
    nblocks = min(d + 1, 64)
    bounds = np.linspace(0, 64, nblocks + 1).astype(int)
    seen: set[tuple[int, int]] = set()
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        mask = np.uint64(((1 << int(hi - lo)) - 1) << int(lo))
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, v in enumerate((hashes & mask).tolist()):
            buckets[v].append(i)
        for idx in buckets.values():
            for a_pos, i in enumerate(idx):
                for j in idx[a_pos + 1:]:
                    if (i, j) not in seen and int(hashes[i] ^ hashes[j]).bit_count() <= d:
                        seen.add((i, j))
    return sorted(seen)


def near_groups(records: Sequence[dict[str, Any]], threshold: int) -> list[list[int]]:
    """Groups (record indices, ascending) of near-duplicate images; singletons are left out."""
    idx = [i for i, r in enumerate(records) if r.get("phash")]
    if not idx:
        return []
    hashes = np.array([int(records[i]["phash"], 16) for i in idx], dtype=np.uint64)
    parent = list(range(len(idx)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in _near_pairs(hashes, threshold):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = defaultdict(list)
    for pos in range(len(idx)):
        groups[find(pos)].append(idx[pos])
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def dedupe(records: Sequence[dict[str, Any]], *, near_threshold: int = 2, drop_near: bool = False,
           label_iou: float = 0.5) -> DedupeResult:
    """Drop exact copies (first in ``records`` order wins; a kept copy without a configured split takes
    the dropped copy's), then group near-duplicates among the rest. ``records`` are not modified."""
    first: dict[str, dict[str, Any]] = {}
    kept: list[dict[str, Any]] = []
    exact: list[dict[str, Any]] = []
    for rec in records:
        ident = identity(rec)
        if ident is not None and ident in first:
            keeper = first[ident]
            entry = _exact_entry(keeper, rec, label_iou)
            if rec.get("fixed_split") and not keeper.get("fixed_split"):
                # The dropped copy's configured split (e.g. an official test set) binds the image.
                keeper["fixed_split"] = entry["inherited_split"] = rec["fixed_split"]
            exact.append(entry)
            continue
        if ident is not None:
            first[ident] = rec = dict(rec)
        kept.append(rec)
    groups = near_groups(kept, near_threshold)
    result = DedupeResult(kept, exact, [[kept[i]["key"] for i in g] for g in groups])
    if drop_near and groups:
        drop = set()
        for g in groups:
            anchor = kept[g[0]]
            for i in g[1:]:
                drop.add(i)
                rec = kept[i]
                dist = (int(anchor["phash"], 16) ^ int(rec["phash"], 16)).bit_count()
                result.near_dropped.append({"key": rec["key"], "source": rec["source"], "kept_key": anchor["key"],
                                            "distance": dist, "instances": len(rec["objects"]),
                                            "counts": rec["counts"]})
        result.kept = [r for i, r in enumerate(kept) if i not in drop]
        result.near_groups = []
    return result
