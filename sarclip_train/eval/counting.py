"""SARCount counting with the RemoteCount protocol.

Each item's count template (``"There are {n} in the image."``) is filled with the numbers 1..10, once in
words ("three ships") and once in digits ("3 ships"); the caption the model scores highest is the
predicted count. Both variants are reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from d2c.number_words import number_words

NUMBERS = tuple(range(1, 11))
WORDS = tuple(number_words(n) for n in NUMBERS)  # "one" .. "ten"
VARIANTS = ("words", "digits")


def number_text(number: int, variant: str) -> str:
    """How ``number`` is written in a caption for ``variant`` ("words" or "digits")."""
    if variant == "words":
        return number_words(number)
    if variant == "digits":
        return str(number)
    raise ValueError(f"unknown counting variant {variant!r}; expected one of {VARIANTS}")


def fill_template(item: Mapping, number: int, variant: str) -> str:
    """The item's template with ``{n}`` = "<number> <singular or plural>" (singular only for one)."""
    noun = item["singular"] if number == 1 else item["plural"]
    return item["template"].format(n=f"{number_text(number, variant)} {noun}")


def count_captions(item: Mapping, variant: str) -> list[str]:
    """The ten candidate captions of one item, for counts 1..10 in order."""
    return [fill_template(item, n, variant) for n in NUMBERS]


def predict_counts(image_emb: np.ndarray, caption_emb: np.ndarray) -> np.ndarray:
    """Predicted count per item: 1 + index of the best-scoring of its ten captions.

    ``image_emb`` is (N, D); ``caption_emb`` is (N, 10, D), each item's own candidate captions.
    """
    scores = np.einsum("nd,nkd->nk", np.asarray(image_emb, np.float64), np.asarray(caption_emb, np.float64))
    return scores.argmax(axis=1) + NUMBERS[0]


def confusion_matrix(true: np.ndarray, pred: np.ndarray, numbers: Sequence[int] = NUMBERS) -> np.ndarray:
    """(len(numbers), len(numbers)) counts: row = true count, column = predicted count."""
    lo = numbers[0]
    m = np.zeros((len(numbers), len(numbers)), dtype=np.int64)
    for t, p in zip(true, pred, strict=True):
        m[int(t) - lo, int(p) - lo] += 1
    return m


def counting_metrics(true: Sequence[int], pred: Sequence[float]) -> dict:
    """top-1 accuracy, within-one accuracy (|pred - true| <= 1), MAE, RMSE and the confusion matrix."""
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if len(t) == 0:
        return {"num_samples": 0}
    err = p - t
    rounded = np.clip(np.rint(p), NUMBERS[0], NUMBERS[-1]).astype(int)
    return {
        "acc1": float(np.mean(rounded == t)),
        "within_one": float(np.mean(np.abs(rounded - t) <= 1)),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "confusion": confusion_matrix(t.astype(int), rounded).tolist(),
        "labels": list(NUMBERS),
        "num_samples": int(len(t)),
    }


def in_range(items: Sequence[Mapping]) -> list[int]:
    """Indices of items whose count lies in 1..10 (the protocol's range)."""
    return [i for i, it in enumerate(items) if NUMBERS[0] <= int(it["count"]) <= NUMBERS[-1]]
