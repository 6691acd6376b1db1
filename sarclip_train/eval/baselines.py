"""Baselines every metric is read against, computed on the same test items as the model.

A number means little alone: a constant "ship" answer has 0.68 top-1 on the demo chips, and ranking the
most frequent templated captions first retrieves far above random. Each function returns
``{baseline name: {metric name: value}}`` with the model's own metric names, so the report can put them
side by side and :func:`beats` can say whether the model does better than every one of them.

- ``random``: scores that carry no information; the exact expected value where it has a closed form
  (retrieval with every candidate tied, via the tie-aware ``hit_probability``; a uniform class or count).
- ``majority``: always the most common class of the training split (the test split when there is none).
- ``popularity`` (retrieval): texts ranked by how often they occur among the training split's captions
  (the test split's when there is none), images by the commonest of their captions; both query-independent.
- ``always_mean`` / ``always_most_common`` (counting): a constant count from the SARCount train items
  (the test items when there are none).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from sarclip_train.eval import retrieval
from sarclip_train.eval.counting import NUMBERS, counting_metrics

# Metrics where a smaller value is better; every other metric with a baseline is better when larger.
LOWER_IS_BETTER = frozenset({"mae", "rmse"})


def _recalls(i2t_scores: np.ndarray, t2i_scores: np.ndarray, positives: np.ndarray,
             ks: Sequence[int] = retrieval.KS) -> dict[str, float]:
    """Recall@k both ways and their mean for given (N, T) image-to-text and (T, N) text-to-image scores."""
    i2t = retrieval.tie_counts(i2t_scores, positives)
    t2i = retrieval.tie_counts(t2i_scores, positives.T)
    out = {f"text_retrieval_recall@{k}": retrieval.recall_at_k(*i2t, k) for k in ks}
    out.update({f"image_retrieval_recall@{k}": retrieval.recall_at_k(*t2i, k) for k in ks})
    out["mean_recall"] = float(np.mean([out[f"text_retrieval_recall@{k}"] for k in ks]
                                       + [out[f"image_retrieval_recall@{k}"] for k in ks]))
    return out


def caption_frequencies(captions: Sequence[Sequence[str]]) -> Counter:
    """How many times each exact caption string occurs over all images' caption lists."""
    return Counter(c for caps in captions for c in caps)


def retrieval_baselines(captions: Sequence[Sequence[str]],
                        train_captions: Sequence[Sequence[str]] | None = None) -> dict[str, dict[str, float]]:
    """``random`` (every candidate tied: the exact chance level) and ``popularity``.

    Popularity: a text's score is its count among ``train_captions`` (the test ``captions`` when None or
    empty); every image query ranks the texts in that one order. An image's score is the highest count of
    its own captions; every text query ranks the images in that one order. Ties count at their expected
    value, as for the model.
    """
    texts, pos = retrieval.unique_texts(captions)
    n, t = pos.shape
    out = {"random": _recalls(np.zeros((n, t)), np.zeros((t, n)), pos)}
    freq = caption_frequencies(train_captions if train_captions else captions)
    text_pop = np.asarray([freq.get(x, 0) for x in texts], dtype=np.float64)
    image_pop = np.asarray([max((freq.get(c, 0) for c in caps), default=0) for caps in captions], np.float64)
    out["popularity"] = _recalls(np.broadcast_to(text_pop, (n, t)), np.broadcast_to(image_pop, (t, n)), pos)
    return out


def classification_baselines(test_labels: Sequence[int], train_labels: Sequence[int] | None,
                             num_classes: int) -> dict[str, dict[str, float]]:
    """``majority`` (the training split's most common class, lowest index on ties; the test split's when
    no training labels) and ``random`` (a uniform guess over the ``num_classes`` classes: expected values).

    Metric names are zero-shot's: ``acc1``, ``acc5``, ``mean_per_class_recall``.
    """
    y = np.asarray(test_labels, dtype=np.int64)
    source = np.asarray(train_labels if train_labels is not None and len(train_labels) else y, np.int64)
    if not len(y) or not len(source) or num_classes < 1:
        return {}
    majority = int(np.bincount(source, minlength=num_classes).argmax())
    present = np.unique(y)
    top5 = np.argsort(-np.bincount(source, minlength=num_classes), kind="stable")[:5]
    return {
        "majority": {
            "acc1": float(np.mean(y == majority)),
            "acc5": float(np.mean(np.isin(y, top5))),
            "mean_per_class_recall": float(np.mean(present == majority) if len(present) else 0.0),
        },
        "random": {
            "acc1": 1.0 / num_classes,
            "acc5": min(5, num_classes) / num_classes,
            "mean_per_class_recall": 1.0 / num_classes,
        },
    }


def renamed(baselines: Mapping[str, Mapping[str, float]], names: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """The same baselines under another task's metric names (``acc1`` -> ``lp_acc1``), only those named."""
    return {b: {names[k]: v for k, v in m.items() if k in names} for b, m in baselines.items()}


def counting_baselines(test_counts: Sequence[int], train_counts: Sequence[int] | None = None
                       ) -> dict[str, dict[str, float]]:
    """``always_mean``, ``always_most_common`` (of ``train_counts``, the test counts when None or empty;
    the smallest count on ties) and ``random`` (a uniform count in 1..10: exact expected values).

    The constant answers are scored like the model's (``counting_metrics``: top-1 on the rounded answer,
    MAE on the raw one); random's RMSE is the root of the expected squared error.
    """
    t = np.asarray(test_counts, dtype=np.float64)
    if not len(t):
        return {}
    src = np.asarray(train_counts if train_counts is not None and len(train_counts) else t, np.float64)
    values, freq = np.unique(src, return_counts=True)
    keep = ("acc1", "within_one", "mae", "rmse")

    def constant(v: float) -> dict[str, float]:
        m = counting_metrics(t, np.full(len(t), v))
        return {k: m[k] for k in keep} | {"answer": float(v)}

    grid = np.asarray(NUMBERS, dtype=np.float64)
    diff = grid[None, :] - t[:, None]  # (items, 10): every equally likely guess for every item
    return {
        "always_mean": constant(float(src.mean())),
        "always_most_common": constant(float(values[freq.argmax()])),
        "random": {"acc1": float(np.mean(diff == 0) * 1.0), "within_one": float(np.mean(np.abs(diff) <= 1)),
                   "mae": float(np.mean(np.abs(diff))), "rmse": float(np.sqrt(np.mean(diff**2)))},
    }


def best_baseline(metric: str, baselines: Mapping[str, Mapping[str, float]]) -> tuple[str, float] | None:
    """(name, value) of the strongest baseline for ``metric`` (lowest for MAE/RMSE), None when none has it."""
    cands = [(b, float(m[metric])) for b, m in baselines.items()
             if metric in m and m[metric] is not None and not np.isnan(m[metric])]
    if not cands:
        return None
    pick = min if metric in LOWER_IS_BETTER else max
    return pick(cands, key=lambda c: c[1])


def beats(metrics: Mapping, baselines: Mapping[str, Mapping[str, float]]) -> dict[str, bool]:
    """For every metric some baseline has: does the model do strictly better than the best of them?"""
    out: dict[str, bool] = {}
    for name, value in metrics.items():
        best = best_baseline(name, baselines)
        if best is None or not isinstance(value, (int, float)) or np.isnan(value):
            continue
        out[name] = bool(value < best[1] if name in LOWER_IS_BETTER else value > best[1])
    return out
