"""SARCount selection: countable scenes only, each scene once, balanced over counts, templates with {n}."""

from __future__ import annotations

from collections import Counter

from mmsar.sarcount import candidates, count_histogram, nouns_for, render, select


def scene(key: str, counts: dict[str, int], difficult: dict[str, int] | None = None):
    return {"key": key, "counts": counts, "difficult": difficult or {}}


def test_candidates_need_the_range_and_no_difficult_instance_of_that_class():
    rec = scene("a/1", {"ship": 3, "tank": 12, "car": 2}, {"car": 1})
    assert candidates(rec, 1, 10) == [("ship", 3)]
    assert candidates(scene("a/2", {}), 1, 10) == []
    assert candidates(scene("a/3", {"ship": 12}), 1, 12) == [("ship", 12)]


def test_balanced_over_counts_as_far_as_data_allows():
    recs = []
    for n in range(1, 11):
        avail = 30 if n <= 3 else (4 if n == 10 else 12)
        recs += [scene(f"s/{n:02d}_{i:02d}", {"ship": n}) for i in range(avail)]
    recs.append(scene("s/many", {"ship": 15}))
    items = select(recs, seed=0, max_per_count=10)
    hist = Counter(it["count"] for it in items)
    assert hist == {**{n: 10 for n in range(1, 10)}, 10: 4}
    assert all(it["key"] != "s/many" for it in items)
    assert len({it["key"] for it in items}) == len(items)
    assert count_histogram(items)["10"] == 4
    assert select(list(reversed(recs)), seed=0, max_per_count=10) == items
    assert select(recs, seed=1, max_per_count=10) != items


def test_each_scene_is_used_once_and_rare_counts_choose_first():
    # Both scenes could serve count 2 (ship); only one can serve count 5 (tank).
    recs = [scene("a/1", {"ship": 2, "tank": 5}), scene("a/2", {"ship": 2})]
    items = select(recs, seed=0, max_per_count=5)
    assert sorted((it["key"], it["class"], it["count"]) for it in items) == [("a/1", "tank", 5), ("a/2", "ship", 2)]


def test_items_carry_the_fields_the_evaluation_needs():
    items = select([scene("a/1", {"aircraft": 1}), scene("a/2", {"storage-tank": 3})], seed=0,
                   templates=("a SAR image with {n}.",), split="train")
    by = {it["key"]: it for it in items}
    assert set(by["a/1"]) == {"key", "split", "class", "count", "template", "singular", "plural"}
    assert by["a/1"]["split"] == "train"
    assert render(by["a/1"], 1) == "a SAR image with one aircraft."
    assert render(by["a/1"], 3) == "a SAR image with three aircraft."
    assert render(by["a/2"], 3) == "a SAR image with three storage tanks."
    assert render(by["a/2"], 25) == "a SAR image with 25 storage tanks."


def test_nouns_rules_and_overrides():
    assert nouns_for("ship") == ("ship", "ships")
    assert nouns_for("bus") == ("bus", "buses")
    assert nouns_for("ferry") == ("ferry", "ferries")
    assert nouns_for("harbor") == ("harbor", "harbors")
    assert nouns_for("ship", {"ship": ("vessel", "vessels")}) == ("vessel", "vessels")
