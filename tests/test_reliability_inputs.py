"""Hostile annotation files (tests/data/bad/): every case is a Reject or a one-line error naming the file,
never a traceback or a hang, the accounting holds per file, and the good inputs beside them are converted.

The corpus is copied into a temporary dataset root and given small images, so that what remains after the
bad records is really converted (reference and embed mode, through ``d2c.read`` and ``d2c convert``).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

import d2c
from d2c.cli import main
from d2c.model import Reject, Scene
from d2c.shards import iter_rows, verify

BAD = Path(__file__).parent / "data" / "bad"
COCO_FILES = sorted(p.name for p in (BAD / "coco").glob("*.json"))
UNPARSEABLE = {"empty.json", "invalid.json", "non_utf8.json", "truncated.json", "top_level_list.json",
               "images_not_list.json"}
SAFE_IMAGES = {"coco": ["a.png", "b.png", "c.png", "ok.png", "d.png"],
               "dota/images": ["bom.png", "empty.png", "mixed.png", "non_utf8.png", "numbers.png"],
               "voc/JPEGImages": ["good.jpg", "m.jpg", "n.jpg", "bomcrlf.jpg", "s.jpg"]}


def _image(path: Path, size: tuple[int, int] = (100, 100)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 80).save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """A copy of tests/data/bad with a 100 x 100 image for every name an annotation gives safely."""
    root = tmp_path / "bad"
    shutil.copytree(BAD, root)
    for folder, names in SAFE_IMAGES.items():
        for name in names:
            _image(root / folder / name)
    return root


def _coco_truth(path: Path) -> int | None:
    """Annotated objects in a COCO file, counted independently of the reader (None: not parseable)."""
    try:
        doc = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return None
    anns = doc.get("annotations") if isinstance(doc, dict) else None
    return len(anns) if isinstance(anns, list) else None


def _dota_truth(path: Path) -> int:
    lines = path.read_bytes().decode("utf-8", "replace").lstrip("\ufeff").splitlines()
    return sum(1 for s in lines if s.strip() and s.split(":", 1)[0].strip() not in ("imagesource", "gsd"))


def _voc_truth(path: Path) -> int:
    return path.read_bytes().count(b"<object>")


def _check_items(items: list, truth: dict[str, int]) -> dict[str, list[Reject]]:
    """Only Scenes and Rejects; each Reject names its file, a code and a reason; per file
    ``instances in = instances in scenes + instances rejected``."""
    assert items and all(isinstance(i, (Scene, Reject)) for i in items)
    by_file: dict[str, list[Reject]] = {}
    seen: dict[str, int] = {}
    for it in items:
        f = it.file if isinstance(it, Reject) else it.provenance.file
        name = Path(f).name
        seen[name] = seen.get(name, 0) + (it.instances if isinstance(it, Reject) else it.num_instances)
        if isinstance(it, Reject):
            assert it.code and re.fullmatch(r"[a-z_]+", it.code), it
            assert it.reason and "\n" not in it.reason and "Traceback" not in it.reason, it
            by_file.setdefault(name, []).append(it)
    for name, n in truth.items():
        assert seen.get(name, 0) == n, f"{name}: {seen.get(name, 0)} instances accounted for, {n} in the file"
    return by_file


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", COCO_FILES)
def test_coco_case_through_read(corpus, name):
    path = corpus / "coco" / name
    items = list(d2c.read(path, format="coco"))
    truth = _coco_truth(path)
    by_file = _check_items(items, {name: truth} if truth is not None else {})
    if name in UNPARSEABLE:
        (rej,) = items
        assert rej.file == name and rej.code == "parse_error", rej
        assert re.search(r"line \d+, column \d+|not a COCO file", rej.reason), rej.reason
    if name == "bom.json":  # a UTF-8 BOM is read past, not a reason to drop the file
        assert [i.num_instances for i in items if isinstance(i, Scene)] == [1]
    if name == "wrong_types.json":
        codes = {r.record: r.code for r in by_file[name]}
        assert codes == {
            "annotation 1": "bad_geometry", "annotation 2": "bad_geometry", "annotation 3": "non_finite",
            "annotation 4": "out_of_range", "annotation 5": "zero_area", "annotation 7": "unknown_image_id",
            "annotation 8": "unknown_category_id", "annotation 9": "non_finite",
            "image 1": "bad_size", "image 2": "bad_size",  # a string or negative width: no image has it
            "image 3": "duplicate_image", "image 4": "unsafe_path", "image 5": "unsafe_path",
        }
        reasons = {r.record: r.reason for r in by_file[name]}
        assert reasons["image 1"] == "image width '100' is not a whole number of pixels"
        assert reasons["image 2"] == "image width -5 is outside 1..2147483647 pixels"
        ok = next(i for i in items if isinstance(i, Scene) and i.image_path == "ok.png")
        assert [inst.hbb for inst in ok.instances] == [(10.0, 10.0, 30.0, 15.0), (30.0, 30.0, 50.0, 35.0)]
    if name == "weird_structures.json":
        assert {r.record for r in by_file[name] if r.code == "unknown_category_id"} == {"annotation 1",
                                                                                        "annotation 2"}
        assert any("RLE size" in r.reason for r in by_file[name])  # a 10^12-pixel mask is not allocated


@pytest.mark.timeout(30)
def test_dota_corpus_through_read(corpus):
    files = sorted((corpus / "dota" / "labelTxt").glob("*.txt"))
    items = list(d2c.read(corpus / "dota", format="dota"))
    by_file = _check_items(items, {f.name: _dota_truth(f) for f in files})
    mixed = {r.record: r.code for r in by_file["mixed.txt"]}
    assert mixed == {"line 4": "bad_record", "line 5": "bad_record", "line 6": "bad_record",
                     "line 7": "non_finite", "line 8": "zero_area", "line 9": "outside_image"}
    scenes = {s.image_path: s for s in items if isinstance(s, Scene)}
    assert scenes["images/mixed.png"].num_instances == 2 and scenes["images/mixed.png"].gsd is None
    assert scenes["images/bom.png"].num_instances == 1  # BOM + CRLF: the line still parses
    assert scenes["images/empty.png"].num_instances == 0
    assert {r.record for r in by_file["numbers.txt"]} == {"line 2", "line 3", "line 4", "line 5"}


@pytest.mark.timeout(30)
def test_voc_corpus_through_read(corpus):
    files = sorted((corpus / "voc" / "Annotations").glob("*.xml"))
    items = list(d2c.read(corpus / "voc", format="voc"))
    unparseable = ("billion_laughs.xml", "xxe.xml", "truncated.xml", "empty.xml", "non_utf8.xml")
    by_file = _check_items(items, {f.name: _voc_truth(f) for f in files if f.name not in unparseable})
    whole = {name: rejs[0].code for name, rejs in by_file.items() if rejs[0].record is None}
    for name in unparseable:  # a file that cannot be parsed is one Reject (its objects cannot be counted)
        assert whole[name] == "parse_error" and len(by_file[name]) == 1, name
    assert whole["traversal.xml"] == whole["absolute.xml"] == "unsafe_path"
    assert whole["bad_size.xml"] == "bad_size" and by_file["bad_size.xml"][0].instances == 1
    assert by_file["bad_size.xml"][0].reason == "image width -100 is outside 1..2147483647 pixels"
    assert "passwd" not in "".join(s.image_path for s in items if isinstance(s, Scene))
    assert "unsafe XML" in by_file["xxe.xml"][0].reason and "root:" not in by_file["xxe.xml"][0].reason
    numbers = {r.record: r.code for r in by_file["bad_numbers.xml"]}
    assert numbers == {"object 1": "non_finite", "object 2": "non_finite", "object 3": "bad_geometry",
                       "object 4": "zero_area", "object 5": "bad_geometry", "object 6": "bad_geometry",
                       "object 7": "bad_geometry"}
    kept = {s.key: s.num_instances for s in items if isinstance(s, Scene)}
    assert kept == {"voc/good": 1, "voc/m": 1, "voc/n": 1, "voc/bomcrlf": 1}


def _convert(args: list, expect: int) -> str:
    result = CliRunner().invoke(main, ["convert", *map(str, args)])
    out = result.output  # click >= 8.2: stdout and stderr interleaved
    assert result.exit_code == expect, out[-2000:]
    assert "Traceback" not in out and result.exception is None or isinstance(result.exception, SystemExit), out
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fmt", ["coco", "dota", "voc"])
def test_cli_converts_what_remains(corpus, tmp_path, fmt):
    """Through ``d2c convert`` (embed mode): exit 0, every reject in _rejects.jsonl, the rest in shards,
    the invariant in _stats.json; with --strict the same run exits 1 with a one-line error."""
    inputs = [corpus / "coco" / n for n in COCO_FILES] if fmt == "coco" else [corpus / fmt]
    for i, inp in enumerate(inputs):
        out = tmp_path / f"out{i}"
        _convert([inp, "--format", fmt, "--out", out, "--images-mode", "embed", "--shard-rows", "3",
                  "--captions-per-image", "2"], 0)
        stats = json.loads((out / "_stats.json").read_text())
        assert stats["invariant_holds"] and stats["instances_in"] == stats["instances_out"] + \
            stats["instances_rejected"]
        rejects = [json.loads(line) for line in (out / "_rejects.jsonl").read_text().splitlines()]
        assert len(rejects) == stats["rejects_total"] >= (inp.name != "bom.json")
        assert all(r["file"] and r["code"] and r["reason"] for r in rejects)
        rows = list(iter_rows(out, columns=["key", "image"])) if stats["rows"] else []
        assert len(rows) == stats["scenes_written"] and all(r["image"]["bytes"] for r in rows)
        assert verify(out) == []
        if fmt != "coco" or inp.name == "wrong_types.json":
            strict = _convert([inp, "--format", fmt, "--out", tmp_path / f"strict{i}", "--strict"], 1)
            err = [line for line in strict.splitlines() if line.startswith("d2c convert: error")]
            assert len(err) == 1 and "reject(s) under --strict" in err[0], strict


@pytest.mark.timeout(30)
def test_cli_usage_errors_name_the_file(corpus, tmp_path):
    out = _convert([corpus / "coco" / "invalid.json", "--out", tmp_path / "o"], 2)  # auto cannot detect it
    assert "invalid.json" in out and "--format" in out
    out = _convert([corpus / "coco" / "missing.json", "--format", "coco", "--out", tmp_path / "o"], 2)
    assert "missing.json" in out
