"""Hostile numbers and geometry (issue 22): every number an annotation gives is checked at the reader
against what the shard schema can hold, and geometry has a budget checked before shapely sees it. Each
attack is a Reject naming its file, record and reason; the run goes on and writes the good images; the
accounting holds. A property-based test feeds extreme numbers through every reader and ``d2c convert``."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

import d2c
from d2c.cli import main
from d2c.convert import convert
from d2c.errors import UsageError
from d2c.model import Reject, Scene
from d2c.options import ConvertOptions
from d2c.shards import iter_rows, verify

EXAMPLES = int(os.environ.get("D2C_FUZZ_EXAMPLES", "0"))
PROPERTY = settings(max_examples=EXAMPLES or 20, deadline=None, suppress_health_check=list(HealthCheck),
                    derandomize=not EXAMPLES, database=None)
CATS = [{"id": 1, "name": "ship"}]


def _png(path: Path, size: tuple[int, int] = (64, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 80).save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")


def _star(n: int, cx: float = 32, cy: float = 24) -> list[float]:
    """A flat ``x, y, ...`` star of ``n`` vertices (self-intersecting for shapely's buffer(0))."""
    out: list[float] = []
    for i in range(n):
        r, t = (20 if i % 2 else 6), 2 * math.pi * i / n
        out += [round(cx + r * math.cos(t), 1), round(cy + r * math.sin(t), 1)]
    return out


def _cli(args: list, expect: int = 0) -> str:
    # the attacks sit beside good objects in the same scenes: keep those scenes (flagged) to see both
    result = CliRunner().invoke(main, ["convert", *map(str, args), "--keep-partial-scenes"])
    assert result.exit_code == expect, result.output[-2000:]
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    return result.output


def _outcome(out: Path) -> tuple[dict, dict[str, tuple[str, str]], dict[str, list]]:
    """_stats.json (its invariant checked), the rejects by ``file:record`` -> (code, reason), and each
    written row's objects' hbbs by key."""
    stats = json.loads((out / "_stats.json").read_text())
    assert stats["invariant_holds"], stats
    assert stats["instances_in"] == stats["instances_out"] + stats["instances_rejected"]
    rejects = {}
    for line in (out / "_rejects.jsonl").read_text().splitlines():
        r = json.loads(line)
        assert r["file"] and r["code"] and r["reason"] and "\n" not in r["reason"], r
        rejects[f"{r['file']}:{r['record']}"] = (r["code"], r["reason"])
    rows = {r["key"]: [o["hbb"] for o in r["objects"]] for r in iter_rows(out, columns=["key", "objects"])} \
        if stats["rows"] else {}
    assert verify(out) == []
    return stats, rejects, rows


def _coco_attack(root: Path) -> Path:
    """The COCO attacks of issue 22 beside two good images (a.png, b.png)."""
    _png(root / "a.png")
    _png(root / "b.png")
    sizes = [(-5, 48), (10**30, 48), (2**31, 48), (64.5, 48), (True, True), ("64", 48), (64, -1)]
    images = [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
              {"id": 2, "file_name": "b.png", "width": 64, "height": 48}]
    images += [{"id": 10 + k, "file_name": f"x{k}.png", "width": w, "height": h} for k, (w, h) in enumerate(sizes)]
    part = [1, 1, 20, 1, 20, 9, 1, 9, 5, 5]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5]},
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [10**400, 2, 10, 5]},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [3, 4, 10, 5]},
        {"id": 4, "image_id": 2, "category_id": 1, "segmentation": [part] * 3000},
        {"id": 5, "image_id": 2, "category_id": 1, "segmentation": [_star(20_002)]},
        {"id": 6, "image_id": 2, "category_id": 1,
         "segmentation": [[i % 60, 5, i % 60 + 1, 5, i % 60 + 1, 6] for i in range(2000)]},
        {"id": 7, "image_id": 2, "category_id": 1, "segmentation": [[10**400, 1, 20, 1, 20, 9, 1, 9]]},
        {"id": 8, "image_id": 2, "category_id": 1, "segmentation": [[1e300, 1, 20, 1, 20, 9, 1, 9, 3, 3]]},
        {"id": 9, "image_id": 2, "category_id": 1, "bbox": [1e300, 1, 10, 5]},
    ]
    anns += [{"id": 20 + k, "image_id": 10 + k, "category_id": 1, "bbox": [1, 2, 10, 5]} for k in range(len(sizes))]
    path = root / "attack.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))
    return path


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["reference", "embed"])
def test_coco_attacks_are_rejects_and_the_good_images_are_written(tmp_path, mode):
    path = _coco_attack(tmp_path / "data")
    _cli([path, "--format", "coco", "--out", tmp_path / "out", "--images-mode", mode])
    stats, rejects, rows = _outcome(tmp_path / "out")
    codes = {k: v[0] for k, v in rejects.items()}
    assert codes == {
        "attack.json:annotation 2": "out_of_range", "attack.json:annotation 4": "too_complex",
        "attack.json:annotation 5": "too_complex", "attack.json:annotation 6": "too_complex",
        "attack.json:annotation 7": "out_of_range", "attack.json:annotation 8": "out_of_range",
        "attack.json:annotation 9": "out_of_range",
        **{f"attack.json:image {10 + k}": "bad_size" for k in range(7)},
    }
    assert rejects["attack.json:annotation 2"][1] == "bbox [an integer of about 401 digits, 2, 10, 5] has an " \
                                                      "integer too large for a float64"
    assert "3000 polygon parts, more than the cap of 100" in rejects["attack.json:annotation 4"][1]
    assert "20002 vertices, more than the cap of 1000" in rejects["attack.json:annotation 5"][1]
    assert rejects["attack.json:image 11"][1] == "image width 1e+30 is outside 1..2147483647 pixels"
    assert rejects["attack.json:image 14"][1] == "image width True is not a whole number of pixels"
    assert rows == {"attack/a": [[1.0, 2.0, 11.0, 7.0]], "attack/b": [[3.0, 4.0, 13.0, 9.0]]}
    assert stats["instances_in"] == 16 and stats["instances_out"] == 2


