"""SARCount: a counting benchmark in the RemoteCount style.

Why these rules: a count is only a fair question when it is certain, so a scene qualifies for a class
when that class has ``min_count..max_count`` instances and none of them is marked difficult (other
classes may be present; they are not asked about). Each scene is used once, and counts are balanced
as far as the data allows: every count takes at most ``max_per_count`` items, rarer counts choose first,
and within a count the order is ``scene_seed(seed, key|class)`` (deterministic, order-free).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from d2c.model import scene_seed
from d2c.number_words import number_words

IRREGULAR_PLURALS = {"aircraft": "aircraft", "harbor": "harbors", "harbour": "harbours", "person": "people"}


def nouns_for(cls: str, overrides: dict[str, tuple[str, str]] | None = None) -> tuple[str, str]:
    """(singular, plural) words for a class name; config ``sarcount.nouns`` overrides."""
    if overrides and cls in overrides:
        return overrides[cls]
    word = cls.replace("_", " ").replace("-", " ")
    if word in IRREGULAR_PLURALS:
        return word, IRREGULAR_PLURALS[word]
    if word.endswith(("s", "x", "ch", "sh")):
        return word, word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word, word[:-1] + "ies"
    return word, word + "s"


def candidates(rec: dict[str, Any], lo: int, hi: int) -> list[tuple[str, int]]:
    """(class, count) pairs of a scene that are countable questions."""
    difficult = rec.get("difficult") or {}
    return [(c, n) for c, n in sorted(rec["counts"].items()) if lo <= n <= hi and not difficult.get(c)]


def select(records: Sequence[dict[str, Any]], *, seed: int, min_count: int = 1, max_count: int = 10,
           max_per_count: int = 50, templates: Sequence[str] = ("a SAR image with {n}.",),
           nouns: dict[str, tuple[str, str]] | None = None, split: str = "test") -> list[dict[str, Any]]:
    """Choose the benchmark items from ``records`` (scene records of one split), in key order."""
    by_count: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
    for rec in records:
        for cls, n in candidates(rec, min_count, max_count):
            by_count[n].append((scene_seed(seed, f"{rec['key']}|{cls}"), rec["key"], cls))
    used: set[str] = set()
    items: list[dict[str, Any]] = []
    for n in sorted(by_count, key=lambda c: (len({k for _, k, _ in by_count[c]}), c)):
        taken = 0
        for _, key, cls in sorted(by_count[n]):
            if taken >= max_per_count:
                break
            if key in used:
                continue
            used.add(key)
            taken += 1
            singular, plural = nouns_for(cls, nouns)
            template = templates[scene_seed(seed, f"{key}|template") % len(templates)]
            items.append({"key": key, "split": split, "class": cls, "count": n, "template": template,
                          "singular": singular, "plural": plural})
    return sorted(items, key=lambda it: it["key"])


def count_histogram(items: Sequence[dict[str, Any]]) -> dict[str, int]:
    hist: dict[int, int] = defaultdict(int)
    for it in items:
        hist[it["count"]] += 1
    return {str(k): hist[k] for k in sorted(hist)}


def render(item: dict[str, Any], n: int) -> str:
    """The sentence the evaluation writes for a candidate count ``n`` (words up to twenty, then digits)."""
    number = number_words(n, up_to=20)
    return item["template"].format(n=f"{number} {item['singular'] if n == 1 else item['plural']}")
