"""Scene attributes: one registered function each, discretised by the documented definitions."""

from __future__ import annotations

import pytest

from d2c.captions import attributes as A
from d2c.captions.lint import _inst
from d2c.model import Scene


def scene(insts, w=900, h=900, gsd=None, source=None) -> Scene:
    return Scene(
        key="t/s",
        source="t",
        image_path="s.png",
        root="/",
        width=w,
        height=h,
        instances=insts,
        gsd=gsd,
        image_source=source,
    )


def test_grid_cells_are_equal_thirds():
    assert A.grid_cell(299.9, 0, 900, 900) == "top-left"
    assert A.grid_cell(300, 300, 900, 900) == "centre"
    assert A.grid_cell(599.9, 599.9, 900, 900) == "centre"
    assert A.grid_cell(600, 899, 900, 900) == "bottom-right"
    assert A.grid_cell(900, 450, 900, 900) == "right"  # on the far border: clipped into the last cell


@pytest.mark.parametrize(
    ("rel", "bucket"), [(0.0009, "tiny"), (0.001, "small"), (0.05, "medium"), (0.1, "large")]
)
def test_size_buckets(rel, bucket):
    assert A.size_bucket(rel) == bucket


@pytest.mark.parametrize(
    ("angle", "word"),
    [
        (0, "horizontal"),
        (22.4, "horizontal"),
        (22.5, "diagonal"),
        (67.5, "vertical"),
        (112.4, "vertical"),
        (112.5, "diagonal"),
        (157.5, "horizontal"),
        (179.9, "horizontal"),
    ],
)
def test_orientation_ranges(angle, word):
    assert A.orientation_word(angle, 30, 10) == word
    assert A.orientation_word(angle, 11, 10) is None  # square-ish: no orientation claimed


def test_counts_main_difficult_and_multi():
    s = scene(
        [
            _inst(100, 100, 30, 10, 0, "ship"),
            _inst(200, 100, 30, 10, 0, "ship", difficult=True),
            _inst(700, 700, 30, 10, 0, "aircraft"),
        ]
    )
    a = A.compute(s)
    assert a["main"] == ("ship", 2, 1)
    assert a["total"] == (3, 1)
    assert a["multi"] == (("ship", 2, 1), ("aircraft", 1, 0))
    assert a["only"] is None and a["empty"] is None
    assert A.compute(scene([]))["empty"] is True
    assert A.compute(scene([]))["main"] is None


def test_position_attributes():
    one = A.compute(scene([_inst(850, 50, 30, 10, 0, "ship")]))
    assert one["single_cell"] == "top-right"
    grp = A.compute(scene([_inst(x, 450, 20, 8, 0, "ship") for x in (400, 450, 500, 50)]))
    assert grp["region"] == "centre" and grp["centre_edge"] == (3, 1) and grp["all_edge"] is None
    edge = A.compute(scene([_inst(50, 50, 20, 8, 0, "ship"), _inst(850, 850, 20, 8, 0, "ship")]))
    assert edge["all_edge"] == ("ship", 2, 0) and edge["region"] is None  # no majority cell
    assert (
        A.compute(
            Scene(
                key="t/n",
                source="t",
                image_path="n",
                root="/",
                width=None,
                height=None,
                instances=[_inst(5, 5, 4, 2, 0, "ship")],
            )
        )["single_cell"]
        is None
    )


def test_size_and_metres():
    s = scene(
        [
            _inst(100, 100, 60, 10, 0, "ship"),
            _inst(300, 300, 40, 10, 0, "ship"),
            _inst(500, 500, 400, 300, 0, "ship"),
        ],
        gsd=2.0,
    )
    a = A.compute(s)
    assert a["size_uniform"] is None and a["size_dominant"] == "tiny"
    assert a["length_range"] == (80, 800)  # 40 px * 2 m = 80 m (floor), 400 * 2 = 800 (ceil)
    assert a["length_single"] is None
    single = A.compute(scene([_inst(100, 100, 61, 10, 0, "ship")], gsd=2.0))
    assert single["length_single"] == 120  # 122 m rounded to the 10 m step
    assert A.round_metres(17.4) == 17 and A.round_metres(57.4) == 55 and A.round_metres(2.2) == 2
    assert A.compute(scene([_inst(100, 100, 61, 10, 0, "ship")]))["length_single"] is None  # no gsd