@pytest.mark.timeout(30)
def test_coco_fast_block_path_checks_the_same_numbers(tmp_path):
    """Annotation-only runs read plain 4-point files as blocks (d2c.blocks); an int too large for a
    float or a coordinate of 1e300 in such a file routes its image to the general path, which rejects
    that annotation only, and the result equals reading scene by scene (two workers read units)."""
    images = [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 48} for i in range(4)]
    quad = [1, 1, 20, 1, 20, 9, 1, 9]
    anns = [{"id": i, "image_id": i % 4, "category_id": 1, "segmentation": [quad]} for i in range(8)]
    anns[1]["segmentation"] = [[10**400, *quad[1:]]]
    anns[2]["segmentation"] = [[1e300, *quad[1:]]]
    anns[3]["segmentation"] = [[-(2**63), *quad[1:]]]  # in range of an int64, beyond 2^53 as a coordinate
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        _cli([path, "--format", "coco", "--out", out, "--workers", workers])
        outs.append(_outcome(out))
    (stats, rejects, rows), other = outs
    assert other == outs[0]
    assert {k: v[0] for k, v in rejects.items()} == {f"plain.json:annotation {i}": "out_of_range" for i in (1, 2, 3)}
    assert {k: len(v) for k, v in rows.items()} == {"plain/0": 2, "plain/1": 1, "plain/2": 1, "plain/3": 1}
    assert stats["instances_in"] == 8
    assert sorted((tmp_path / "w1").glob("*.parquet"))[0].read_bytes() == \
        sorted((tmp_path / "w2").glob("*.parquet"))[0].read_bytes()


@pytest.mark.timeout(30)
def test_dota_overflows_in_embed_mode(tmp_path):
    """A gsd of 1e308 made every metre figure infinite (``int(inf)`` in a caption killed the run): it is
    unusable (gsd null), as NaN is; coordinates beyond 2^53 or whose digits overflow are Rejects."""
    root = tmp_path / "dota"
    for stem in ("a", "b", "c"):
        _png(root / "images" / f"{stem}.png")
    (root / "labelTxt").mkdir()
    (root / "labelTxt" / "a.txt").write_text("gsd:1e308\n1 1 20 1 20 9 1 9 ship 0\n")
    (root / "labelTxt" / "b.txt").write_text("-1.79e308 1 1.79e308 1 1.79e308 9 -1.79e308 9 ship\n"
                                             "2 2 30 2 30 12 2 12 ship\n")
    (root / "labelTxt" / "c.txt").write_text(f"{'9' * 400} 1 20 1 20 9 1 9 ship\n1 1 5 1 5 5 1 5 ship\n")
    _cli([root, "--format", "dota", "--out", tmp_path / "out", "--images-mode", "embed"])
    stats, rejects, rows = _outcome(tmp_path / "out")
    assert {k: v[0] for k, v in rejects.items()} == {"labelTxt/b.txt:line 1": "out_of_range",
                                                     "labelTxt/c.txt:line 1": "non_finite"}
    assert rows == {"dota/a": [[1.0, 1.0, 20.0, 9.0]], "dota/b": [[2.0, 2.0, 30.0, 12.0]],
                    "dota/c": [[1.0, 1.0, 5.0, 5.0]]}
    assert [r["gsd"] for r in iter_rows(tmp_path / "out", columns=["gsd"])] == [None, None, None]


