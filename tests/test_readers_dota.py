"""DOTA labelTxt reader on hand-made files, and the vertex-order property of the shared geometry path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import d2c
from d2c.accounting import Stats
from d2c.classes import ClassResolver
from d2c.model import Reject, Scene
from d2c.readers.base import RawObject, build_instances


def _dataset(tmp_path: Path) -> Path:
    (tmp_path / "labelTxt").mkdir(parents=True)
    (tmp_path / "images").mkdir()
    Image.new("L", (100, 80)).save(tmp_path / "images" / "P1.png")
    Image.new("RGB", (50, 40)).save(tmp_path / "images" / "P2.jpg", format="JPEG")
    (tmp_path / "labelTxt" / "P1.txt").write_bytes(
        b"imagesource:GoogleEarth\r\ngsd:0.5\r\n"
        b"10 10 30 10 30 20 10 20 ship 0\r\n"  # clockwise on screen
        b"10 20 30 20 30 10 10 10 ship 1\r\n"  # the same box, counter-clockwise
        b"95.5 70 101 70 101 81 95.5 81 small-vehicle\r\n"  # float coords, one pixel past the edge: clipped
        b"1 2 3 ship 0\r\n"  # malformed
        b"nan 1 5 1 5 5 1 5 ship 0\r\n"
        b"200 200 210 200 210 210 200 210 plane 0\r\n"  # outside the image
        b"5 5 5 5 5 5 5 5 ship 0\r\n"  # zero area
    )
    (tmp_path / "labelTxt" / "P2.txt").write_text("gsd:2\n1 1 9 1 9 9 1 9 storage-tank 0\n")
    (tmp_path / "labelTxt" / "P3.txt").write_text("1 1 9 1 9 9 1 9 ship 0\n2 2 8 2 8 8 2 8 ship 0\n")
    return tmp_path


def test_dota_quirks(tmp_path):
    root = _dataset(tmp_path / "dset")
    items = list(d2c.read(root))
    scenes = [i for i in items if isinstance(i, Scene)]
    rejects = [i for i in items if isinstance(i, Reject)]
    p1, p2 = scenes
    assert p1.key == "dset/P1" and p1.image_path == "images/P1.png" and p1.root == str(root)
    assert (p1.width, p1.height, p1.gsd, p1.image_source) == (100, 80, 0.5, "GoogleEarth")
    a, b, c = p1.instances
    assert np.allclose(a.polygon, b.polygon) and a.obb == b.obb and a.polygon[0].tolist() == [10, 10]
    assert [a.difficult, b.difficult, c.difficult] == [False, True, False]
    assert c.category == "car" and c.raw_category == "small-vehicle" and c.hbb == (95.5, 70.0, 100.0, 80.0)
    assert p1.clipped == 1
    assert p2.gsd == 2.0 and p2.image_source is None and p2.instances[0].category == "tank"
    assert p2.image_format == "jpeg" and p2.flags == []
    got = sorted((r.code, r.record, r.instances) for r in rejects)
    assert got == [
        ("bad_record", "line 6", 1),
        ("no_image_no_size", None, 2),
        ("non_finite", "line 7", 1),
        ("outside_image", "line 8", 1),
        ("zero_area", "line 9", 1),
    ]
    assert next(r for r in rejects if r.code == "bad_record").file == "labelTxt/P1.txt"
    stats = Stats.of(items)
    assert stats.instances_in == 10 and stats.instances_out == 4
    stats.check_invariant()


def test_single_file_and_required_images(tmp_path):
    root = _dataset(tmp_path)
    (s,) = [i for i in d2c.read(root / "labelTxt" / "P2.txt", format="dota") if isinstance(i, Scene)]
    assert s.image_path == "images/P2.jpg"
    rejects = [i for i in d2c.read(root, format="dota", require_images=True) if isinstance(i, Reject)]
    assert ("image_missing", 2) in [(r.code, r.instances) for r in rejects]


coord = st.floats(min_value=150, max_value=500, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(cx=coord, cy=coord, w=st.floats(2, 100), h=st.floats(2, 100), angle=st.floats(0, 179.9), start=st.integers(0, 3))
def test_vertex_order_gives_the_same_instance(cx, cy, w, h, angle, start):
    from d2c.geometry import obb_to_polygon

    quad = np.roll(obb_to_polygon((cx, cy, w, h, angle)), start, axis=0)
    objs = [RawObject("ship", [quad]), RawObject("ship", [quad[::-1].copy()])]
    nan = np.full(2, np.nan)
    a, b = build_instances(objs, nan, nan, ClassResolver())
    assert np.allclose(a.polygon, b.polygon) and np.allclose(a.obb, b.obb)
    assert np.allclose(a.area, w * h, rtol=1e-6) and np.allclose(a.obb[2:4], (max(w, h), min(w, h)))
