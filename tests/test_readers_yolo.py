"""YOLO and YOLO-OBB: reading label folders (names lists, splits, bad lines), writing them, round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2c.classes import ClassMap
from d2c.errors import UsageError
from d2c.model import Instance, Reject, Scene
from d2c.readers.base import ReadOptions
from d2c.readers.yolo import OBB_READER, READER, NamesError, parse_names_yaml
from d2c.writers.yolo import write_yolo


def make_image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (width, height), 40).save(path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read_all(reader, root: Path, **opts) -> tuple[dict[str, Scene], list[Reject]]:
    scenes, rejects = {}, []
    for item in reader.read(root, ReadOptions(source="yo", **opts)):
        if isinstance(item, Scene):
            scenes[item.key] = item
        else:
            rejects.append(item)
    return scenes, rejects


@pytest.fixture
def yolo_root(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    make_image(root / "images/train/a.png", 200, 100)
    make_image(root / "images/train/empty.png", 64, 64)
    make_image(root / "images/val/b.jpg", 100, 100)
    write(root / "classes.txt", "ship\naircraft\n")
    write(root / "labels/train/a.txt",
          "0 0.5 0.5 0.2 0.4\n\n1 0.1 0.1 0.1 0.2\n7 0.1 0.1 0.1 0.1\n0 a b c d\n0 0.5 0.5 0 0.1\n")
    write(root / "labels/val/b.txt", "0 0.25 0.25 0.5 0.5\n")
    write(root / "labels/train/orphan.txt", "0 0.5 0.5 0.1 0.1\n")
    return root


def test_yolo_boxes_are_scaled_by_the_image_header_size(yolo_root):
    scenes, rejects = read_all(READER, yolo_root)
    assert sorted(scenes) == ["yo/train/a", "yo/train/empty", "yo/val/b"]
    a = scenes["yo/train/a"]
    assert (a.width, a.height, a.split, a.image_path) == (200, 100, "train", "images/train/a.png")
    assert [(i.category, i.hbb, i.record) for i in a.instances] == [
        ("ship", (80.0, 30.0, 120.0, 70.0), "line 1"),
        ("aircraft", (10.0, 0.0, 30.0, 20.0), "line 3"),
    ]
    assert a.provenance.file == "labels/train/a.txt"
    assert scenes["yo/val/b"].split == "val" and scenes["yo/val/b"].instances[0].hbb == (0.0, 0.0, 50.0, 50.0)
    assert scenes["yo/train/empty"].instances == []  # an image without labels is a background scene
    got = sorted((r.file, r.record, r.code, r.instances) for r in rejects)
    assert got == [
        ("labels/train/a.txt", "line 4", "bad_class", 1),
        ("labels/train/a.txt", "line 5", "bad_number", 1),
        ("labels/train/a.txt", "line 6", "zero_area", 1),
        ("labels/train/orphan.txt", None, "no_image_no_size", 1),
    ]
    assert "not among the 2 names of classes.txt" in [r for r in rejects if r.code == "bad_class"][0].reason


def test_yolo_obb_corners_and_detection(tmp_path):
    root = tmp_path / "obb"
    make_image(root / "images/s.png", 400, 200)
    write(root / "data.yaml", "path: .\nnames:\n  0: ship\n")
    write(root / "labels/s.txt", "0 0.25 0.25 0.5 0.5 0.375 0.75 0.125 0.5\n0 0.1 0.1 0.2 0.2\n")
    assert OBB_READER.detect(root) and not READER.detect(root)
    scenes, rejects = read_all(OBB_READER, root)
    (scene,) = scenes.values()
    (inst,) = scene.instances
    want = np.array([[100, 50], [200, 100], [150, 150], [50, 100]], dtype=float)
    assert Instance.from_polygon(want, "ship") == inst
    assert inst.obb[4] == pytest.approx(26.565051, abs=1e-5)
    assert [(r.record, r.code) for r in rejects] == [("line 2", "bad_line")]
    boxes = tmp_path / "boxes"
    make_image(boxes / "images/s.png", 10, 10)
    write(boxes / "classes.txt", "ship\n")
    write(boxes / "labels/s.txt", "0 0.5 0.5 0.2 0.2\n")
    assert READER.detect(boxes) and not OBB_READER.detect(boxes)
    assert not READER.detect(tmp_path)  # no images/ + labels/


@pytest.mark.parametrize(
    "text",
    [
        "train: images\nnames: [ship, 'oil tank', \"aircraft\"]  # three\nnc: 3\n",
        "names:\n  - ship\n  - oil tank   # comment\n  - 'aircraft'\nnc: 3\n",
        "names:\n  0: ship\n  2: aircraft\n  1: oil tank\ntrain: x\n",
        "nc: 3\nnames: {0: ship, 1: oil tank, 2: aircraft}\n",
        "# names: [no]\npath: .\n\nnames:\n\n  0: ship\n  1: \"oil tank\"\n  2: aircraft\n",
        "ship: &s ship\nnames: [*s, oil tank, aircraft]\n",  # an anchor naming a string
        "names: &n\n  - ship\n  - oil tank\n  - aircraft\nval_names: *n\n",
    ],
)
def test_names_forms_parse_with_yaml(text):
    assert parse_names_yaml(text) == ["ship", "oil tank", "aircraft"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("names: !include names.txt\n", r"line 1, column 8: invalid YAML"),
        ("names:\n  0: ship\n  2: aircraft\n", r"0..1 without gaps, got \[0, 2\] \(missing \[1\]\)"),
        ("names: [[ship], tank]\n", r"class 0 must be a non-empty name, got \['ship'\]"),
        ("names:\n  - ship\n  1: tank\n", "invalid YAML"),
        ("nc: 2\n", "no top-level 'names:'"),
        ("a: &x [1, 2]\nnames: *x\n", r"class 0 must be a non-empty name, got 1 \(quote"),  # anchor to numbers
        ("a: &x {k: v}\nnames: [ship, *x]\n", r"class 1 must be a non-empty name, got \{'k': 'v'\}"),
        ("nc: 3\nnames: [ship, tank]\n", "nc is 3 but names has 2 entries"),
        ("names: {0: ship, one: tank}\n", "keys must be the integers"),
        ("names: ship\n", "must be a list or an index -> name mapping"),
        ("names: [ship, '']\n", "class 1 must be a non-empty name"),
    ],
)
def test_invalid_or_incomplete_names_are_refused(text, message):
    with pytest.raises(NamesError, match=message):
        parse_names_yaml(text, "data.yaml")


def test_a_names_gap_stops_the_read_even_with_a_class_map(tmp_path):
    """3 harbors and 1 ship under a names list with a gap: never read as "no annotated targets"."""
    root = tmp_path / "ds"
    make_image(root / "images/a.png", 10, 10)
    write(root / "labels/a.txt", "2 0.5 0.5 0.2 0.2\n2 0.2 0.2 0.1 0.1\n2 0.7 0.7 0.1 0.1\n0 0.3 0.6 0.1 0.1\n")
    write(root / "data.yaml", "names:\n  0: ship\n  2: harbor\n")
    cmap = ClassMap.from_dict({"name": "idx", "classes": ["ship"], "aliases": {"0": "ship"}})
    for kw in ({}, {"class_map": cmap}):
        with pytest.raises(UsageError, match=r"^data.yaml: names keys must run 0..1 without gaps.*fix the names list"):
            READER.read(root, ReadOptions(**kw))
    from click.testing import CliRunner

    from d2c.cli import main

    res = CliRunner().invoke(main, ["convert", str(root), "--format", "yolo", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "data.yaml" in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.parquet"))


def test_unreadable_or_missing_names_ask_for_a_class_map(tmp_path):
    root = tmp_path / "ds"
    make_image(root / "images/a.png", 10, 10)
    write(root / "labels/a.txt", "0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(UsageError, match="class map"):
        READER.read(root, ReadOptions())  # raised at the call, before iterating
    cmap = ClassMap.from_dict({"name": "idx", "classes": ["ship"], "aliases": {"0": "ship"}})
    write(root / "data.yaml", "names: *anchor\n")  # an undefined alias: the read stops, class map or not
    for kw in ({}, {"class_map": cmap}):
        with pytest.raises(UsageError, match=r"data.yaml: line 1, column 8: invalid YAML"):
            READER.read(root, ReadOptions(**kw))
    (root / "data.yaml").unlink()
    scenes, rejects = read_all(READER, root, class_map=cmap)
    assert rejects == [] and [i.category for s in scenes.values() for i in s.instances] == ["ship"]
    assert next(iter(scenes.values())).instances[0].raw_category == "0"


def test_write_then_read_round_trip_boxes_and_obb(tmp_path, yolo_root):
    scenes, _ = read_all(READER, yolo_root)
    out = write_yolo(scenes.values(), tmp_path / "out", copy_images=True)
    assert (out / "labels/train/a.txt").read_text() == "1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.1 0.2\n"
    assert (out / "classes.txt").read_text() == "aircraft\nship\n"
    assert parse_names_yaml((out / "data.yaml").read_text()) == ["aircraft", "ship"]
    back, rejects = read_all(READER, out)
    assert rejects == [] and sorted(back) == sorted(scenes)
    for key, scene in scenes.items():
        assert back[key].instances == scene.instances and back[key].split == scene.split

    # oriented boxes: a rotated ship and a polygon that is not a quad (written as its oriented box)
    src = Scene(key="yo/images/r", source="yo", image_path="images/r.png", root=str(yolo_root / "r"),
                width=300, height=200, instances=[
                    Instance.from_polygon([(100, 50), (200, 100), (150, 150), (50, 100)], "ship"),
                    Instance.from_polygon([(10, 10), (40, 10), (40, 30), (25, 40), (10, 30)], "tank")])
    make_image(yolo_root / "r/images/r.png", 300, 200)
    obb_out = write_yolo([src], tmp_path / "obb", obb=True, classes=["ship", "tank"], copy_images=True)
    line = (obb_out / "labels/r.txt").read_text().splitlines()[0]
    assert line.split()[0] == "0" and len(line.split()) == 9
    (back_scene,) = read_all(OBB_READER, obb_out)[0].values()
    assert back_scene.instances[0] == src.instances[0]
    np.testing.assert_allclose(back_scene.instances[1].obb, src.instances[1].obb, atol=1e-6)


def test_writer_refuses_what_yolo_cannot_hold(tmp_path):
    no_size = Scene(key="s/a", source="s", image_path="a.png", root="/x", width=None, height=None)
    with pytest.raises(ValueError, match="s/a: .*no image size"):
        write_yolo([no_size], tmp_path / "o")
    ship = Scene(key="s/b", source="s", image_path="b.png", root="/x", width=10, height=10,
                 instances=[Instance.from_hbb(1, 1, 5, 5, "ship")])
    with pytest.raises(ValueError, match="'ship' is not in classes"):
        write_yolo([ship], tmp_path / "o", classes=["tank"])
    twin = Scene(key="s/c", source="s", image_path="other/b.png", root="/x", width=10, height=10)
    with pytest.raises(ValueError, match="already written"):
        write_yolo([ship, twin], tmp_path / "o")


def test_real_dota_sample_survives_a_yolo_obb_round_trip(real_samples, tmp_path):
    from d2c.readers import read

    root = real_samples / "SSDD_mmrotate_DOTA_COCO" / "test" / "all"
    scenes = [s for s in read(root, format="dota", source="ssdd") if isinstance(s, Scene)]
    assert len(scenes) >= 20
    for s in scenes:  # point the copies at the real images
        s.image_path = "images/" + Path(s.image_path).name
    out = write_yolo(scenes, tmp_path / "yolo", obb=True, copy_images=True)
    back, rejects = read_all(OBB_READER, out)
    assert rejects == []
    by_name = {Path(s.image_path).stem: s for s in back.values()}
    for s in scenes:
        got = by_name[Path(s.image_path).stem]
        assert (got.width, got.height) == (s.width, s.height)
        assert len(got.instances) == len(s.instances)
        for a, b in zip(s.instances, got.instances, strict=True):
            np.testing.assert_allclose(a.polygon, b.polygon, atol=1e-6)  # (obb: near-ties can flip)
            assert a.category == b.category


def test_yolo_formats_are_registered_and_auto_detected(yolo_root, tmp_path):
    import d2c
    from d2c.readers import REGISTRY, detect_format

    assert REGISTRY["yolo"] is READER and REGISTRY["yolo_obb"] is OBB_READER
    assert detect_format(yolo_root) == "yolo"
    keys = sorted(s.key for s in d2c.read(yolo_root, source="yo") if isinstance(s, Scene))
    assert keys == ["yo/train/a", "yo/train/empty", "yo/val/b"]
    obb = write_yolo([s for s in d2c.read(yolo_root, source="yo") if isinstance(s, Scene)], tmp_path / "o",
                     obb=True, copy_images=True)
    assert detect_format(obb) == "yolo_obb"
