"""COCO reader on hand-made files: every quirk the issue lists, checked through d2c.read."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

import d2c
import d2c.readers as readers
from d2c.accounting import Stats
from d2c.classes import ClassMap
from d2c.errors import UsageError
from d2c.model import Reject, Scene, scene_key


def _img(path: Path, size=(64, 48), fmt="PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path, format=fmt)


def _write(path: Path, data: dict) -> Path:
    path.write_bytes(orjson.dumps(data))
    return path


def _split(items):
    items = list(items)
    scenes = [i for i in items if isinstance(i, Scene)]
    rejects = [i for i in items if isinstance(i, Reject)]
    return scenes, rejects


def _coco(tmp_path: Path) -> Path:
    _img(tmp_path / "images" / "a.png")
    _img(tmp_path / "images" / "b.jpg", fmt="JPEG")
    _img(tmp_path / "images" / "c.png", fmt="JPEG")  # JPEG bytes behind a .png name
    data = {
        "images": [
            {"id": 10**15, "file_name": "a.png", "width": 64, "height": 48, "extra": 1},
            {"id": "b-img", "file_name": "b.jpg"},  # no size: read from the header
            {"id": 3, "file_name": "c.png", "width": 64, "height": 48},
        ],
        "categories": [{"id": 0, "name": "vessel"}, {"id": 1, "name": "plane"}, {"id": 2, "name": 7}],
        "annotations": [
            {"id": 1, "image_id": 10**15, "category_id": 0, "bbox": [10, 10, 20, 8], "ignore": 0},
            {"id": 2, "image_id": 10**15, "category_id": 1, "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]},
            {"id": 3, "image_id": "b-img", "category_id": 0, "segmentation": [[1, 1, 9, 1, 9, 5, 5, 9, 1, 5]]},
            {"id": 4, "image_id": "b-img", "category_id": 0, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4], [10, 10, 14, 10, 14, 14, 10, 14]]},
            {"id": 5, "image_id": 10**15, "category_id": 0, "bbox": [0, 0, 0, 5]},
            {"id": 6, "image_id": 10**15, "category_id": 0, "bbox": [1, 1, 4, 4], "iscrowd": 1},
            {"id": 7, "image_id": 999, "category_id": 0, "bbox": [1, 1, 4, 4]},
            {"id": 8, "image_id": 10**15, "category_id": 42, "bbox": [1, 1, 4, 4]},
            {"id": 9, "image_id": 10**15, "category_id": 0, "bbox": [60, 40, 8, 10]},  # clipped
            {"id": 10, "image_id": 10**15, "category_id": 0, "bbox": [100, 100, 5, 5]},  # fully outside
            {"id": 11, "image_id": 10**15, "category_id": 2, "bbox": [1, 1, 4, 4]},  # digits-only name
        ],
    }
    return _write(tmp_path / "inst.json", data)


def test_coco_quirks_and_accounting(tmp_path):
    items = list(d2c.read(_coco(tmp_path)))
    scenes, rejects = _split(items)
    assert [s.image_path for s in scenes] == ["images/a.png", "images/b.jpg", "images/c.png"]
    a, b, c = scenes
    assert a.key == scene_key("inst", "a.png") == "inst/a"
    assert a.root == str(tmp_path) and a.source == "inst"
    assert [i.category for i in a.instances] == ["ship", "aircraft", "ship"]
    assert a.instances[0].hbb == (10.0, 10.0, 30.0, 18.0)
    assert a.instances[0].obb == pytest.approx((20, 14, 20, 8, 0))
    clipped = a.instances[2]
    assert clipped.hbb == (60.0, 40.0, 64.0, 48.0) and a.clipped == 1
    assert (b.width, b.height) == (64, 48) and b.image_format == "jpeg"
    pent, multi = b.instances
    assert pent.polygon.shape == (5, 2) and pent.area == pytest.approx(48.0)
    assert multi.area == pytest.approx(32.0)  # union of the two parts
    assert multi.obb[2] == pytest.approx(np.hypot(14, 14)) and multi.obb[4] == pytest.approx(45.0)
    assert c.instances == [] and c.image_format == "jpeg" and "extension_mismatch" in c.flags
    codes = sorted(r.code for r in rejects)
    assert codes == ["crowd", "numeric_class", "outside_image", "unknown_category_id", "unknown_image_id", "zero_area"]
    numeric = next(r for r in rejects if r.code == "numeric_class")
    assert "--class-map" in numeric.reason and numeric.record == "annotation 11" and numeric.scene_key == "inst/a"
    stats = Stats.of(items)
    assert stats.instances_in == 11 and stats.instances_out == 5 and stats.instances_rejected == 6
    assert stats.instances_clipped == 1
    stats.check_invariant()


def test_rle_masks_and_category_zero(tmp_path):
    from pycocotools import mask as mask_utils

    m = np.zeros((48, 64), dtype=np.uint8, order="F")
    m[10:20, 5:25] = 1
    rle = mask_utils.encode(m)
    rle["counts"] = rle["counts"].decode("ascii")
    data = {
        "images": [{"id": 0, "file_name": "x.png", "width": 64, "height": 48}],
        "categories": [{"id": 0, "name": "0"}],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 0, "segmentation": rle, "iscrowd": 0},
            {"id": 1, "image_id": 0, "category_id": 0,
             "segmentation": {"size": [48, 64], "counts": [490, 10, 38, 10, 2524]}},
            {"id": 2, "image_id": 0, "category_id": 0, "segmentation": {"size": [48, 64], "counts": [490, 10]}},
        ],
    }
    f = _write(tmp_path / "d.json", data)
    scenes, rejects = _split(d2c.read(f, class_map=ClassMap.load("ssdd")))
    assert [(r.code, r.record) for r in rejects] == [("bad_geometry", "annotation 2")]
    (s,) = scenes
    assert s.flags == ["image_missing"] and (s.width, s.height) == (64, 48)
    inst = s.instances[0]
    assert inst.category == "ship" and inst.raw_category == "0"
    assert inst.area == 200 and inst.hbb == (5.0, 10.0, 25.0, 20.0)
    assert s.instances[1].area == 20 and s.instances[1].hbb == (10.0, 10.0, 12.0, 20.0)


def test_truncated_json_is_one_reject_with_position(tmp_path):
    f = tmp_path / "bad.json"
    f.write_bytes(b'{"images": [{"id": 1,\n "file_name": "a.png"')
    (rej,) = list(d2c.read(f, format="coco"))
    assert rej.code == "parse_error" and "line 2, column" in rej.reason and rej.file == "bad.json"


def test_missing_images_reference_and_required(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "gone.png", "width": 10, "height": 10}, {"id": 2, "file_name": "nosize.png"}],
        "categories": [{"id": 1, "name": "ship"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},
                        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 2, 2]}],
    }
    f = _write(tmp_path / "m.json", data)
    scenes, rejects = _split(d2c.read(f))
    assert scenes[0].flags == ["image_missing"] and scenes[0].num_instances == 1
    assert [(r.code, r.instances) for r in rejects] == [("no_image_no_size", 1)]
    assert "no image and no size" in rejects[0].reason
    scenes, rejects = _split(d2c.read(f, require_images=True))
    assert scenes == [] and {r.code for r in rejects} == {"image_missing"}
    Stats.of(d2c.read(f, require_images=True)).check_invariant()


def test_unsafe_file_name_and_unknown_policy(tmp_path):
    (tmp_path / "sub").mkdir()
    data = {
        "images": [{"id": 1, "file_name": "../../etc/passwd", "width": 9, "height": 9},
                   {"id": 2, "file_name": "ok.png", "width": 9, "height": 9}],
        "categories": [{"id": 1, "name": "Windmill"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},
                        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 2, 2]}],
    }
    f = _write(tmp_path / "sub" / "u.json", data)
    scenes, rejects = _split(d2c.read(f))
    assert [(r.code, r.instances) for r in rejects] == [("unsafe_path", 1)]
    assert scenes[0].instances[0].category == "windmill"
    scenes, rejects = _split(d2c.read(f, unknown_classes="reject"))
    assert sorted(r.code for r in rejects) == ["unknown_class", "unsafe_path"]


def test_detect_format_and_usage_errors(tmp_path):
    f = _coco(tmp_path)
    assert readers.detect_format(f) == "coco"
    (tmp_path / "labelTxt").mkdir()
    with pytest.raises(UsageError, match="coco, dota"):
        readers.detect_format(tmp_path)
    with pytest.raises(UsageError, match="unknown format"):
        d2c.read(f, format="yolo9")
    with pytest.raises(UsageError, match="no such file"):
        d2c.read(tmp_path / "nope.json")
    with pytest.raises(UsageError, match="unknown read option"):
        d2c.read(f, colour="red")


def test_images_option_sets_root(tmp_path):
    _img(tmp_path / "imgs" / "sub" / "a.png")
    f = _write(tmp_path / "ann.json", {"images": [{"id": 1, "file_name": "sub/a.png"}], "annotations": []})
    (s,) = list(d2c.read(f, images=tmp_path / "imgs", source="src"))
    assert s.root == str(tmp_path / "imgs") and s.image_path == "sub/a.png" and s.key == "src/sub/a"
    assert (s.width, s.height) == (64, 48)
    (rej,) = list(d2c.read(f, images=tmp_path / "imgs", max_pixels=100))  # the decompression-bomb cap
    assert rej.code == "image_too_large" and "exceeds the cap" in rej.reason


def test_plugin_reader_from_entry_point(tmp_path, monkeypatch):
    mod = tmp_path / "d2c_fake_plugin.py"
    mod.write_text(
        "from d2c.model import Scene\n"
        "class FakeReader:\n"
        "    name = 'fake'\n"
        "    def detect(self, path):\n        return path.suffix == '.fake'\n"
        "    def read(self, path, options):\n"
        "        yield Scene(key='fake/x', source='fake', image_path='x.png', root=str(path.parent), width=2, height=2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint(name="fake", value="d2c_fake_plugin:FakeReader", group="d2c.readers")
    monkeypatch.setattr(readers, "entry_points", lambda group: [ep] if group == "d2c.readers" else [])
    monkeypatch.setattr(readers, "_PLUGINS_LOADED", False)
    monkeypatch.setattr(readers, "REGISTRY", dict(readers.REGISTRY))
    (tmp_path / "a.fake").write_text("x")
    assert readers.detect_format(tmp_path / "a.fake") == "fake"
    (s,) = list(d2c.read(tmp_path / "a.fake"))
    assert s.key == "fake/x"
    sys.modules.pop("d2c_fake_plugin", None)


def test_polygon_parts_given_as_point_pairs(tmp_path):
    """A part written as [x, y] pairs is a polygon (not 8 numbers), beside flat quads in the same file; a
    flat quad holding a list is rejected as non-finite, and the rest is read."""
    import json

    import d2c
    from d2c.model import Reject, Scene

    pairs = [[10, 10], [40, 10], [40, 30], [10, 30], [10, 10], [40, 10], [40, 30], [10, 30]]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [pairs]},
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [[50, 50, 90, 50, 90, 70, 50, 70]]},
            {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [[50, 50, 90, [50], 90, 70, 50, 70]]}]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}],
                                "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}))
    items = list(d2c.read(path, format="coco"))
    (scene,) = [i for i in items if isinstance(i, Scene)]
    assert [i.hbb for i in scene.instances] == [(10.0, 10.0, 40.0, 30.0), (50.0, 50.0, 90.0, 70.0)]
    assert [i.area for i in scene.instances] == [600.0, 800.0]
    assert [(r.code, r.record) for r in items if isinstance(r, Reject)] == [("non_finite", "annotation 3")]
