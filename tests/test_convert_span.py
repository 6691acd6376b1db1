"""``convert(span=(start, stop))``: the spans of one input, converted apart and joined in order, give the rows,
rejects and accounting of the whole conversion (COCO duplicate keys across spans included); the span is in the
shards' metadata, so ``resume`` keeps a span's own shards and refuses another span's."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from d2c.convert import convert
from d2c.errors import UsageError
from d2c.options import ConvertOptions
from d2c.shards import read_metadata, shard_paths


def _coco(tmp_path: Path, n: int = 12) -> Path:
    """``n`` images, annotation-only; image 9 repeats image 2's file name (a duplicate key, far apart)."""
    images = [{"id": i + 1, "file_name": f"img{i if i != 9 else 2}.png", "width": 100, "height": 100}
              for i in range(n)]
    anns = [{"id": 100 + i, "image_id": i + 1, "category_id": 1 + i % 2, "bbox": [5 + i, 5, 20, 10],
             "area": 200, "iscrowd": 0} for i in range(n)]
    anns.append({"id": 999, "image_id": 77, "category_id": 1, "bbox": [1, 1, 2, 2]})  # of no image: head
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "ship"}, {"id": 2, "name": "tank"}]}))
    return path


def _dota(tmp_path: Path, n: int = 9) -> Path:
    from PIL import Image

    root = tmp_path / "dota"
    (root / "labelTxt").mkdir(parents=True)
    (root / "images").mkdir()
    for i in range(n):
        Image.new("L", (64, 48), i * 20).save(root / "images" / f"P{i:04d}.png")
        lines = [f"{10 + i} 10 {40 + i} 10 {40 + i} 30 {10 + i} 30 ship 0"]
        if i == 4:
            lines.append("1 2 3 ship")  # a bad line: a reject in the middle
        (root / "labelTxt" / f"P{i:04d}.txt").write_text("\n".join(lines) + "\n")
    return root


def _rows(out: Path) -> list[dict]:
    return [r for p in shard_paths(out) for r in pq.read_table(p).to_pylist()]


def _spans_join(input: Path, fmt: str, cuts: list[int], tmp_path: Path, **kw) -> tuple[list, list, list]:
    """The spans converted apart and joined in order, as a caller must: a span whose located keys
    (``span_keys``) meet an earlier span's is converted again with those keys taken."""
    rows, rejects, stats = [], [], []
    seen: set[str] = set()
    for a, b in zip(cuts, cuts[1:], strict=False):
        out = tmp_path / f"span-{a}-{b}"
        res = convert(input, out, ConvertOptions(format=fmt, span=(a, b), **kw))
        if res.span_keys is not None and not seen.isdisjoint(res.span_keys):
            out = tmp_path / f"span-{a}-{b}-again"
            hits = tuple(sorted(seen.intersection(res.span_keys)))
            res = convert(input, out, ConvertOptions(format=fmt, span=(a, b), span_taken=hits, **kw))
        assert (res.span_keys is None) == (fmt != "coco")
        seen.update(res.span_keys or ())
        rows += _rows(out)
        rejects += (out / "_rejects.jsonl").read_text().splitlines()
        stats.append(res.stats)
    return rows, rejects, stats


@pytest.mark.parametrize("fmt", ["coco", "dota"])
def test_spans_join_to_the_whole(tmp_path, fmt):
    input = _coco(tmp_path) if fmt == "coco" else _dota(tmp_path)
    whole = convert(input, tmp_path / "whole", ConvertOptions(format=fmt, shard_rows=4, captions_per_image=2))
    n = 12 if fmt == "coco" else 9
    for cuts in ([0, 3, 7, n], [0, 1, 2, 5, 10, n + 5]):  # a stop past the end is cut to it
        sub = tmp_path / f"cuts{len(cuts)}"
        rows, rejects, stats = _spans_join(input, fmt, cuts, sub, shard_rows=4, captions_per_image=2)
        assert len(rows) >= n - 2 and rows == _rows(tmp_path / "whole")
        assert rejects == (tmp_path / "whole" / "_rejects.jsonl").read_text().splitlines()
        for k in ("scenes_read", "scenes_written", "instances_in", "instances_out", "instances_rejected"):
            assert sum(s[k] for s in stats) == whole.stats[k], k
    if fmt == "coco":  # the repeated key is a reject whichever span it falls in; the head comes with span 0
        codes = [json.loads(line)["code"] for line in rejects]
        assert "duplicate_image" in codes and len(codes) >= 2
        assert (sub / "span-5-10-again").is_dir()  # image 9 met image 2's key: read again
        first = [json.loads(line)["code"] for line in (sub / "span-5-10" / "_rejects.jsonl").read_text().splitlines()]
        assert "duplicate_image" not in first  # alone, a span cannot know the key came before it
    assert read_metadata(shard_paths(sub / "span-0-1")[0])["span"] == [0, 1]


def test_span_keys_whatever_the_workers(tmp_path):
    """A span read by forked workers reports the keys they located, as one read in this process does."""
    input = _coco(tmp_path, n=40)
    one = convert(input, tmp_path / "one", ConvertOptions(format="coco", span=(4, 40)))
    two = convert(input, tmp_path / "two", ConvertOptions(format="coco", span=(4, 40), workers=2))
    assert one.span_keys == two.span_keys and len(one.span_keys) == 36
    assert _rows(tmp_path / "one") == _rows(tmp_path / "two")


def test_span_resume_and_refusals(tmp_path):
    input = _dota(tmp_path)
    out = tmp_path / "out"
    first = convert(input, out, ConvertOptions(format="dota", span=(2, 6), shard_rows=2))
    again = convert(input, out, ConvertOptions(format="dota", span=(2, 6), shard_rows=2, resume=True))
    assert _rows(out) == [r for p in first.shards for r in pq.read_table(p).to_pylist()]
    assert again.stats["scenes_written"] == first.stats["scenes_written"]
    with pytest.raises(UsageError, match="other settings"):
        convert(input, out, ConvertOptions(format="dota", span=(0, 6), shard_rows=2, resume=True))
    with pytest.raises(UsageError, match="span must be"):
        convert(input, tmp_path / "x", ConvertOptions(format="dota", span=(5, 2)))
    with pytest.raises(UsageError, match="span_taken needs a span"):
        ConvertOptions(format="dota", span_taken=("synth/images/a.png",))
    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    (yolo / "data.yaml").write_text("names: [ship]\n")
    (yolo / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    try:
        convert(yolo, tmp_path / "y", ConvertOptions(format="yolo", span=(0, 1)))
    except UsageError as exc:
        assert "span" in str(exc)