def test_orientation_uniform_and_dominant():
    a = A.compute(scene([_inst(100 * k, 100, 30, 10, 90, "ship") for k in range(1, 4)]))
    assert a["orientation_uniform"] == "vertical" and a["orientation_dominant"] is None
    b = A.compute(scene([_inst(100 * k, 100, 30, 10, 90 if k < 3 else 45, "ship") for k in range(1, 4)]))
    assert b["orientation_uniform"] is None and b["orientation_dominant"] == "vertical"


def test_arrangement_definitions():
    row = A.compute(scene([_inst(100 + 100 * k, 400 + (k % 2) * 2, 40, 12, 90, "ship") for k in range(5)]))
    assert row["row"] is True and row["scattered"] is True  # spacing 100 > 2 * 40: in a line, yet no links
    assert row["clusters"] is None
    dense = A.compute(
        scene([_inst(400 + 20 * (k % 3), 400 + 26 * (k // 3), 28, 10, 90, "ship") for k in range(6)])
    )
    assert dense["dense"] is True and dense["clusters"] == 1
    scattered = A.compute(
        scene([_inst(x, y, 30, 10, 0, "ship") for x, y in ((50, 50), (850, 60), (450, 850))])
    )
    assert scattered["scattered"] is True and scattered["row"] is None
    two = (
        [_inst(100 + 30 * k, 100, 30, 10, 0, "ship") for k in range(3)]
        + [_inst(700 + 30 * k, 700, 30, 10, 0, "ship") for k in range(2)]
        + [_inst(100, 800, 30, 10, 0, "ship")]
    )
    a = A.compute(scene(two))
    assert a["clusters"] == 2 and a["isolated"] == 1 and a["dense"] is None


def test_sensor_needs_a_known_image_source():
    s = scene([_inst(100, 100, 30, 10, 0, "ship")], source="GF3")
    assert A.compute(s, sensors={"gf3": "Gaofen-3"})["sensor"] == "Gaofen-3"
    assert (
        A.compute(scene([_inst(1, 1, 3, 1, 0, "ship")], source="GoogleEarth"), sensors={"gf3": "x"})["sensor"]
        is None
    )


def test_registering_a_new_attribute_is_one_function():
    @A.attribute("test_has_bridge")
    def _has_bridge(f: A.Facts) -> bool | None:
        return True if "bridge" in f.classes.tolist() else None

    try:
        assert A.compute(scene([_inst(100, 100, 300, 30, 0, "bridge")]), ["test_has_bridge"]) == {
            "test_has_bridge": True
        }
        with pytest.raises(ValueError, match="twice"):
            A.attribute("test_has_bridge")(_has_bridge)
    finally:
        del A.REGISTRY["test_has_bridge"]


def test_batch_gives_each_scene_its_own_attributes():
    """compute_many over a mixed batch (frames, gsd, sensors, empty, rows, clusters) equals compute per scene,
    whatever the batch, and the per-scene plugin path runs inside a batch too."""
    from d2c.captions.lint import battery

    scenes = battery() + battery(seed=3)[::-1]
    names = sorted(A.REGISTRY)
    sensors = {"gf3": "Gaofen-3", "Sentinel-1": "Sentinel-1"}
    each = [tuple(A.compute(s, names, sensors).values()) for s in scenes]
    assert A.compute_many(scenes, names, sensors) == each
    assert A.compute_many(scenes[5:], names, sensors) + A.compute_many(scenes[:5], names, sensors) == \
        each[5:] + each[:5]
    assert len({row for row in each}) > 20  # the battery is varied: the batch cannot pass by being uniform
    assert A.compute_many([], names) == []


def test_a_chain_is_one_cluster_found_through_its_links():
    """Twelve ships 50 px apart: each linked only to its neighbours at factor 2, none at factor 1."""
    chain = [_inst(100 + 50 * k, 450, 30, 8, 0, "ship") for k in reversed(range(12))]
    a = A.compute(scene(chain + [_inst(800, 100, 20, 8, 0, "car")]))
    assert a["clusters"] == 1 and a["scattered"] is None and a["dense"] is None
    assert a["row"] is True and a["isolated"] is None  # the car is alone, but it is not a ship
    broken = A.compute(scene(chain[:5] + chain[6:]))  # a gap splits it in two
    assert broken["clusters"] == 2
