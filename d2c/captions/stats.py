"""Caption diversity, measured: per-image counts, distinct ratios, n-gram diversity, family coverage,
length and the cross-image duplicate rate.

:class:`CaptionStats` is an accumulator over ``(key, captions, template_ids)`` rows: feed it shard by
shard, merge partial results from workers, then call :meth:`CaptionStats.result`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-case word tokens (hyphenated numbers such as 'twenty-one' stay one token)."""
    return _WORD.findall(text.lower())


def family_of(template_id: str) -> str:
    """A template id's family when no table is given: the part before the first dot."""
    return template_id.split(".", 1)[0]


@dataclass
class CaptionStats:
    """Streaming caption statistics; ``families`` maps template id -> family (else the id's prefix)."""

    families: dict[str, str] = field(default_factory=dict)
    length: Callable[[str], int] | None = None
    images: int = 0
    captions: int = 0
    images_without_captions: int = 0
    length_total: int = 0
    unigrams: Counter = field(default_factory=Counter)
    bigrams: Counter = field(default_factory=Counter)
    family_counts: Counter = field(default_factory=Counter)
    # caption text -> [first image key, number of distinct images, occurrences]
    texts: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, key: str, captions: Sequence[str], template_ids: Sequence[str] | None = None) -> None:
        self.images += 1
        self.images_without_captions += not captions
        ids = list(template_ids or [])
        for i, text in enumerate(captions):
            self.captions += 1
            toks = words(text)
            self.length_total += self.length(text) if self.length else len(toks)
            self.unigrams.update(toks)
            self.bigrams.update(zip(toks, toks[1:], strict=False))
            if i < len(ids):
                self.family_counts[self.families.get(ids[i], family_of(ids[i]))] += 1
            entry = self.texts.get(text)
            if entry is None:
                self.texts[text] = [key, 1, 1]
            else:
                entry[2] += 1
                if entry[0] != key:  # a second image (keys within one image repeat only by accident)
                    entry[1] += 1
                    entry[0] = key

    def update(self, rows: Iterable[tuple[str, Sequence[str], Sequence[str] | None]]) -> CaptionStats:
        for key, captions, template_ids in rows:
            self.add(key, list(captions or []), list(template_ids or []))
        return self

    def merge(self, other: CaptionStats) -> CaptionStats:
        """Combine two accumulators over disjoint sets of images (e.g. two shards)."""
        self.images += other.images
        self.captions += other.captions
        self.images_without_captions += other.images_without_captions
        self.length_total += other.length_total
        self.unigrams.update(other.unigrams)
        self.bigrams.update(other.bigrams)
        self.family_counts.update(other.family_counts)
        for text, (key, n_img, n) in other.texts.items():
            mine = self.texts.get(text)
            if mine is None:
                self.texts[text] = [key, n_img, n]
            else:
                mine[1] += n_img
                mine[2] += n
        return self

    def result(self) -> dict[str, Any]:
        n = self.captions
        uni, bi = sum(self.unigrams.values()), sum(self.bigrams.values())
        dup = sum(e[2] for e in self.texts.values() if e[1] > 1)
        fam_total = sum(self.family_counts.values())
        return {
            "images": self.images,
            "captions": n,
            "captions_per_image": n / self.images if self.images else 0.0,
            "images_without_captions": self.images_without_captions,
            "distinct_captions": len(self.texts),
            "distinct_captions_ratio": len(self.texts) / n if n else 0.0,
            "distinct_1": len(self.unigrams) / uni if uni else 0.0,
            "distinct_2": len(self.bigrams) / bi if bi else 0.0,
            "family_coverage": {f: c / fam_total for f, c in sorted(self.family_counts.items())}
            if fam_total
            else {},
            "mean_token_length": self.length_total / n if n else 0.0,
            "length_unit": "tokens" if self.length else "words",
            "duplicate_rate": dup / n if n else 0.0,
        }


def caption_stats(
    rows: Iterable[tuple[str, Sequence[str], Sequence[str] | None]],
    families: dict[str, str] | None = None,
    length: Callable[[str], int] | None = None,
) -> dict[str, Any]:
    """Statistics of ``(key, captions, template_ids)`` rows (see :class:`CaptionStats`)."""
    return CaptionStats(families=dict(families or {}), length=length).update(rows).result()


def shard_rows(paths: Iterable[Any]) -> Iterable[tuple[str, list[str], list[str]]]:
    """``(key, captions, template_ids)`` from Parquet shards, reading only those columns."""
    import pyarrow.parquet as pq

    for path in paths:
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        missing = {"key", "captions"} - names
        if missing:
            from d2c.errors import D2CError

            raise D2CError(f"{path}: not a d2c shard, missing column(s) {', '.join(sorted(missing))}")
        cols = ["key", "captions"] + (["template_ids"] if "template_ids" in names else [])
        for batch in pf.iter_batches(columns=cols, batch_size=4096):
            data = batch.to_pydict()
            tids = data.get("template_ids") or [None] * len(data["key"])
            yield from zip(data["key"], data["captions"], tids, strict=True)
