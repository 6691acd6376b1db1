"""The COCO reader's batch paths (a chunk of images located and keyed at once, its annotations read by
C-level passes, the index built by whole-list passes) give exactly what the per-image and per-annotation
general paths give, on inputs made to take every branch."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import d2c.readers.base as base
import d2c.readers.coco as coco
from d2c.blocks import SceneBlock
from d2c.classes import ClassMap
from d2c.images import NOT_FOUND, ImageFinder
from d2c.model import scene_key, scene_keys
from d2c.readers.base import ReadOptions, locate_image, locate_images

NAMES = ["a.jpg", "b.png", "c", "d.", ".e", "f.g.h", "sub/i.jpg", "sub\\j.png", "sub/k", "x/y/z.tif", ".", "..", "",
         "../up.png", "/abs.png", "c:\\w.png", "n\x00ul.png", "dup.jpg", "dup.png", "sub/dup.jpg", "sub\\dup.jpg",
         "./dot.jpg", "sub//dd.jpg", "p.png", "st.jpg", "q.jpeg", "bad.png", "1.2", "x.toolongext", ".hidden.png"]
SIZES = [(100, 80), (100.0, 80.0), (100.5, 80), (None, None), (0, 80), (-5, 80), (True, 80), ("100", 80), (100, None)]
CATEGORIES = [{"id": 1, "name": "ship"}, {"id": 2, "name": "tank"}, {"id": 0, "name": "car"}, {"id": "s", "name": "plane"},
              {"id": 3, "name": "odd thing"}, {"id": 4, "name": 7}, {"id": 5, "name": ""}]


def _quad(rnd: random.Random) -> list[float]:
    x, y, w, h = rnd.uniform(-20, 110), rnd.uniform(-20, 90), rnd.uniform(-2, 40), rnd.uniform(-2, 30)
    return [x, y, x + w, y, x + w, y + h, x, y + h]


ODD = [  # annotations that are not plain 4-point ones, or plain ones written another way
    lambda q: {"segmentation": q}, lambda q: {"bbox": [q[0], q[1], 5, 6]}, lambda q: {"segmentation": [q + q[:2]]},
    lambda q: {"segmentation": [q, q]}, lambda q: {"segmentation": [q[:2], q[2:4], q[4:6], q[6:]]},
    lambda q: {"segmentation": [q[:7] + ["z"]]}, lambda q: {"segmentation": [q[:7] + [[1]]]},
    lambda q: {"segmentation": [[[1, 2]] + q[1:]]}, lambda q: {"segmentation": {"size": [8, 8], "counts": [10, 5, 49]}},
    lambda q: {"segmentation": []}, lambda q: {"segmentation": [[]]}, lambda q: {"segmentation": [q], "iscrowd": 1},
    lambda q: {"segmentation": [q], "category_id": 9}, lambda q: {"segmentation": [q], "category_id": True},
    lambda q: {"segmentation": [q], "category_id": 1.0}, lambda q: {"segmentation": [q], "category_id": [1]},
    lambda q: {"segmentation": [q], "category_id": 4}, lambda q: {"segmentation": [q], "category_id": 5},
    lambda q: {"segmentation": None, "bbox": [1, 2, -3, 4]}, lambda q: {"segmentation": [q], "difficult": "yes"},
]


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes.fromhex("89504e470d0a1a0a0000000d4948445200000032000000280806000000")
                     + b"\x00" * 8)  # a PNG header: 50 x 40


def _dataset(root: Path, seed: int) -> Path:
    """A COCO file with names of every kind (folders, backslashes, dots, unsafe ones), sizes of every kind,
    images present by name or by stem, in the root or in images/, or absent, duplicate ids and keys; its
    annotations mostly plain 4-point ones (as real files are), with odd ones in some files."""
    rnd = random.Random(seed)
    root.mkdir()
    folders = [root, root / "images"] if seed % 2 else [root]
    for name in ("p.png", "st.png", "sub/i.png", "dup.png", "bad.png"):
        if rnd.random() < 0.6:
            target = rnd.choice(folders) / name
            _png(target) if name != "bad.png" else (target.parent.mkdir(parents=True, exist_ok=True),
                                                    target.write_bytes(b"garbage"))
    clean = seed % 3 == 0
    images = []
    for i in range(40):
        name = rnd.choice(NAMES) if rnd.random() < (0.1 if clean else 0.6) else f"{i:03d}.jpg"
        w, h = rnd.choice(SIZES) if rnd.random() < (0.05 if clean else 0.5) else (100, 80)
        img = {"id": i if rnd.random() < 0.95 else rnd.choice([i - 1, str(i), None]), "file_name": name}
        img.update({k: v for k, v in (("width", w), ("height", h)) if v is not None})
        images.append(img)
    anns = []
    for k in range(120):
        ann = {"id": k, "image_id": rnd.randrange(42), "category_id": rnd.choice([1, 1, 2, 0, "s"]),
               "segmentation": [_quad(rnd)]}
        if rnd.random() < (0.01 if clean else 0.3):
            ann.update(rnd.choice(ODD)(_quad(rnd)))
        anns.append(ann)
    if not clean:
        anns += [{"id": 900, "image_id": True, "category_id": 1, "bbox": [1, 1, 4, 4]}, "not an object"]
    path = root / "ann.json"
    path.write_bytes(orjson.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return path


def _canon(item) -> str:
    if isinstance(item, SceneBlock):
        return "block " + repr({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in sorted(vars(item).items())
                                if k not in ("offsets", "point_offsets")})
    return repr(item)


class _Log(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _read(path: Path, options: ReadOptions, span: int, blocks: bool) -> list[str]:
    """Everything a plan gives, spans of ``span`` units, and the class resolver's warnings, in order."""
    log = _Log()
    logging.getLogger("d2c").addHandler(log)
    try:
        plan = coco.CocoPlan(path, options)
        taken: dict[str, int] = {}
        items = [*plan.head]
        for start in range(0, plan.units, span):
            items += plan.read_units(start, min(start + span, plan.units), blocks=blocks, taken=taken)
    finally:
        logging.getLogger("d2c").removeHandler(log)
    return [*map(_canon, items), repr(sorted(taken.items())), *log.lines]


