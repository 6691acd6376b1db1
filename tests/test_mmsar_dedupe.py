"""Dedupe: exact copies (first source wins, label disagreement flagged) and perceptual near-duplicates."""

from __future__ import annotations

import itertools

import numpy as np

from mmsar.dedupe import _near_pairs, dedupe, identity, near_groups, unmatched_objects


def rec(key: str, sha: str | None, objects=(), phash: str | None = None, split: str | None = None, **kw):
    counts: dict[str, int] = {}
    for o in objects:
        counts[o[0]] = counts.get(o[0], 0) + 1
    return {"key": key, "source": key.split("/")[0], "sha256": sha, "phash": phash, "objects": list(objects),
            "counts": counts, "fixed_split": split, **kw}


SHIP = ["ship", 10.0, 10.0, 50.0, 30.0, False]
SHIP_SHIFTED = ["ship", 12.0, 11.0, 52.0, 31.0, False]
SHIP_FAR = ["ship", 100.0, 100.0, 140.0, 120.0, False]


def test_first_source_wins_and_dropped_copy_is_reported_with_its_annotations():
    recs = [rec("voc/a", "s1", [SHIP]), rec("voc/b", "s2", [SHIP]), rec("dota/a", "s1", [SHIP_SHIFTED]),
            rec("dota/b", "s2", [SHIP_FAR, SHIP])]
    res = dedupe(recs)
    assert [r["key"] for r in res.kept] == ["voc/a", "voc/b"]
    by_key = {e["key"]: e for e in res.exact}
    assert by_key["dota/a"]["kept_key"] == "voc/a" and by_key["dota/a"]["kept_source"] == "voc"
    assert by_key["dota/a"]["objects"] == [SHIP_SHIFTED]
    assert by_key["dota/a"]["labels_disagree"] is False  # same box within IoU 0.5
    assert by_key["dota/b"]["labels_disagree"] is True  # an extra ship
    assert by_key["dota/b"]["counts"] == {"ship": 2} and by_key["dota/b"]["kept_counts"] == {"ship": 1}


def test_kept_copy_inherits_a_configured_split_without_modifying_the_input():
    recs = [rec("voc/a", "s1", [SHIP]), rec("dota/a", "s1", [SHIP], split="test")]
    res = dedupe(recs)
    assert res.kept[0]["fixed_split"] == "test" and res.exact[0]["inherited_split"] == "test"
    assert recs[0]["fixed_split"] is None


def test_missing_images_are_never_duplicates_and_tiles_are_distinct():
    recs = [rec("a/x", None), rec("a/y", None), rec("a/t0", "s", tile_offset=[0, 0]),
            rec("a/t1", "s", tile_offset=[512, 0])]
    assert identity(recs[2]) != identity(recs[3])
    assert len(dedupe(recs).kept) == 4


def test_unmatched_objects_counts_boxes_without_partner():
    assert unmatched_objects([SHIP], [SHIP_SHIFTED], 0.5) == 0
    assert unmatched_objects([SHIP], [SHIP_FAR], 0.5) == 2
    assert unmatched_objects([SHIP], [["tank", *SHIP[1:]]], 0.5) == 2
    assert unmatched_objects([], [], 0.5) == 0


def test_near_duplicates_grouped_below_threshold():
    base = 0x0F0F_0000_FFFF_1234
    recs = [rec("a/1", "h1", phash=f"{base:016x}"), rec("b/1", "h2", phash=f"{base ^ 1:016x}"),
            rec("b/2", "h3", phash=f"{base ^ 0b11:016x}"), rec("c/1", "h4", phash=f"{base ^ 0xFF00:016x}"),
            rec("c/2", "h5", phash=None)]
    res = dedupe(recs, near_threshold=2)
    # distance(a/1, b/1) = 1, distance(b/1, b/2) = 1: one group by transitivity; c/1 is 8 bits away.
    assert res.near_groups == [["a/1", "b/1", "b/2"]]
    assert len(res.kept) == 5
    dropped = dedupe(recs, near_threshold=2, drop_near=True)
    assert [r["key"] for r in dropped.kept] == ["a/1", "c/1", "c/2"]
    assert {e["key"] for e in dropped.near_dropped} == {"b/1", "b/2"}
    assert dedupe(recs, near_threshold=0).near_groups == []


def test_block_index_finds_exactly_the_brute_force_pairs():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, size=40, dtype=np.uint64)
    flips = rng.integers(0, 64, size=(40, 3))
    hashes = np.concatenate([base, base ^ (np.uint64(1) << flips[:, 0].astype(np.uint64)),
                             base ^ (np.uint64(1) << flips[:, 1].astype(np.uint64))
                             ^ (np.uint64(1) << flips[:, 2].astype(np.uint64))])
    for threshold in (1, 2, 3, 4):
        brute = [(i, j) for i, j in itertools.combinations(range(len(hashes)), 2)
                 if int(hashes[i] ^ hashes[j]).bit_count() < threshold]
        assert _near_pairs(hashes, threshold) == brute
    assert near_groups([rec("a/1", "x", phash="00")], 2) == []
