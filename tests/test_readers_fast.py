"""The readers' fast paths give what the general code gives: trusted Instances, string path work, the GC freeze."""

from __future__ import annotations

import gc
import math
import os
from pathlib import Path, PurePosixPath

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import d2c
from d2c.classes import ClassResolver, Resolved
from d2c.model import Instance, Reject, Scene, scene_key, valid_instance_rows
from d2c.readers.base import InstanceBatch, joined_rel, rel_to

special = st.sampled_from([0.0, -1.0, 1e-12, 5.0, 179.99, 180.0, 200.0, math.nan, math.inf, -math.inf])
value = st.one_of(st.floats(-1e3, 1e3), special)


def _accepted(poly: np.ndarray, obb: tuple, area: float) -> bool:
    try:
        Instance("ship", "ship", poly, (0.0, 0.0, 1.0, 1.0), obb, area)
    except ValueError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(pts=st.lists(value, min_size=8, max_size=8), obb=st.lists(value, min_size=5, max_size=5), area=value)
def test_vectorised_checks_agree_with_the_constructor(pts, obb, area):
    poly = np.asarray(pts, dtype=np.float64).reshape(4, 2)
    mask = valid_instance_rows(poly[None], np.asarray([obb]), np.asarray([area]))
    assert bool(mask[0]) == _accepted(poly, tuple(obb), area)


def _coco(tmp_path: Path) -> Path:
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 8]},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]},
        {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 1, 1, 1, 1, 1, 1]]},  # zero area
        {"id": 4, "image_id": 1, "category_id": 1, "segmentation": [[1, 2, "x", 4, 5, 6, 7, 8]]},  # not a number
        {"id": 5, "image_id": 1, "category_id": 1, "segmentation": [[500, 500, 510, 500, 510, 510, 500, 510]]},
        {"id": 6, "image_id": 1, "category_id": 1, "bbox": [60, 40, 8, 10]},  # clipped
        {"id": 7, "image_id": 1, "category_id": 1, "segmentation": [[10, 5, 30, 0, 35, 15, 15, 20]]},  # rotated
        {"id": 8, "image_id": 2, "category_id": 1, "segmentation": [10.5, 5, 30, 0, 35, 15.25, 15, 20]},  # flat
        {"id": 9, "image_id": 2, "category_id": 1, "bbox": ["1.5", 2, 3, 4], "difficult": 1},
        {"id": 10, "image_id": 2, "category_id": 1, "segmentation": [[0, 0, 4, 0, 4, 4], [9, 9, 12, 9, 12, 12]]},
    ]
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                       {"id": 2, "file_name": "sub/b.jpg", "width": 64, "height": 48}],
            "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}
    path = tmp_path / "ann.json"
    path.write_bytes(orjson.dumps(data).replace(b'"x"', b"NaN"))  # Python's json writes NaN: read by the fallback
    return path


def test_trusted_instances_equal_validated_ones(tmp_path, monkeypatch):
    """Every Instance the vectorised pass trusts is one the validating constructor accepts, with equal fields;
    NaN, zero area and outside the image still become the same Rejects."""
    path = _coco(tmp_path)
    fast = list(d2c.read(path, format="coco"))
    monkeypatch.setattr(Instance, "trusted", classmethod(lambda cls, *args: cls(*args)))
    slow = list(d2c.read(path, format="coco"))
    assert [repr(x) for x in fast] == [repr(x) for x in slow]
    scenes = [x for x in fast if isinstance(x, Scene)]
    rejects = {r.record: (r.code, r.reason) for r in fast if isinstance(r, Reject)}
    assert [s.key for s in scenes] == ["ann/a", "ann/sub/b"] and scenes[0].clipped == 1
    assert rejects["annotation 3"] == ("zero_area", "polygon has zero area: [1, 1, 1, 1, 1, 1, 1, 1]")
    assert rejects["annotation 4"] == ("non_finite", "polygon has NaN or infinite coordinates")
    assert rejects["annotation 5"][0] == "outside_image" and "[500, 500, 510, 500" in rejects["annotation 5"][1]
    a, b = scenes
    assert [i.record for i in a.instances] == ["annotation 1", "annotation 2", "annotation 6", "annotation 7"]
    assert [i.record for i in b.instances] == ["annotation 8", "annotation 9", "annotation 10"]
    assert b.instances[1].difficult is True and b.instances[1].hbb == (1.5, 2.0, 4.5, 6.0)
    assert all(type(v) is float for i in a.instances + b.instances for v in (*i.hbb, *i.obb, i.area))