@pytest.mark.timeout(30)
def test_voc_and_yolo_numbers_and_budgets(tmp_path):
    voc = tmp_path / "voc"
    for stem in ("a", "b", "c"):
        _png(voc / "JPEGImages" / f"{stem}.jpg")
    (voc / "Annotations").mkdir()
    box = "<object><name>ship</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>11</xmax><ymax>7</ymax></bndbox></object>"
    star = " ".join(map(str, _star(20_002)))
    (voc / "Annotations" / "a.xml").write_text(
        f"<annotation><filename>a.jpg</filename>{box}<object><name>ship</name><polygon>{star}</polygon></object>"
        "</annotation>")
    (voc / "Annotations" / "b.xml").write_text(
        f"<annotation><filename>b.jpg</filename><size><width>1e30</width><height>48</height></size>{box}</annotation>")
    (voc / "Annotations" / "c.xml").write_text(
        f"<annotation><filename>c.jpg</filename><size><width>2147483648</width><height>48</height></size>{box}"
        "</annotation>")
    _cli([voc, "--format", "voc", "--out", tmp_path / "vout"])
    _, rejects, rows = _outcome(tmp_path / "vout")
    assert {k: v[0] for k, v in rejects.items()} == {"Annotations/a.xml:object 2": "too_complex",
                                                     "Annotations/b.xml:None": "bad_size",
                                                     "Annotations/c.xml:None": "bad_size"}
    assert rows == {"voc/a": [[1.0, 2.0, 11.0, 7.0]]}

    yolo = tmp_path / "yolo"
    _png(yolo / "images" / "a.png")
    (yolo / "labels").mkdir()
    (yolo / "classes.txt").write_text("ship\n")
    poly = " ".join(str(v / 64) for v in _star(20_002))
    (yolo / "labels" / "a.txt").write_text(f"0 0.5 0.5 0.25 0.25\n\u00b2 0.5 0.5 0.1 0.1\n{'9' * 5000} 0.5 0.5 0.1 0.1\n"
                                           f"0 {poly}\n0 1e308 0.5 1e308 0.1\n")
    _cli([yolo, "--format", "yolo", "--out", tmp_path / "yout"])
    _, rejects, rows = _outcome(tmp_path / "yout")
    assert {k: v[0] for k, v in rejects.items()} == {"labels/a.txt:line 2": "bad_class", "labels/a.txt:line 3": "bad_class",
                                                     "labels/a.txt:line 4": "too_complex",
                                                     "labels/a.txt:line 5": "non_finite"}
    assert rows == {"yolo/a": [[24.0, 18.0, 40.0, 30.0]]}


def _disk_rle() -> dict:
    """A compressed COCO RLE of a disk in a 64 x 48 image (its convex hull has many vertices)."""
    import numpy as np
    from pycocotools import mask

    yy, xx = np.mgrid[:48, :64]
    rle = mask.encode(np.asfortranarray(((xx - 30) ** 2 + (yy - 24) ** 2 < 15**2).astype(np.uint8)))
    return {"size": [48, 64], "counts": rle["counts"].decode("ascii")}


