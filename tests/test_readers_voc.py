"""Pascal VOC reader on hand-made XML: box variants, size trust, file-name fallbacks, parse errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import d2c
from d2c.accounting import Stats
from d2c.model import Reject, Scene

OBJ = "<object><name>{name}</name><difficult>{diff}</difficult>{geom}</object>"


def _xml(filename: str | None, size: tuple[int, int] | None, objects: list[str], decl: bool = True) -> str:
    head = '<?xml version="1.0" ?>' if decl else ""
    fn = f"<filename>{filename}</filename>" if filename is not None else ""
    sz = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>1</depth></size>" if size else ""
    return f'{head}<annotation verified="no"><path>K:\\x\\y</path>{fn}{sz}{"".join(objects)}</annotation>'


def _split(items):
    items = list(items)
    return [i for i in items if isinstance(i, Scene)], [i for i in items if isinstance(i, Reject)]


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    root = tmp_path / "vocset"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for name, size in (("a", (60, 40)), ("b", (80, 50)), ("c", (30, 30)), ("d", (20, 20))):
        Image.new("RGB", size).save(root / "JPEGImages" / f"{name}.jpg", format="JPEG")
    box = "<bndbox><xmin>5</xmin><ymin>6</ymin><xmax>25</xmax><ymax>16</ymax></bndbox>"
    rob = f"<robndbox><cx>40</cx><cy>25</cy><w>20</w><h>6</h><angle>{math.pi / 2:.12f}</angle></robndbox>"
    corners = "<bndbox><x1>1</x1><y1>1</y1><x2>9</x2><y2>1</y2><x3>9</x3><y3>5</y3><x4>1</x4><y4>5</y4></bndbox>"
    poly = "<polygon><point><x>1</x><y>1</y></point><point><x>8</x><y>1</y></point><point><x>4</x><y>7</y></point></polygon>"
    zero = "<bndbox><xmin>5</xmin><ymin>6</ymin><xmax>5</xmax><ymax>16</ymax></bndbox>"
    files = {
        "a.xml": _xml("a.jpg", (60, 40), [OBJ.format(name="ship", diff=1, geom=box), OBJ.format(name="boat", diff=0, geom=zero)]),
        "b.xml": _xml("b", (0, 0), [OBJ.format(name="ship", diff=0, geom=rob), OBJ.format(name="plane", diff=0, geom=corners)], decl=False),
        "c.xml": _xml("renamed.png", None, [OBJ.format(name="harbour", diff=0, geom=poly), "<object><name>ship</name></object>"]),
        "d.xml": '<?xml version="1.0"?><annotation><filename>d.jpg</filename><object><name>ship',
    }
    for name, text in files.items():
        (root / "Annotations" / name).write_text(text)
    return root


def test_voc_variants(voc):
    items = list(d2c.read(voc))
    scenes, rejects = _split(items)
    a, b, c = scenes
    assert a.key == "vocset/a" and a.image_path == "JPEGImages/a.jpg" and a.flags == []
    assert (a.width, a.height) == (60, 40) and a.instances[0].difficult and a.instances[0].hbb == (5, 6, 25, 16)
    assert (b.width, b.height) == (80, 50) and b.flags == ["image_found_by_stem"]  # size 0 -> header
    rot, quad = b.instances
    assert np.allclose(rot.obb, (40, 25, 20, 6, 90)) and rot.hbb == pytest.approx((37, 15, 43, 35))
    assert quad.category == "aircraft" and quad.area == 32
    assert c.image_path == "JPEGImages/c.jpg" and "image_found_by_stem" in c.flags and (c.width, c.height) == (30, 30)
    assert c.instances[0].category == "harbor" and c.instances[0].polygon.shape == (3, 2)
    got = sorted((r.code, r.file, r.record) for r in rejects)
    assert [g[:2] for g in got] == [
        ("bad_geometry", "Annotations/c.xml"),
        ("parse_error", "Annotations/d.xml"),
        ("zero_area", "Annotations/a.xml"),
    ]
    parse = next(r for r in rejects if r.code == "parse_error")
    assert "line 1, column" in parse.reason
    Stats.of(items).check_invariant()


def test_images_folder_and_missing(tmp_path):
    root = tmp_path / "v2"
    (root / "Annotations").mkdir(parents=True)
    (root / "images").mkdir()
    Image.new("RGB", (10, 10)).save(root / "images" / "x.png")
    box = "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox>"
    (root / "Annotations" / "x.xml").write_text(_xml("x.png", (10, 10), [OBJ.format(name="ship", diff=0, geom=box)]))
    (root / "Annotations" / "y.xml").write_text(_xml("y.png", (12, 12), [OBJ.format(name="ship", diff=0, geom=box)]))
    (root / "Annotations" / "z.xml").write_text(_xml("z.png", None, [OBJ.format(name="ship", diff=0, geom=box)]))
    Image.new("RGB", (10, 10)).save(root / "images" / "w.png")  # named 'other.png' in its XML, which has a size
    (root / "Annotations" / "w.xml").write_text(_xml("other.png", (10, 10), [OBJ.format(name="ship", diff=0, geom=box)]))
    scenes, rejects = _split(d2c.read(root / "Annotations", format="voc"))
    assert [s.image_path for s in scenes] == ["images/w.png", "images/x.png", "images/y.png"]
    assert scenes[0].flags == ["image_found_by_stem"] and scenes[0].key == "v2/w"
    assert scenes[2].flags == ["image_missing"] and scenes[2].width == 12
    assert [(r.code, r.instances) for r in rejects] == [("no_image_no_size", 1)]


def test_entity_expansion_is_refused(tmp_path):
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
        "<annotation><filename>&lol2;</filename></annotation>"
    )
    f = tmp_path / "bomb.xml"
    f.write_text(bomb)
    (rej,) = list(d2c.read(f))
    assert rej.code == "parse_error" and "unsafe XML" in rej.reason
