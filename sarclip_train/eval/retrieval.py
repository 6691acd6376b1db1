"""Image-text retrieval recall with several captions per image and the duplicate-caption rule.

Templated captions repeat across images ("two ships at sea."), so "the" matching image of a text is not
unique. The rule: a text query's positives are every image whose captions contain that exact text, and
an image query's positives are every distinct text equal to one of its captions. Queries and candidates
on the text side are the distinct caption strings, so a repeated caption is scored once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS = (1, 5, 10)


def unique_texts(captions: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """Distinct caption strings in first-seen order and the (n_images, n_texts) boolean positive matrix."""
    index: dict[str, int] = {}
    pairs: list[tuple[int, int]] = []
    for i, caps in enumerate(captions):
        for c in caps:
            j = index.setdefault(c, len(index))
            pairs.append((i, j))
    pos = np.zeros((len(captions), len(index)), dtype=bool)
    for i, j in pairs:
        pos[i, j] = True
    return list(index), pos


def duplicate_rate(captions: Sequence[Sequence[str]]) -> float:
    """Share of caption occurrences that repeat an earlier one: 1 - distinct / total (0 when none)."""
    total = sum(len(c) for c in captions)
    if total == 0:
        return 0.0
    distinct = len({c for caps in captions for c in caps})
    return 1.0 - distinct / total


def tie_counts(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query row: g = negatives scoring strictly above the best positive, e = negatives tied with it,
    p = positives tied with it (p = 0 for a row without positives)."""
    scores = np.asarray(scores, dtype=np.float64)
    best_pos = np.where(positives, scores, -np.inf).max(axis=1, keepdims=True)
    above = (scores > best_pos) & ~positives
    tied = scores == best_pos
    g = above.sum(axis=1)
    e = (tied & ~positives).sum(axis=1)
    p = (tied & positives).sum(axis=1)
    return g, e, p


def hit_probability(g: int, e: int, p: int, k: int) -> float:
    """Chance that a positive is in the top k when tied candidates are ordered at random.

    The g candidates above always come first; the tied group of e negatives and p positives follows in
    random order, and the first m = k - g of its places all hold negatives with probability
    prod_{i<m} (e - i) / (e + p - i). A constant model therefore scores chance, not perfect recall.
    """
    m = k - g
    if p == 0 or m <= 0:
        return 0.0
    if m > e:
        return 1.0
    miss = 1.0
    for i in range(m):
        miss *= (e - i) / (e + p - i)
    return 1.0 - miss


def recall_at_k(g: np.ndarray, e: np.ndarray, p: np.ndarray, k: int) -> float:
    """Mean hit probability over queries that have at least one positive."""
    valid = np.flatnonzero(p > 0)
    if not len(valid):
        return float("nan")
    return float(np.mean([hit_probability(int(g[i]), int(e[i]), int(p[i]), k) for i in valid]))


def retrieval_metrics(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    positives: np.ndarray,
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Recall@k both ways and the mean recall (average of the six, RemoteCLIP / GeoRSCLIP convention).

    ``image_emb`` (N, D) and ``text_emb`` (T, D) are L2-normalised; ``positives`` (N, T) marks matching
    pairs. Keys follow CLIP_benchmark: ``image_retrieval_recall@k`` is text-to-image (a text retrieves
    images), ``text_retrieval_recall@k`` is image-to-text.
    """
    image_emb = np.asarray(image_emb, dtype=np.float64)
    text_emb = np.asarray(text_emb, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if positives.shape != (len(image_emb), len(text_emb)):
        raise ValueError(f"positives must be {(len(image_emb), len(text_emb))}, got {positives.shape}")
    sim = image_emb @ text_emb.T
    i2t = tie_counts(sim, positives)
    t2i = tie_counts(sim.T, positives.T)
    out: dict[str, float] = {}
    for k in ks:
        out[f"text_retrieval_recall@{k}"] = recall_at_k(*i2t, k)
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = recall_at_k(*t2i, k)
    out["mean_recall"] = float(np.mean([out[f"text_retrieval_recall@{k}"] for k in ks]
                                       + [out[f"image_retrieval_recall@{k}"] for k in ks]))
    return out


def evaluate_retrieval(
    image_emb: np.ndarray, captions: Sequence[Sequence[str]], text_emb_by_text: dict[str, np.ndarray]
) -> dict[str, float]:
    """Metrics for images with their caption lists; texts are embedded once each (``text_emb_by_text``)."""
    texts, pos = unique_texts(captions)
    text_emb = np.stack([text_emb_by_text[t] for t in texts]) if texts else np.zeros((0, image_emb.shape[1]))
    out = retrieval_metrics(image_emb, text_emb, pos)
    out["duplicate_rate"] = duplicate_rate(captions)
    out["num_images"] = len(captions)
    out["num_texts"] = len(texts)
    out["num_captions"] = int(sum(len(c) for c in captions))
    return out
