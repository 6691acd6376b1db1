"""Train / val / test assignment.

Why this design: the split of a scene must survive rebuilding with more sources (results quoted on the
old test split stay valid), so it is computed per stratum, and a stratum is (source, primary class): adding
a source creates new strata and leaves every placed scene where it was. Inside a stratum, groups are
ordered by ``stable_digest(seed | stratum | group key)`` and cut at the configured ratios (largest
remainders), so proportions hold exactly even for small strata. A group is a set of scenes that must share
a split: tiles of one image and near-duplicate images. A source's own split, when configured, wins.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from d2c.model import SPLITS, stable_digest


@dataclass
class SplitResult:
    split: dict[str, str]  # scene key -> split
    group: dict[str, str]  # scene key -> group key (the anchor: first member in record order)
    conflicts: list[dict[str, Any]] = field(default_factory=list)


def primary_class(counts: dict[str, int]) -> str:
    """The scene's most frequent class (ties: alphabetical), or ``"none"`` for an empty scene."""
    if not counts:
        return "none"
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def stratum_of(rec: dict[str, Any]) -> str:
    return f"{rec['source']}|{primary_class(rec['counts'])}"


def quota(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``ratios`` with largest remainders (ties to the earlier split)."""
    raw = [n * r for r in ratios]
    out = [int(x) for x in raw]
    order = sorted(range(len(ratios)), key=lambda i: (-(raw[i] - out[i]), i))
    for i in order[: n - sum(out)]:
        out[i] += 1
    return out


def _groups(records: Sequence[dict[str, Any]], near_groups: Sequence[Sequence[str]]) -> dict[str, str]:
    """Scene key -> anchor key, joining tiles of one parent and near-duplicate groups (union-find)."""
    order = {r["key"]: i for i, r in enumerate(records)}
    parent = {k: k for k in order}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            keep, other = (ra, rb) if order[ra] <= order[rb] else (rb, ra)
            parent[other] = keep

    by_parent: dict[str, str] = {}
    for r in records:
        pk = r.get("parent_key")
        if pk:
            if pk in by_parent:
                union(by_parent[pk], r["key"])
            else:
                by_parent[pk] = r["key"]
    for g in near_groups:
        members = [k for k in g if k in order]
        for k in members[1:]:
            union(members[0], k)
    return {k: find(k) for k in order}


def assign_splits(records: Sequence[dict[str, Any]], *, seed: int, ratios: Sequence[float],
                  source_ratios: dict[str, Sequence[float]] | None = None,
                  near_groups: Sequence[Sequence[str]] = ()) -> SplitResult:
    """Place every record (dicts with ``key``, ``source``, ``counts``, ``fixed_split``, ``parent_key``)."""
    source_ratios = source_ratios or {}
    group = _groups(records, near_groups)
    members: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        members[group[r["key"]]].append(r)
    split: dict[str, str] = {}
    conflicts: list[dict[str, Any]] = []
    strata: dict[str, list[str]] = defaultdict(list)
    for anchor, recs in members.items():
        fixed = [(r["key"], r["fixed_split"]) for r in recs if r.get("fixed_split")]
        if fixed:
            chosen = fixed[0][1]
            for key, s in fixed[1:]:
                if s != chosen:
                    conflicts.append({"key": key, "configured": s, "placed": chosen, "group": anchor})
            for r in recs:
                split[r["key"]] = chosen
        else:
            strata[stratum_of(recs[0])].append(anchor)
    for stratum in sorted(strata):
        anchors = sorted(strata[stratum], key=lambda a: (stable_digest(f"{seed}|{stratum}|{a}"), a))
        source = members[anchors[0]][0]["source"]
        counts = quota(len(anchors), source_ratios.get(source, ratios))
        names = [s for s, c in zip(SPLITS, counts, strict=True) for _ in range(c)]
        for anchor, s in zip(anchors, names, strict=True):
            for r in members[anchor]:
                split[r["key"]] = s
    return SplitResult(split, group, conflicts)