def _general(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch path replaced by its general one: a locate_image and a scene_key per image, a
    _plain_quad per annotation."""
    monkeypatch.setattr(coco, "locate_images", lambda root, finder, folders, names, widths, heights, options: [
        locate_image(root, finder, folders, n, (w, h), options) for n, w, h in zip(names, widths, heights, strict=True)])
    monkeypatch.setattr(coco, "scene_keys", lambda source, paths: [scene_key(source, p) for p in paths])
    monkeypatch.setattr(coco, "_common_quads", lambda records, categories: None)


OPTIONS = [{}, {"require_images": True}, {"unknown_classes": "reject"}, {"class_map": "ssdd"}, {"images": "images"},
           {"source": "src"}]


def test_batches_read_what_the_general_paths_read(tmp_path, monkeypatch):
    seen: set[str] = set()
    for seed in range(12):
        root = tmp_path / f"d{seed}"
        path = _dataset(root, seed)
        opts = dict(OPTIONS[seed % len(OPTIONS)])
        if "class_map" in opts:
            opts["class_map"] = ClassMap.load(opts["class_map"])
        if "images" in opts:
            opts["images"] = root / "images"
        chunk, span = [(16384, 4096), (3, 7), (1, 1), (40, 5)][seed % 4]
        monkeypatch.setattr(coco, "CHUNK_OBJECTS", chunk)
        batch = {blocks: _read(path, ReadOptions(**opts), span, blocks) for blocks in (False, True)}
        with monkeypatch.context() as m:
            _general(m)
            general = {blocks: _read(path, ReadOptions(**opts), span, blocks) for blocks in (False, True)}
        assert batch == general, seed
        seen.update(line.split("code='")[1].split("'")[0] for line in batch[True] if "code='" in line)
        seen.update(flag for flag in ("image_missing']", "image_found_by_stem", "block ") if any(flag in x for x in batch[True]))
    assert {"duplicate_image", "no_image_no_size", "unsafe_path", "image_missing", "unknown_image_id", "bad_geometry",
            "image_unreadable", "image_missing']", "image_found_by_stem", "block "} <= seen


def test_the_batch_paths_are_taken_on_a_plain_file(tmp_path, monkeypatch):
    """Annotation-only, plain names and int sizes, plain quads: no image is located one by one, no
    annotation read one by one; and the items are those of the general paths."""
    rnd = random.Random(5)
    images = [{"id": i, "file_name": f"{i:03d}.png", "width": 100, "height": 80} for i in range(30)]
    anns = [{"id": k, "image_id": k % 30, "category_id": 1 + k % 2, "segmentation": [_quad(rnd)]} for k in range(90)]
    path = tmp_path / "plain.json"
    path.write_bytes(orjson.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    with monkeypatch.context() as m:
        _general(m)
        general = _read(path, ReadOptions(), 7, True)
    calls: list[str] = []
    real_locate, real_plain = base.locate_image, coco._plain_quad
    monkeypatch.setattr(base, "locate_image", lambda *a, **k: calls.append("image") or real_locate(*a, **k))
    monkeypatch.setattr(coco, "_plain_quad", lambda *a: calls.append("annotation") or real_plain(*a))
    assert _read(path, ReadOptions(), 7, True) == general
    assert calls == []
    assert sum(line.startswith("block ") for line in general) >= 5


RECORD = {"id": 7, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 9, 1, 9, 5, 1, 5]]}


@pytest.mark.parametrize("odd", range(len(ODD)))
def test_annotations_read_at_once_as_one_by_one(odd):
    categories = coco._categories(CATEGORIES)
    plain = [dict(RECORD, id=k) for k in range(6)]
    assert coco._common_quads(plain, categories) == [r["segmentation"][0] for r in plain]
    for at in (0, 3, 6):
        records = [*plain[:at], {**RECORD, **ODD[odd]([2, 2, 8, 2, 8, 6, 2, 6])}, *plain[at:]]
        assert coco._plain_quads(records, categories) == [coco._plain_quad(r, categories) for r in records]


def test_images_located_at_once_as_one_by_one(tmp_path):
    root = tmp_path
    for name in ("p.png", "images/st.png", "images/sub/i.png", "bad.png"):
        _png(root / name)
    (root / "bad.png").write_bytes(b"garbage")
    os.symlink("/etc/hostname", root / "images" / "out.png")
    names = [*NAMES, "out.png", "st.png"]
    sizes = [(w, h) for w, h in SIZES for _ in range(2)]
    for folders in ([str(root / "images"), str(root)], [str(root)], [str(root / "nowhere")]):
        for options in (ReadOptions(), ReadOptions(require_images=True)):
            finder = ImageFinder(root)
            cases = [(n, *sizes[k % len(sizes)]) for k, n in enumerate(names * 2)]
            got = locate_images(root, finder, folders, *zip(*cases, strict=True), options)  # type: ignore[call-arg]
            want = [locate_image(root, ImageFinder(root), folders, n, (w, h), options) for n, w, h in cases]
            assert got == want, (folders, options)


def test_absent_names_as_find_in_says(tmp_path):
    (tmp_path / "images").mkdir()
    _png(tmp_path / "images" / "x.png")
    _png(tmp_path / "y.jpg")
    finder = ImageFinder(tmp_path)
    folders = [tmp_path / "images", tmp_path]
    names = ["x.png", "x.jpg", "y.png", "y.jpg", "w.png", "w", "sub/w.png", "a\\b.png", ".", "..", "", "C:x.png", 5, None]
    got = finder.absent_names(folders, names)
    assert got == [False, False, False, False, True, True, False, False, False, False, False, False, False, False]
    for name, absent in zip(names, got, strict=True):
        if absent:
            assert finder.find_in(folders, name) == (NOT_FOUND, folders[0])
    os.symlink("/", tmp_path / "away")  # a folder outside the root: every name goes to find_in, which refuses it
    assert ImageFinder(tmp_path).absent_names([tmp_path / "away"], ["w.png"]) == [False]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab./\\", max_size=6), max_size=6))
def test_scene_keys_as_scene_key(paths):
    assert scene_keys("src", paths) == [scene_key("src", p) for p in paths]
    names = [p.replace("/", "").replace("\\", "") or "n" for p in paths]  # file names: the batch form
    assert scene_keys("src", names) == [scene_key("src", p) for p in names]


def _index(data: dict) -> tuple:
    ix = coco._Index.of(orjson.loads(orjson.dumps(data)), "f.json")
    return (ix.ids, ix.units.tolist(), ix.unit_order.tolist(), ix.unit_cum.tolist(),
            [(r.code, r.record, r.instances) for r in ix.head])


def test_index_of_sound_and_odd_records():
    """One odd record sends a whole-list pass to the general one: the index of the other records is the
    same, and the odd record gets its Reject."""
    images = [{"id": i, "file_name": f"{i}.png"} for i in range(5)] + [{"id": "s", "file_name": "s.png"}]
    anns = [{"id": k, "image_id": [3, 1, "s", 0, 3, 1][k % 6]} for k in range(12)]
    sound = _index({"images": images, "annotations": anns})
    assert sound[1] == [0, 1, 2, 3, 4, 5] and sound[4] == []
    assert sound[2] == [3, 9, 1, 5, 7, 11, 0, 4, 6, 10, 2, 8] and sound[3] == [0, 2, 6, 6, 10, 10, 12]
    odd_anns = [*anns, "not an object", {"id": 50, "image_id": True}, {"id": 51, "image_id": 2.0}, {"id": 52}]
    ids, units, order, cum, head = _index({"images": images, "annotations": odd_anns})
    assert (ids, units) == sound[:2]
    assert order == [3, 9, 1, 5, 7, 11, 13, 0, 4, 6, 10, 2, 8] and cum == [0, 2, 7, 7, 11, 11, 13]  # True is id 1
    assert head == [("unknown_image_id", f"annotation {a}", 1) for a in ("?", 51, 52)]
    odd_images = [*images, {"id": 2, "file_name": "again.png"}, {"id": None, "file_name": "x.png"}, "not an object",
                  {"id": 7, "file_name": 3}, {"id": 1.5, "file_name": "f.png"}]
    ids, units, order, cum, head = _index({"images": odd_images, "annotations": anns})
    assert ids[:6] == sound[0] and ids[6:] == [2, None, None, 7, None] and units == sound[1]
    assert (order, cum) == (sound[2], sound[3])
    assert head == [("duplicate_image", "image 2", 0), *(("bad_record", f"image entry {n}", 0) for n in (7, 8, 9, 10))]


BAD = ("bad_record", "image entry 4", 0)


@pytest.mark.parametrize(("odd", "iid", "reject"), [
    ({"id": 1.5}, None, BAD), ({"id": True}, None, BAD), ({"id": None}, None, BAD), ({"id": [1]}, None, BAD),
    ({"id": 9, "file_name": 3}, 9, BAD), ({"id": 9, "file_name": None}, 9, BAD),
    ({"id": 1}, 1, ("duplicate_image", "image 1", 0))])
def test_index_of_one_odd_image_among_sound_ones(odd, iid, reject):
    """Every image an object with a distinct id but one odd entry (an id of another kind, no id, no file
    name, a repeated id): the one-pass answer is refused, and the entry gets its Reject."""
    images = [{"id": i, "file_name": f"{i}.png"} for i in range(4)]
    ids, units, _, _, head = _index({"images": [*images, {"file_name": "odd.png", **odd}], "annotations": []})
    assert units == [0, 1, 2, 3] and ids[4] == iid and head == [reject]
