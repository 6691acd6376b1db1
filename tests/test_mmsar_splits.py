"""Splits: seeded, stratified by (source, class), stable when sources are added, groups kept together."""

from __future__ import annotations

from collections import Counter

from mmsar.splits import assign_splits, primary_class, quota


def scenes(source: str, n: int, cls: str = "ship", **kw):
    return [{"key": f"{source}/{i:04d}", "source": source, "counts": {cls: 1 + i % 3}, "fixed_split": None, **kw}
            for i in range(n)]


def test_quota_uses_largest_remainders():
    assert quota(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert quota(7, (0.5, 0.25, 0.25)) == [3, 2, 2]  # remainders .5, .75, .75
    assert quota(0, (0.8, 0.1, 0.1)) == [0, 0, 0]
    assert sum(quota(101, (0.7, 0.2, 0.1))) == 101


def test_primary_class_ties_and_empty():
    assert primary_class({"tank": 2, "ship": 2, "car": 1}) == "ship"
    assert primary_class({}) == "none"


def test_every_stratum_gets_its_share_and_the_seed_matters():
    recs = scenes("a", 40) + [
        {**r, "key": r["key"] + "t", "counts": {"tank": 1}} for r in scenes("a", 20)]
    res = assign_splits(recs, seed=0, ratios=(0.5, 0.25, 0.25))
    for cls in ("ship", "tank"):
        c = Counter(res.split[r["key"]] for r in recs if primary_class(r["counts"]) == cls)
        n = sum(c.values())
        assert [c["train"], c["val"], c["test"]] == quota(n, (0.5, 0.25, 0.25))
    other = assign_splits(recs, seed=1, ratios=(0.5, 0.25, 0.25))
    assert other.split != res.split
    assert assign_splits(list(reversed(recs)), seed=0, ratios=(0.5, 0.25, 0.25)).split == res.split


def test_adding_a_source_does_not_move_placed_scenes():
    a, b = scenes("a", 30), scenes("b", 25, "tank")
    before = assign_splits(a, seed=7, ratios=(0.8, 0.1, 0.1)).split
    after = assign_splits(a + b, seed=7, ratios=(0.8, 0.1, 0.1), source_ratios={"b": (0.0, 0.0, 1.0)}).split
    assert all(after[k] == v for k, v in before.items())
    assert {after[r["key"]] for r in b} == {"test"}


def test_fixed_split_wins_and_near_groups_never_straddle():
    recs = scenes("a", 30) + [{**r, "fixed_split": "test"} for r in scenes("b", 5)]
    groups = [["a/0000", "a/0001", "a/0002", "a/0003"], ["a/0010", "b/0001"]]
    res = assign_splits(recs, seed=0, ratios=(0.34, 0.33, 0.33), near_groups=groups)
    assert {res.split[f"b/{i:04d}"] for i in range(5)} == {"test"}
    for g in groups:
        assert len({res.split[k] for k in g}) == 1
        assert {res.group[k] for k in g} == {g[0]}
    assert res.split["a/0010"] == "test"  # joined the fixed member's split


def test_conflicting_fixed_splits_in_one_group_are_reported():
    recs = [{"key": "a/1", "source": "a", "counts": {}, "fixed_split": "train"},
            {"key": "b/1", "source": "b", "counts": {}, "fixed_split": "test"}]
    res = assign_splits(recs, seed=0, ratios=(0.8, 0.1, 0.1), near_groups=[["a/1", "b/1"]])
    assert res.split == {"a/1": "train", "b/1": "train"}
    assert res.conflicts == [{"key": "b/1", "configured": "test", "placed": "train", "group": "a/1"}]


def test_tiles_of_one_parent_share_a_split():
    recs = [{"key": f"a/img{p}_t{t}", "source": "a", "counts": {"ship": 1}, "fixed_split": None,
             "parent_key": f"a/img{p}"} for p in range(10) for t in range(4)]
    res = assign_splits(recs, seed=0, ratios=(0.6, 0.2, 0.2))
    for p in range(10):
        assert len({res.split[f"a/img{p}_t{t}"] for t in range(4)}) == 1
    assert Counter(res.split[f"a/img{p}_t0"] for p in range(10)) == {"train": 6, "val": 2, "test": 2}