class _EmptyNames(ClassResolver):
    """A resolver that accepts every class under an empty name, which the Instance constructor refuses."""

    def resolve(self, raw):
        return Resolved("")


def test_a_row_the_checks_refuse_goes_through_the_validating_constructor():
    batch = InstanceBatch(_EmptyNames())
    batch.add_quad([0, 0, 4, 0, 4, 4, 0, 4], "ship", False, "line 1", 10.0, 10.0)
    batch.add_quad([0, 0, 0, 0, 0, 0, 0, 0], "ship", False, "line 2", 10.0, 10.0)
    good, flat = batch.build()
    assert good == ("bad_geometry", "category names must be non-empty, got 'ship' -> ''")
    assert flat[0] == "zero_area" and batch.records == ["line 1", "line 2"]


PATHS = ["a.png", "x/y.jpg", "x//y.png", "./a.png", "a/./b.png", "a/", ".h", "g.", "a..png", "s.tar.gz", "x\\y.png",
         "/abs.png", "", ".", "..", "a/../b.png", "é b.tif", "a.verylongext", "a/.b", "...", "a.b/c"]


@pytest.mark.parametrize("path", PATHS)
def test_scene_key_is_the_pure_posix_path_stem(path):
    p = PurePosixPath(path.replace("\\", "/"))
    assert scene_key("src", path) == f"src/{p.with_suffix('') if p.suffix else p}"


@pytest.mark.parametrize("name", ["a.png", "x/y.jpg", "x//y.png", "./a.png", "a/./b.png", "a/", "é b.tif"])
@pytest.mark.parametrize("folder", ["{root}", "{root}/images", "{root}/images/", "{root}/../other", "rel", "/"])
def test_joined_rel_is_rel_to_of_the_join(tmp_path, folder, name):
    root = tmp_path / "ds"
    folder = folder.format(root=root)
    assert joined_rel(folder, name, root) == rel_to(os.path.join(folder, name), root)
    assert joined_rel(Path(folder), name, str(root)) == rel_to(os.path.join(folder, name), root)


def test_the_gc_freeze_ends_with_the_read(tmp_path):
    path = _coco(tmp_path)
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    it = d2c.read(path, format="coco")
    next(it)
    assert gc.get_freeze_count() > 0 and gc.isenabled()  # frozen while the file is read, collector on
    it.close()  # given up half way
    assert gc.get_freeze_count() == 0
    list(d2c.read(path, format="coco"))
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_a_plan_read_in_spans_gives_what_read_gives(tmp_path):
    """Duplicate scene keys are found while planning, so any span of images can be read on its own."""
    images = [{"id": i, "file_name": name, "width": 64, "height": 48}
              for i, name in enumerate(["a.png", "b.png", "a.jpg", "c.png", "b.tif", "d.png"])]
    anns = [{"id": 10 + i, "image_id": i % 6, "category_id": 1, "bbox": [i, 1, 5, 5]} for i in range(14)]
    anns.append({"id": 99, "image_id": 2, "category_id": 1, "bbox": [1, 1, 0, 5]})  # zero area, in a duplicate
    path = tmp_path / "dup.json"
    path.write_bytes(orjson.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}))
    expected = [repr(x) for x in d2c.read(path, format="coco")]
    dups = [x for x in d2c.read(path, format="coco") if isinstance(x, Reject)]
    assert [(r.record, r.code, r.instances) for r in dups] == [("image 2", "duplicate_image", 3), ("image 4", "duplicate_image", 2)]
    p = d2c.readers.plan(path, format="coco")
    assert p.units == 6 and p.head == []
    for span in (1, 2, 4):
        got = [repr(x) for start in range(0, p.units, span) for x in p.read_units(start, min(start + span, p.units))]
        assert got == expected
