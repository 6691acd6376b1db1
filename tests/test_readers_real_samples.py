"""Conformance on every file in ../shared/real-samples: per-file instance counts equal the source files'."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import orjson
import pytest

import d2c
from d2c.accounting import Stats
from d2c.classes import ClassMap
from d2c.errors import UsageError
from d2c.model import Reject, Scene

pytestmark = pytest.mark.realdata


def _split(items):
    items = list(items)
    return items, [i for i in items if isinstance(i, Scene)], [i for i in items if isinstance(i, Reject)]


def _per_file(scenes, rejects) -> Counter:
    """Instances per annotation file: written ones plus the ones rejects took with them."""
    out: Counter = Counter()
    for s in scenes:
        out[s.provenance.file] += s.num_instances
    for r in rejects:
        out[r.file] += r.instances
    return out


def _dota_rows(path: Path) -> int:
    return sum(1 for ln in path.read_text().splitlines() if len(ln.split()) >= 9)


def test_ssdd_voc(real_samples):
    root = real_samples / "SSDD_VOC_labelImg"
    items, scenes, rejects = _split(d2c.read(root))
    xmls = sorted((root / "Annotations").glob("*.xml"))
    assert len(scenes) == len(xmls) == 50 and rejects == []
    got = _per_file(scenes, rejects)
    for x in xmls:
        assert got[f"Annotations/{x.name}"] == len(re.findall(r"<object>", x.read_text())), x.name
    assert all(s.flags == [] and s.image_format == "jpeg" and s.image_path.startswith("JPEGImages/") for s in scenes)
    assert {i.category for s in scenes for i in s.instances} == {"ship"}
    first = next(s for s in scenes if s.key.endswith("/000001"))  # the file without an XML declaration
    assert (first.width, first.height) == (416, 323) and first.num_instances == 1
    Stats.of(items).check_invariant()


@pytest.mark.parametrize("sub", ["train", "test/all"])
def test_ssdd_dota(real_samples, sub):
    root = real_samples / "SSDD_mmrotate_DOTA_COCO" / sub
    with pytest.raises(UsageError, match="coco, dota"):  # labelTxt/ and a COCO JSON side by side
        d2c.read(root)
    items, scenes, rejects = _split(d2c.read(root, format="dota"))
    labels = sorted((root / "labelTxt").glob("*.txt"))
    assert len(scenes) == len(labels) == 25 and rejects == []
    got = _per_file(scenes, rejects)
    assert all(got[f"labelTxt/{f.name}"] == _dota_rows(f) for f in labels)
    # JPEG bytes behind .png names are detected from the bytes
    assert all(s.image_format == "jpeg" and s.flags == ["extension_mismatch"] for s in scenes)
    assert all(s.clipped == 0 and s.gsd is None for s in scenes)
    Stats.of(items).check_invariant()


def test_dota_v1_devkit(real_samples):
    root = real_samples / "DOTA_v1_devkit_example"
    items, scenes, rejects = _split(d2c.read(root))
    labels = sorted((root / "labelTxt").glob("*.txt"))
    got = _per_file(scenes, rejects)
    assert all(got[f"labelTxt/{f.name}"] == _dota_rows(f) for f in labels)
    # five label files have no image on disk and no size in the annotation: really unusable
    assert sorted(r.file for r in rejects) == [f"labelTxt/{n}.txt" for n in ("P0770", "P1088", "P1234", "P2598", "P2709")]
    assert {r.code for r in rejects} == {"no_image_no_size"}
    p0706 = next(s for s in scenes if s.key.endswith("P0706"))
    assert (p0706.width, p0706.height) == (1111, 1182)
    assert p0706.gsd == pytest.approx(0.255589285596) and p0706.image_source == "GoogleEarth"
    assert sum(i.difficult for i in p0706.instances) == 6
    assert p0706.clipped >= 1 and max(i.hbb[2] for i in p0706.instances) <= 1111
    assert all(s.gsd is not None and s.image_format == "png" for s in scenes)
    cats = Counter(i.raw_category for s in scenes for i in s.instances)
    assert all(i.category == "car" for s in scenes for i in s.instances if i.raw_category == "small-vehicle")
    assert cats
    Stats.of(items).check_invariant()


def test_ssdd_coco_train(real_samples):
    f = real_samples / "SSDD_mmrotate_DOTA_COCO" / "train" / "train.json"
    data = orjson.loads(f.read_bytes())
    assert data["categories"][0]["name"] == 0  # the integer 0
    items, scenes, rejects = _split(d2c.read(f, class_map=ClassMap.load("ssdd")))
    assert rejects == [] and len(scenes) == len(data["images"]) == 928
    assert sum(s.num_instances for s in scenes) == len(data["annotations"])
    per_image = Counter(a["image_id"] for a in data["annotations"])
    by_name = {im["file_name"]: im for im in data["images"]}
    for s in scenes:
        im = by_name[Path(s.image_path).name]
        assert s.num_instances == per_image[im["id"]] and (s.width, s.height) == (im["width"], im["height"])
    present = [s for s in scenes if "image_missing" not in s.flags]
    assert len(present) == 25 and all(s.image_format == "jpeg" for s in present)
    assert {i.category for s in scenes for i in s.instances} == {"ship"}
    # the same image read as DOTA and as COCO has the same key (both sources are named "train")
    dota_keys = {s.key for s in d2c.read(f.parent, format="dota") if isinstance(s, Scene)}
    assert dota_keys <= {s.key for s in scenes}
    Stats.of(items).check_invariant()


def test_ssdd_coco_test(real_samples):
    f = real_samples / "SSDD_mmrotate_DOTA_COCO" / "test" / "all" / "test.json"
    data = orjson.loads(f.read_bytes())
    assert data["categories"][0]["name"] == "0"  # the string "0"
    items, scenes, rejects = _split(d2c.read(f, class_map="ssdd"))
    assert rejects == [] and len(scenes) == 232
    assert sum(s.num_instances for s in scenes) == len(data["annotations"]) == 533
    found = [s for s in scenes if "image_found_by_stem" in s.flags]  # *.jpg names, *.png files
    assert len(found) == 25 and all(s.image_path.endswith(".png") for s in found)
    assert all("image_missing" in s.flags for s in scenes if s not in found)
    box = scenes[0].instances[0]  # float noise (50.000000000000014) is kept, not rejected
    assert box.hbb[1] == pytest.approx(50.0) and box.obb[4] in (0.0, 90.0)


def test_numeric_coco_class_without_map_is_refused(real_samples):
    f = real_samples / "SSDD_mmrotate_DOTA_COCO" / "test" / "all" / "test.json"
    items, scenes, rejects = _split(d2c.read(f))
    assert {r.code for r in rejects} == {"numeric_class"} and len(rejects) == 533
    assert "--class-map" in rejects[0].reason
    assert sum(s.num_instances for s in scenes) == 0
    Stats.of(items).check_invariant()