@pytest.mark.timeout(30)
def test_geometry_budget_is_configurable(tmp_path):
    _png(tmp_path / "a.png")
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 20, 1, 20, 9, 1, 9, 5, 5]]},
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 9, 1, 9, 9], [30, 30, 40, 30, 40, 40]]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5]},
            {"id": 4, "image_id": 1, "category_id": 1, "segmentation": _disk_rle()}]  # its hull is ours: exempt
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": anns, "categories": CATS}))
    _cli([path, "--format", "coco", "--out", tmp_path / "default"])
    assert _outcome(tmp_path / "default")[1] == {}
    assert len(_outcome(tmp_path / "default")[2]["c/a"]) == 4
    _cli([path, "--format", "coco", "--out", tmp_path / "tight", "--max-vertices", "5", "--max-parts", "1"])
    _, rejects, rows = _outcome(tmp_path / "tight")
    assert {k: v[0] for k, v in rejects.items()} == {"c.json:annotation 2": "too_complex"}
    assert "2 polygon parts, more than the cap of 1" in rejects["c.json:annotation 2"][1]
    out = _cli([path, "--format", "coco", "--out", tmp_path / "tight", "--resume"], expect=2)  # other limits
    assert "geometry limits" in out
    _cli([path, "--format", "coco", "--out", tmp_path / "t4", "--max-vertices", "4"])
    assert {k: v[0] for k, v in _outcome(tmp_path / "t4")[1].items()} == {"c.json:annotation 1": "too_complex",
                                                                       "c.json:annotation 2": "too_complex"}
    out = _cli([path, "--out", tmp_path / "bad", "--max-vertices", "3"], expect=2)
    assert "--max-vertices" in out
    with pytest.raises(UsageError, match="max_parts must be a positive integer"):
        d2c.read(path, format="coco", max_parts=0)
    with pytest.raises(UsageError, match="max_vertices"):
        convert(path, tmp_path / "api", ConvertOptions(format="coco", max_vertices=True))


