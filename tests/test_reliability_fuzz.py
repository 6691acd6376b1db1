"""Hypothesis fuzzing of the COCO, DOTA and VOC readers: random structures and mutated bytes give only
Scenes and Rejects (never an exception), and the instances of a parseable file are all accounted for."""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import d2c
from d2c.model import Reject, Scene

# D2C_FUZZ_EXAMPLES=5000 for a long random hunt; the default run is short and the same every time.
EXAMPLES = int(os.environ.get("D2C_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXAMPLES or 50, deadline=None, suppress_health_check=list(HealthCheck),
                derandomize=not EXAMPLES, database=None)

scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.sampled_from([0, 1, -1, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.sampled_from(["a.png", "../x.png"]),
)
value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4),
                                                                                          inner, max_size=3),
                     max_leaves=8)
number = st.one_of(st.integers(-50, 150), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3))
bbox = st.one_of(st.lists(number, min_size=0, max_size=6), value)
segmentation = st.one_of(st.lists(st.lists(number, max_size=10), max_size=2), st.lists(number, max_size=10),
                         st.fixed_dictionaries({"size": value, "counts": value}), value)
image = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(0, 3), value), "file_name": st.one_of(st.sampled_from(["a.png", "b.png"]), value)},
    optional={"width": st.one_of(st.just(64), value), "height": st.one_of(st.just(48), value)},
)
annotation = st.fixed_dictionaries(
    {"image_id": st.one_of(st.integers(0, 3), value), "category_id": st.one_of(st.integers(0, 2), value)},
    optional={"id": value, "bbox": bbox, "segmentation": segmentation, "iscrowd": value, "difficult": value},
)
coco_doc = st.fixed_dictionaries(
    {"images": st.one_of(st.lists(st.one_of(image, value), max_size=4), value),
     "annotations": st.one_of(st.lists(st.one_of(annotation, value), max_size=6), value),
     "categories": st.one_of(st.lists(st.fixed_dictionaries({"id": st.integers(0, 2), "name": value}),
                                      max_size=3), value)})


def _workdir() -> Path:
    """A temporary dataset root with two small images (hypothesis runs many examples per test)."""
    root = Path(tempfile.mkdtemp(prefix="d2c-fuzz-"))
    for name in ("a.png", "b.png"):
        Image.new("L", (64, 48), 50).save(root / name)
    (root / "images").mkdir()
    Image.new("L", (64, 48), 50).save(root / "images" / "a.png")
    return root


ROOT = _workdir()
atexit.register(shutil.rmtree, ROOT, True)


def _read(path: Path, fmt: str) -> list:
    items = list(d2c.read(path, format=fmt))
    assert all(isinstance(i, (Scene, Reject)) for i in items), items
    for it in items:
        if isinstance(it, Reject):
            assert it.code and it.reason and "\n" not in it.reason
        else:
            assert all(math.isfinite(v) for inst in it.instances for v in (*inst.hbb, *inst.obb, inst.area))
    return items


def _accounted(items: list) -> int:
    return sum(i.instances if isinstance(i, Reject) else i.num_instances for i in items)


@FUZZ
@given(doc=coco_doc)
def test_coco_structures(doc):
    path = ROOT / "fuzz.json"
    path.write_text(json.dumps(doc))  # Python's json writes NaN/Infinity literals: the reader accepts them
    items = _read(path, "coco")
    anns = doc["annotations"]
    if isinstance(doc["images"], list) and isinstance(anns, list):
        assert _accounted(items) == len(anns)


SEED_COCO = json.dumps({
    "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
               {"id": 2, "file_name": "b.png", "width": 64, "height": 48}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5]},
                    {"id": 2, "image_id": 2, "category_id": 1, "segmentation": [[1, 1, 20, 1, 20, 9, 1, 9, 0, 5]]}],
    "categories": [{"id": 1, "name": "ship"}]}).encode()
