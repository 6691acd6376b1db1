"""The COCO reader's fast paths give exactly what the plain numpy code gives: the element-by-element
geometry of 4-point objects (bit for bit, signed zeros, NaN and overflow included), the flat read of
their numbers, and a plan's objects kept out of the young generations of the cyclic collector."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest

from d2c import geometry
from d2c.readers.base import ReadOptions, _quad_array
from d2c.readers.coco import CocoPlan


def _last4(a: np.ndarray, op) -> np.ndarray:
    return op(op(a[..., 0], a[..., 1]), op(a[..., 2], a[..., 3]))


def _reference_min_area_rect_quads(quads: np.ndarray) -> np.ndarray:
    """The straightforward broadcast form: the six directions at once, as (M, 6, 4) projections."""
    q = quads.reshape(-1, 4, 2)
    pairs = np.array([(0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (1, 3)])
    d = q[:, pairs[:, 1], :] - q[:, pairs[:, 0], :]
    norm = np.linalg.norm(d, axis=-1)
    u = d / np.where(norm == 0, 1.0, norm)[..., None]
    v = np.stack([-u[..., 1], u[..., 0]], axis=-1)
    qx, qy = q[:, None, :, 0], q[:, None, :, 1]
    pu, pv = u[..., 0:1] * qx + u[..., 1:2] * qy, v[..., 0:1] * qx + v[..., 1:2] * qy
    pu_max, pu_min, pv_max, pv_min = (_last4(p, op) for p in (pu, pv) for op in (np.maximum, np.minimum))
    lu, lv = pu_max - pu_min, pv_max - pv_min
    m, best = np.arange(len(q)), np.argmin(lu * lv, axis=1)
    lu_b, lv_b, u_b, v_b = lu[m, best], lv[m, best], u[m, best], v[m, best]
    cu = 0.5 * (pu_max[m, best] + pu_min[m, best])
    cv = 0.5 * (pv_max[m, best] + pv_min[m, best])
    centre = u_b * cu[:, None] + v_b * cv[:, None]
    long_is_u = lu_b >= lv_b
    w, h = np.where(long_is_u, lu_b, lv_b), np.where(long_is_u, lv_b, lu_b)
    long_dir = np.where(long_is_u[:, None], u_b, v_b)
    angle = geometry._fold_angle(np.degrees(np.arctan2(long_dir[:, 1], long_dir[:, 0])),
                                 np.isclose(w, h, rtol=1e-9, atol=1e-9))
    return np.stack([centre[:, 0], centre[:, 1], w, h, angle], axis=1)


def _quads(rng: np.random.Generator, k: int = 3000) -> list[np.ndarray]:
    x, y = np.round(rng.uniform(0, 900, k), 2), np.round(rng.uniform(0, 800, k), 2)
    w, h = np.round(rng.uniform(0, 50, k), 2), np.round(rng.uniform(0, 50, k), 2)
    boxes = np.stack([x, y, x + w, y, x + w, y + h, x, y + h], 1).reshape(-1, 4, 2)
    squares = np.stack([x, y, x + w, y, x + w, y + w, x, y + w], 1).reshape(-1, 4, 2)
    rotated = geometry.obbs_to_polygons(np.column_stack([x, y, w + 1, h + 1, rng.choice([0, 30, 45, 90, 135, 180], k)]))
    return [rng.uniform(-100, 1000, (k, 4, 2)), boxes, boxes[:, ::-1], squares, rotated,
            rng.integers(-3, 4, (k, 4, 2)).astype(float), rng.choice([0.0, -0.0, 1.0], (k, 4, 2)),
            rng.choice([1e308, -1e308, 0.0, 1.0, 5e-324], (k, 4, 2)),
            rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0, 2.0], (k, 4, 2)), np.repeat(rng.uniform(0, 9, (k, 1, 2)), 4, 1)]


def test_quad_geometry_is_bit_identical_to_the_reductions():
    rng = np.random.default_rng(5)
    with np.errstate(all="ignore"):
        for q in _quads(rng):
            assert geometry.min_area_rect_quads(q).tobytes() == _reference_min_area_rect_quads(q).tobytes()
            hbb = np.concatenate([q.min(axis=-2), q.max(axis=-2)], axis=-1)
            assert geometry.hbb_of(q).tobytes() == hbb.tobytes()
            assert geometry.hbb_of(q[0]).tobytes() == hbb[0].tobytes()
    five = rng.uniform(0, 9, (7, 5, 2))  # other polygons: the reductions themselves
    assert geometry.hbb_of(five).tolist() == np.concatenate([five.min(axis=-2), five.max(axis=-2)], axis=-1).tolist()


def test_canonical_quads_start_top_left_clockwise_for_every_start_and_order():
    box = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 4.0], [0.0, 4.0]])
    variants = np.stack([np.roll(box, s, axis=0)[::d] for s in range(4) for d in (1, -1)])
    assert (geometry.canonical_quads(variants) == box).all()


@pytest.mark.parametrize("bad", [None, True, "1.5", " 2 ", "nan", 3, 2**53 + 1, -0.0])
def test_flat_quad_read_converts_like_asarray(bad):
    quads = [[1.5, 2, 3, 4, 5, 6, 7, 8], [bad, 1, 2, 3, 4, 5, 6, 7], (0.5,) * 8]
    assert _quad_array(quads).tobytes() == np.asarray(quads, dtype=np.float64).reshape(-1, 4, 2).tobytes()


def test_flat_quad_read_falls_back_for_non_numbers_and_nested_lists():
    got = _quad_array([[1, 2, 3, 4, 5, 6, 7, 8], ["x", 2, 3, 4, 5, 6, 7, 8], [1, 2, 3]])
    assert got[0].tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]] and np.isnan(got[1:]).all()
    nested = [[[1, 2]] * 8, [1, 2, 3, 4, 5, 6, 7, 8]]  # pairs: one NaN row, not two rows of someone's numbers
    got = _quad_array(nested)
    assert got.shape == (2, 4, 2) and np.isnan(got[0]).all() and got[1].tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert _quad_array([[[1, 2]] * 8]).shape == (1, 4, 2)
    assert _quad_array([]).shape == (0, 4, 2)


def test_plan_objects_skip_the_young_generations(tmp_path: Path):
    images = [{"id": i, "file_name": f"{i}.png", "width": 50, "height": 50} for i in range(500)]
    anns = [{"id": k, "image_id": k % 500, "category_id": 1, "bbox": [1, 1, 5, 5]} for k in range(2000)]
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}))
    gc.collect()
    plan = CocoPlan(path, ReadOptions())
    young = len(gc.get_objects(0)) + len(gc.get_objects(1))
    assert plan.units == 500 and young < 500  # the plan's 2000 entries and 500 images were moved on
    assert gc.get_freeze_count() == 0
    mine = [["someone else's"] for _ in range(100)]
    gc.freeze()  # someone else's frozen objects are left frozen
    try:
        CocoPlan(path, ReadOptions())
        # frozen objects are in no generation; the count itself may fall when a frozen object is freed
        # (a cache entry evicted: other tests of the same process decide that), so look at objects of ours
        tracked = {id(o) for o in gc.get_objects()}
        assert gc.get_freeze_count() > 0 and not any(id(o) in tracked for o in mine)
    finally:
        gc.unfreeze()