_PEAK = """
import resource, sys
import d2c
items = list(d2c.read(sys.argv[1], format="coco"))
assert sum(i.instances if isinstance(i, d2c.Reject) else i.num_instances for i in items) == int(sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_kib(path: Path, instances: int) -> int:
    done = subprocess.run([sys.executable, "-c", _PEAK, str(path), str(instances)], capture_output=True, text=True,
                          timeout=50, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.timeout(60)
def test_pathological_file_peak_memory_within_twice_a_normal_file(tmp_path):
    """A part repeated 3000 times, a 200,000-vertex star, 3000 parts (shapely: bad_alloc after 6.4 GB
    before the budget) and a 10,000-vertex zigzag crossing itself at every edge (1.6 GB in shapely's
    buffer(0)), beside three such zigzags of 1,000 vertices (within the budget: through shapely), cost at most
    twice the peak memory of reading a normal COCO file of the same size."""
    _png(tmp_path / "a.png")
    images = [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}]
    part = [1, 1, 20, 1, 20, 9, 1, 9, 5, 5]
    bad = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [part] * 3000},
           {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [_star(200_000)]},
           {"id": 3, "image_id": 1, "category_id": 1,
            "segmentation": [[i % 60, 5, i % 60 + 1, 5, i % 60 + 1, 6] for i in range(3000)]}]
    bad += [{"id": 4 + k, "image_id": 1, "category_id": 1,
             "segmentation": [[v for i in range(n) for v in ((i * 37) % 64, (i * 53) % 48)]]}
            for k, n in enumerate((10_000, 1_000, 1_000, 1_000))]
    patho = tmp_path / "patho.json"
    patho.write_text(json.dumps({"images": images, "annotations": bad, "categories": CATS}))
    size = patho.stat().st_size
    normal_images = [{"id": i, "file_name": f"n{i}.png", "width": 64, "height": 48} for i in range(2000)]
    normal, n, written = [], 0, len(json.dumps({"images": normal_images}))
    while written < size:  # 8-vertex polygons and boxes, in about the same bytes
        x = n % 40
        normal.append({"id": n, "image_id": n % 2000, "category_id": 1, "bbox": [x, 2.5, 10.25, 5.5],
                       "segmentation": [[x, 1.5, x + 9.5, 1.5, x + 12.5, 4.5, x + 12.5, 9.5, x + 9.5, 12.5, x, 12.5,
                                         x - 1.5, 9.5, x - 1.5, 4.5]]})
        written += len(json.dumps(normal[-1])) + 2
        n += 1
    plain = tmp_path / "normal.json"
    plain.write_text(json.dumps({"images": normal_images, "annotations": normal, "categories": CATS}))
    assert abs(plain.stat().st_size - size) < 0.1 * size
    peak_patho, peak_normal = _peak_kib(patho, 7), _peak_kib(plain, n)
    assert peak_patho <= 2 * peak_normal, (peak_patho, peak_normal)


# ---------------------------------------------------------------------------------------------- property

EXTREMES = [0, -1, 1, 2**31 - 1, 2**31, -(2**31), 2**53 + 1, 2**63, 10**30, 10**400, -(10**400), 1e308, -1e308,
            5e-324, -0.0, 64.5, 2.0**53, 2.0**60, math.nan, math.inf, -math.inf, True, False]
number = st.one_of(st.sampled_from(EXTREMES), st.integers(-100, 200), st.floats(-1e3, 1e3),
                   st.floats(allow_nan=True, allow_infinity=True))
GOOD_HBB = [1.0, 2.0, 11.0, 7.0]  # the good object every example holds, in its good image a


def _text(v) -> str:
    """A number as a text format writes it (``True``: a word, rejected as one)."""
    return repr(v) if isinstance(v, float) else str(v)


def _converted(root: Path, fmt: str, mode: str = "reference", **options) -> tuple[dict, dict[str, list]]:
    out = Path(tempfile.mkdtemp(prefix="d2c-num-"))
    try:
        options.setdefault("keep_partial_scenes", True)  # bad objects beside good ones in one scene
        convert(root, out / "o", ConvertOptions(format=fmt, images_mode=mode, captions_per_image=1,
                                                progress=False, **options))
        stats, _, rows = _outcome(out / "o")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return stats, rows


def _fresh(name: str) -> Path:
    """A new dataset root called ``name`` (the source name of its scene keys)."""
    return Path(tempfile.mkdtemp(prefix=f"d2c-{name}-")) / name


@PROPERTY
@given(sizes=st.lists(st.tuples(number, number), min_size=1, max_size=3),
       boxes=st.lists(st.lists(number, min_size=4, max_size=4), max_size=3),
       quads=st.lists(st.lists(number, min_size=8, max_size=8), max_size=3),
       polys=st.lists(st.lists(number, min_size=6, max_size=14), max_size=2))
@example(sizes=[(10**30, 48), (2**31, 1)], boxes=[[10**400, 2, 10, 5]], quads=[[10**400, 1, 20, 1, 20, 9, 1, 9]],
         polys=[[1e300, 1, 20, 1, 20, 9]])
def test_property_coco(sizes, boxes, quads, polys):
    root = _fresh("coco")
    try:
        _png(root / "a.png")
        images = [{"id": 0, "file_name": "a.png", "width": 64, "height": 48}]
        images += [{"id": k, "file_name": "a.png" if k == 1 else f"b{k}.png", "width": w, "height": h}
                   for k, (w, h) in enumerate(sizes, start=1)]
        anns = [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [1, 2, 10, 5]}]
        geoms = [{"bbox": b} for b in boxes] + [{"segmentation": [q]} for q in quads] + \
                [{"segmentation": [p]} for p in polys]
        anns += [{"id": j, "image_id": j % (len(images)), "category_id": 1, **g} for j, g in enumerate(geoms, 1)]
        (root / "c.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))
        stats, rows = _converted(root / "c.json", "coco")
        assert stats["instances_in"] == len(anns)
        assert GOOD_HBB in rows["c/a"]
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


@PROPERTY
@given(lines=st.lists(st.tuples(st.lists(number, min_size=8, max_size=8), st.booleans()), max_size=4),
       gsd=number)
@example(lines=[([-1.79e308, 1, 1.79e308, 1, 1.79e308, 9, -1.79e308, 9], False)], gsd=1e308)
def test_property_dota_embed(lines, gsd):
    root = _fresh("dota")
    try:
        for stem in ("a", "b"):
            _png(root / "images" / f"{stem}.png")
        (root / "labelTxt").mkdir()
        body = [" ".join(map(_text, coords)) + " ship" + (" 1" if hard else "") for coords, hard in lines]
        (root / "labelTxt" / "a.txt").write_text(f"gsd:{_text(gsd)}\n1 2 11 2 11 7 1 7 ship\n" + "\n".join(body))
        (root / "labelTxt" / "b.txt").write_text(f"gsd:{_text(gsd)}\n" + "\n".join(body))
        stats, rows = _converted(root, "dota", "embed")
        assert stats["instances_in"] == 1 + 2 * len(lines)
        assert GOOD_HBB in rows["dota/a"]
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


@PROPERTY
@given(size=st.tuples(number, number), objects=st.lists(st.tuples(st.sampled_from(["bndbox", "robndbox", "polygon"]),
                                                                  st.lists(number, min_size=8, max_size=8)), max_size=4))
@example(size=(2**31, 48), objects=[("robndbox", [1e300, 1, 1e300, 1e300, 0.5, 0, 0, 0])])
def test_property_voc(size, objects):
    root = _fresh("voc")
    try:
        for stem in ("a", "b"):
            _png(root / "JPEGImages" / f"{stem}.jpg")
        (root / "Annotations").mkdir()
        tags = {"bndbox": ["xmin", "ymin", "xmax", "ymax"], "robndbox": ["cx", "cy", "w", "h", "angle"],
                "polygon": ["x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4"]}
        def fields(kind: str, vals: list) -> str:
            return "".join(f"<{t}>{_text(v)}</{t}>" for t, v in zip(tags[kind], vals, strict=False))

        objs = "".join(f"<object><name>ship</name><{kind}>{fields(kind, vals)}</{kind}></object>" for kind, vals in objects)
        good = "<object><name>ship</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>11</xmax><ymax>7</ymax></bndbox></object>"
        (root / "Annotations" / "a.xml").write_text(f"<annotation><filename>a.jpg</filename>{good}{objs}</annotation>")
        sz = f"<size><width>{_text(size[0])}</width><height>{_text(size[1])}</height></size>"
        (root / "Annotations" / "b.xml").write_text(f"<annotation><filename>b.jpg</filename>{sz}{objs}</annotation>")
        stats, rows = _converted(root, "voc")
        assert stats["instances_in"] == 1 + 2 * len(objects)
        assert GOOD_HBB in rows["voc/a"]
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


@PROPERTY
@given(lines=st.lists(st.tuples(st.sampled_from(["0", "1", "\u00b2", "9" * 30]), st.lists(number, min_size=4, max_size=10)),
                      max_size=4), obb=st.booleans())
@example(lines=[("\u00b2", [0.5, 0.5, 0.1, 0.1]), ("0", [1e308, 0.5, 1e308, 0.1])], obb=False)
def test_property_yolo(lines, obb):
    root = _fresh("yolo")
    try:
        _png(root / "images" / "a.png", (100, 100))
        (root / "labels").mkdir()
        (root / "classes.txt").write_text("ship\nplane\n")
        good = "0 0.01 0.02 0.11 0.02 0.11 0.07 0.01 0.07" if obb else "0 0.06 0.045 0.1 0.05"
        body = [" ".join([cls, *map(_text, vals)]) for cls, vals in lines]
        (root / "labels" / "a.txt").write_text("\n".join([good, *body]) + "\n")
        stats, rows = _converted(root, "yolo_obb" if obb else "yolo")
        assert stats["instances_in"] == 1 + len(lines)
        assert GOOD_HBB in [[round(v, 6) for v in hbb] for hbb in rows["yolo/a"]]
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


@PROPERTY
@given(values=st.lists(number, min_size=8, max_size=8), w=number, h=number)
@example(values=[10**400, 1, 20, 1, 20, 9, 1, 9], w=True, h=True)
def test_property_read_gives_only_scenes_and_rejects(values, w, h):
    """Through ``d2c.read`` alone: every kept coordinate is finite and within the image."""
    root = _fresh("read")
    try:
        _png(root / "a.png")
        doc = {"images": [{"id": 1, "file_name": "a.png", "width": w, "height": h}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [values]},
                               {"id": 2, "image_id": 1, "category_id": 1, "bbox": values[:4]}],
               "categories": CATS}
        (root / "c.json").write_text(json.dumps(doc))
        items = list(d2c.read(root / "c.json", format="coco"))
        assert all(isinstance(i, (Scene, Reject)) for i in items)
        assert sum(i.instances if isinstance(i, Reject) else i.num_instances for i in items) == 2
        for scene in (i for i in items if isinstance(i, Scene)):
            assert 0 < scene.width <= 2**31 - 1 and 0 < scene.height <= 2**31 - 1
            for inst in scene.instances:
                assert all(math.isfinite(v) for v in (*inst.hbb, *inst.obb, inst.area))
                assert 0 <= inst.hbb[0] <= inst.hbb[2] <= scene.width and 0 <= inst.hbb[1] <= inst.hbb[3] <= scene.height
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)