SEED_DOTA = b"imagesource:GF3\ngsd:1.5\n1 1 20 1 20 9 1 9 ship 0\n5 5 30 5 30 20 5 20 plane 1\r\n"
SEED_VOC = (b"<annotation><filename>a.png</filename><size><width>64</width><height>48</height></size>"
            b"<object><name>ship</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>20</xmax>"
            b"<ymax>9</ymax></bndbox></object><object><name>ship</name><robndbox><cx>30</cx><cy>20</cy><w>10</w>"
            b"<h>4</h><angle>0.5</angle></robndbox></object></annotation>")


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """``seed`` with a few byte flips, deletions, insertions or a truncation."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "dup"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "delete" and data:
            del data[i : i + draw(st.integers(1, 8))]
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"NaN", b"-", b"1e999", b"\xff", b"\x00", b"<", b"]", b"\"", b" ",
                                              b"\n", b"\xef\xbb\xbf", b"&lol;", b"99999999999999999999"]))
        elif op == "truncate":
            del data[i:]
        elif op == "dup":
            data[i:i] = data[i : i + draw(st.integers(1, 40))]
    return bytes(data)


@FUZZ
@given(data=mutated(SEED_COCO))
def test_coco_mutated_bytes(data):
    path = ROOT / "mut.json"
    path.write_bytes(data)
    _read(path, "coco")


dota_token = st.one_of(st.integers(-20, 90).map(str), st.sampled_from(["nan", "inf", "-inf", "1e999", "x", "",
                                                                       "ship", "plane", "0", "1", "\ufeff",
                                                                       "\x00", "gsd:", "imagesource:a"]),
                       st.text(max_size=4))
dota_line = st.lists(dota_token, min_size=0, max_size=12).map(" ".join)


@FUZZ
@given(lines=st.lists(dota_line, max_size=8), crlf=st.booleans())
def test_dota_lines(lines, crlf):
    folder = ROOT / "dota"
    (folder / "labelTxt").mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    if not (folder / "images" / "a.png").exists():
        Image.new("L", (64, 48)).save(folder / "images" / "a.png")
    text = ("\r\n" if crlf else "\n").join(lines)
    (folder / "labelTxt" / "a.txt").write_bytes(text.encode("utf-8", "surrogatepass"))
    items = _read(folder, "dota")
    body = [s for s in text.lstrip("\ufeff").splitlines() if s.strip()]
    headers = 0
    for s in body:  # leading header lines are not objects
        if s.split(":", 1)[0].strip().lower() in ("gsd", "imagesource") and ":" in s:
            headers += 1
        else:
            break
    assert _accounted(items) == len(body) - headers


@FUZZ
@given(data=mutated(SEED_DOTA))
def test_dota_mutated_bytes(data):
    folder = ROOT / "dota_mut"
    (folder / "labelTxt").mkdir(parents=True, exist_ok=True)
    (folder / "labelTxt" / "a.txt").write_bytes(data)
    _read(folder, "dota")


@FUZZ
@given(data=mutated(SEED_VOC))
def test_voc_mutated_bytes(data):
    path = ROOT / "voc.xml"
    path.write_bytes(data)
    _read(path, "voc")


xml_text = st.one_of(st.integers(-10, 80).map(str), st.sampled_from(["nan", "inf", "1e999", "", "x", "a.png",
                                                                     "../../etc/passwd", "/etc/passwd"]))


@st.composite
def voc_doc(draw) -> bytes:
    """A VOC document with random tags present or missing and random values in them."""
    def el(tag: str, body: str) -> str:
        return f"<{tag}>{body}</{tag}>" if draw(st.booleans()) or draw(st.booleans()) else ""

    objs = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["bndbox", "robndbox", "polygon"]))
        tags = {"bndbox": ["xmin", "ymin", "xmax", "ymax"], "robndbox": ["cx", "cy", "w", "h", "angle"],
                "polygon": ["x1", "y1", "x2", "y2", "x3", "y3"]}[kind]
        geom = "".join(el(t, draw(xml_text)) for t in tags)
        objs.append("<object>" + el("name", draw(st.sampled_from(["ship", "", "tank"]))) +
                    el("difficult", draw(xml_text)) + f"<{kind}>{geom}</{kind}></object>")
    size = el("size", el("width", draw(xml_text)) + el("height", draw(xml_text)))
    return ("<annotation>" + el("filename", draw(xml_text)) + size + "".join(objs) + "</annotation>").encode()


@FUZZ
@given(data=voc_doc())
def test_voc_structures(data):
    path = ROOT / "struct.xml"
    path.write_bytes(data)
    items = _read(path, "voc")
    assert _accounted(items) == data.count(b"<object>")


@pytest.mark.timeout(30)
def test_deeply_nested_json_is_a_reject(tmp_path):
    """orjson refuses deep nesting; the NaN fallback to the standard parser must not overflow the stack."""
    path = tmp_path / "deep.json"
    path.write_text('{"images": ' + "[" * 100_000 + "NaN" + "]" * 100_000 + "}")
    (rej,) = _read(path, "coco")
    assert rej.code == "parse_error" and rej.file == "deep.json"


SEED_YOLO = b"0 0.5 0.5 0.2 0.1\n1 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n"
SEED_NAMES = b"names: [ship, plane]\n"


@FUZZ
@given(label=mutated(SEED_YOLO), names=mutated(SEED_NAMES))
def test_yolo_mutated_bytes(label, names):
    """YOLO labels and data.yaml: a names file that cannot be read is a one-line D2CError naming it (a
    dataset-level problem); everything else comes out as Scenes and Rejects."""
    from d2c.errors import D2CError

    folder = ROOT / "yolo"
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    if not (folder / "images" / "a.png").exists():
        Image.new("L", (64, 48)).save(folder / "images" / "a.png")
    (folder / "labels" / "a.txt").write_bytes(label)
    (folder / "data.yaml").write_bytes(names)
    for fmt in ("yolo", "yolo_obb"):
        try:
            _read(folder, fmt)
        except D2CError as exc:
            assert "data.yaml" in str(exc) and "\n" not in str(exc), exc
