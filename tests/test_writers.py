"""Writers round trip: Scenes -> COCO / DOTA / VOC files -> d2c's own readers -> the same instances."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

import d2c
from d2c.geometry import obb_to_polygon
from d2c.model import Instance, Reject, Scene, scene_key
from d2c.writers import fmt_num, write_coco, write_dota, write_voc


def _scene(root: Path, name: str, size: tuple[int, int], instances: list[Instance], **kw) -> Scene:
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 40).save(root / "images" / name)
    rel = f"images/{name}"
    return Scene(
        key=scene_key("t", rel),
        source="t",
        image_path=rel,
        root=str(root),
        width=size[0],
        height=size[1],
        instances=instances,
        **kw,
    )


@pytest.fixture()
def scenes(tmp_path: Path) -> list[Scene]:
    rotated = Instance.from_polygon(obb_to_polygon((60.25, 40.5, 50.0, 12.0, 33.3)), "ship")
    square = Instance.from_polygon(obb_to_polygon((150.0, 90.0, 30.0, 30.0, 71.0)), "tank")
    axis = Instance.from_hbb(10, 70, 31.5, 95, "car", difficult=True)
    quad = Instance.from_polygon([(120, 10), (170, 14), (160, 40), (118, 30)], "aircraft")
    hexagon = Instance.from_polygon(
        [(20, 100), (40, 96), (60, 104), (62, 118), (40, 124), (18, 114)], "harbor"
    )
    return [
        _scene(
            tmp_path,
            "a.png",
            (200, 130),
            [rotated, square, axis, quad, hexagon],
            gsd=0.5,
            image_source="GF-3",
        ),
        _scene(tmp_path, "b.png", (64, 48), [], gsd=3.0),
    ]


def _read(path: Path, fmt: str, **kw) -> dict[str, Scene]:
    out = list(d2c.read(path, format=fmt, **kw))
    rejects = [o for o in out if isinstance(o, Reject)]
    assert not rejects, [str(r) for r in rejects]
    return {Path(s.image_path).name: s for s in out}


def _same_box(a: Instance, b: Instance) -> None:
    assert a.category == b.category and a.difficult == b.difficult
    assert np.allclose(a.obb[:4], b.obb[:4], atol=1e-6)
    assert math.isclose(a.obb[4], b.obb[4], abs_tol=1e-6)


def test_coco_round_trip_keeps_polygons(tmp_path: Path, scenes: list[Scene]) -> None:
    out = write_coco(scenes, tmp_path / "ann.json", images_dir=tmp_path / "images")
    doc = orjson.loads(out.read_bytes())
    assert [i["file_name"] for i in doc["images"]] == ["a.png", "b.png"]
    assert [c["name"] for c in doc["categories"]] == sorted(["ship", "tank", "car", "aircraft", "harbor"])
    ann = doc["annotations"][2]
    assert ann["bbox"] == [10.0, 70.0, 21.5, 25.0] and ann["iscrowd"] == 0 and ann["area"] == 21.5 * 25
    back = _read(out, "coco", images=tmp_path / "images")
    assert back["b.png"].instances == [] and (back["a.png"].width, back["a.png"].height) == (200, 130)
    for a, b in zip(back["a.png"].instances, scenes[0].instances, strict=True):
        _same_box(a, b)
        assert a == b  # polygon kept exactly, hexagon included


def test_dota_round_trip_keeps_quads_headers_and_difficult(tmp_path: Path, scenes: list[Scene]) -> None:
    label_dir = write_dota(scenes, tmp_path)
    lines = (label_dir / "a.txt").read_text().splitlines()
    assert lines[:2] == ["imagesource:GF-3", "gsd:0.5"]
    assert lines[4].endswith(" car 1") and len(lines[4].split()) == 10
    assert (label_dir / "b.txt").read_text() == "gsd:3\n"
    back = _read(tmp_path, "dota")
    a = back["a.png"]
    assert a.gsd == 0.5 and a.image_source == "GF-3" and back["b.png"].instances == []
    for got, want in zip(a.instances, scenes[0].instances, strict=True):
        _same_box(got, want)
        if want.polygon.shape[0] == 4:
            assert got == want
        else:  # DOTA holds quads: the hexagon becomes its oriented box
            assert np.allclose(got.polygon, obb_to_polygon(want.obb), atol=1e-9)


def test_voc_round_trip_keeps_oriented_boxes(tmp_path: Path, scenes: list[Scene]) -> None:
    ann_dir = write_voc(scenes, tmp_path)
    xml = (ann_dir / "a.xml").read_text()
    assert "<filename>a.png</filename>" in xml and "<robndbox>" in xml and "<bndbox>" in xml
    first_angle = float(xml.split("<angle>", 1)[1].split("<", 1)[0])
    assert math.isclose(first_angle, math.radians(33.3), abs_tol=1e-9)  # radians, roLabelImg convention
    back = _read(tmp_path, "voc")
    assert back["b.png"].instances == [] and back["a.png"].width == 200
    for got, want in zip(back["a.png"].instances, scenes[0].instances, strict=True):
        _same_box(got, want)
        assert np.allclose(got.polygon, obb_to_polygon(want.obb), atol=1e-9)


def test_writers_are_atomic_and_refuse_clashing_stems(tmp_path: Path, scenes: list[Scene]) -> None:
    write_dota(scenes, tmp_path)
    write_voc(scenes, tmp_path)
    write_coco(scenes, tmp_path / "c.json")
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    twin = Scene(key="t/other/a", source="t", image_path="other/a.jpg", root=str(tmp_path), width=5, height=5)
    with pytest.raises(ValueError, match="stem 'a'"):
        write_dota([scenes[0], twin], tmp_path / "x")
    with pytest.raises(ValueError, match="stem 'a'"):
        write_voc([scenes[0], twin], tmp_path / "y")


def test_fmt_num_is_exact() -> None:
    assert fmt_num(12.0) == "12" and fmt_num(-3) == "-3"
    v = 148.16464458000001 + 1e-13
    assert float(fmt_num(v)) == v
