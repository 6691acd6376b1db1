"""Zero-shot classification: prompt-ensemble class embeddings, top-1 / top-5 and mean per-class recall."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

DEFAULT_PROMPTS = Path(__file__).with_name("prompts.toml")


def load_templates(path: Path | str | None = None) -> list[str]:
    """Templates from a TOML file with ``templates = [...]``, each containing ``{c}`` exactly once."""
    path = Path(path) if path is not None else DEFAULT_PROMPTS
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot read prompt templates: {exc}") from exc
    templates = data.get("templates")
    if not isinstance(templates, list) or not templates:
        raise ValueError(f"{path}: needs a non-empty list `templates = [...]`")
    for i, t in enumerate(templates):
        if not isinstance(t, str) or t.count("{c}") != 1:
            raise ValueError(f"{path}: template {i} must be a string with one '{{c}}', got {t!r}")
    return templates


def class_prompts(classname: str, templates: Sequence[str]) -> list[str]:
    """The prompts of one class; underscores in class names read as spaces."""
    name = classname.replace("_", " ")
    return [t.replace("{c}", name) for t in templates]


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def class_weights(
    encode_text: Callable[[list[str]], np.ndarray], classnames: Sequence[str], templates: Sequence[str]
) -> np.ndarray:
    """(C, D) classifier: per class, the mean of its L2-normalised prompt embeddings, renormalised."""
    prompts = [p for c in classnames for p in class_prompts(c, templates)]
    emb = _normalise(np.asarray(encode_text(prompts), dtype=np.float64))
    emb = emb.reshape(len(classnames), len(templates), -1).mean(axis=1)
    return _normalise(emb)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose true label is among the k best, ties broken towards the lower class index
    (the order ``argmax`` uses, so top-1 equals the accuracy of the predictions)."""
    k = min(k, scores.shape[1])
    n = len(labels)
    if n == 0:
        return float("nan")
    true_score = scores[np.arange(n), labels][:, None]
    lower = np.arange(scores.shape[1])[None, :] < labels[:, None]
    rank = (scores > true_score).sum(axis=1) + ((scores == true_score) & lower).sum(axis=1)
    return float(np.mean(rank < k))


def per_class_recall(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Recall of each class (NaN for a class absent from ``labels``)."""
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = labels == c
        if mask.any():
            out[c] = float(np.mean(pred[mask] == c))
    return out


def classification_metrics(scores: np.ndarray, labels: np.ndarray, classnames: Sequence[str]) -> dict:
    """acc1, acc5, mean_per_class_recall (over classes present), the per-class recalls by name and each
    class's number of test items (``per_class_support``).

    Ties go to the lower class index everywhere (as ``argmax`` does).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    pred = scores.argmax(axis=1)
    pcr = per_class_recall(pred, labels, len(classnames))
    present = ~np.isnan(pcr)
    return {
        "acc1": topk_accuracy(scores, labels, 1),
        "acc5": topk_accuracy(scores, labels, 5),
        "mean_per_class_recall": float(np.mean(pcr[present])) if present.any() else float("nan"),
        "per_class_recall": {c: float(pcr[i]) for i, c in enumerate(classnames) if present[i]},
        "per_class_support": {c: int(np.sum(labels == i)) for i, c in enumerate(classnames) if present[i]},
        "num_samples": int(len(labels)),
        "num_classes": int(len(classnames)),
    }


def zeroshot_metrics(image_emb: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                     classnames: Sequence[str]) -> dict:
    """Classify L2-normalised image embeddings by cosine similarity to the class weights."""
    scores = np.asarray(image_emb, dtype=np.float64) @ np.asarray(weights, dtype=np.float64).T
    return classification_metrics(scores, labels, classnames)
