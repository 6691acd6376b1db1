"""Reading in the workers (``--workers N`` with a reader that can split its input, see d2c/readers/plan.py)
gives what reading in the main process gives: the same items in the same order, and byte-identical shards,
manifest, stats and rejects, on the real samples and on the hostile-input corpus."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import d2c
from d2c.convert import convert
from d2c.options import ConvertOptions
from d2c.readers import plan
from d2c.readers.plan import plan_items
from d2c.shards import shard_paths

BAD = Path(__file__).parent / "data" / "bad"


def _real_inputs(real_samples: Path) -> list[tuple[Path, str]]:
    ssdd = real_samples / "SSDD_mmrotate_DOTA_COCO" / "train"
    return [(real_samples / "SSDD_VOC_labelImg", "voc"), (real_samples / "DOTA_v1_devkit_example", "dota"),
            (ssdd, "dota"), (ssdd / "train.json", "coco")]


def _bad_inputs(tmp_path: Path) -> list[tuple[Path, str]]:
    root = tmp_path / "bad"
    shutil.copytree(BAD, root)
    return [(root / "dota", "dota"), (root / "voc", "voc"), *((p, "coco") for p in sorted((root / "coco").glob("*.json")))]


def _units_in_spans(p, spans: list[int]) -> list:
    """Everything a plan reads, its units read in spans of the given sizes, in turn."""
    items, start, k = list(p.head), 0, 0
    while start < p.units:
        stop = min(start + spans[k % len(spans)], p.units)
        items.extend(p.read_units(start, stop))
        start, k = stop, k + 1
    return items


def _same_items(a: list, b: list) -> bool:
    """Equal Scenes (Instance equality is geometric) and Rejects, in the same order."""
    return len(a) == len(b) and all(type(x) is type(y) and x == y for x, y in zip(a, b, strict=True))


def test_plans_read_what_read_reads(real_samples, tmp_path):
    for path, fmt in [*_real_inputs(real_samples), *_bad_inputs(tmp_path)]:
        p = plan(path, format=fmt)
        if p is None:  # a reader may not split a given input; read() covers it
            continue
        expected = list(d2c.read(path, format=fmt))
        assert expected, path
        assert _same_items(list(plan_items(p)), expected), path
        assert _same_items(_units_in_spans(p, [1, 3, 2]), expected), path


@pytest.mark.timeout(60)
def test_reading_in_workers_gives_identical_output(real_samples, tmp_path):
    real = _real_inputs(real_samples)
    inputs = [*real, *_bad_inputs(tmp_path)[:3]]
    planned = 0
    for k, (path, fmt) in enumerate(inputs):
        planned += plan(path, format=fmt) is not None
        outs = []
        for w in (1, 2):
            out = tmp_path / f"out{k}-{w}"
            # SSDD's COCO has no class map here: all its scenes partial
            convert(path, out, ConvertOptions(format=fmt, workers=w, shard_rows=7, progress=False, seed=5,
                                              keep_partial_scenes=k % 2 == 1))
            outs.append(out)
        a, b = shard_paths(outs[0]), shard_paths(outs[1])
        assert [p.name for p in a] == [p.name for p in b] and (a or k >= len(real)), path
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True)), path
        for name in ("_manifest.json", "_stats.json", "_rejects.jsonl"):
            assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), (path, name)
    assert planned >= 4  # DOTA, VOC and COCO inputs really went through the workers' reading


def _coco_with_repeated_keys(path: Path) -> None:
    """Twelve images; images 7 and 10 name the files of images 2 and 5 again (same scene keys, other ids),
    and image 4 the file of image 3 (the same span of three units)."""
    import json

    names = [f"img{i}.png" for i in range(12)]
    names[7], names[10], names[4] = names[2], names[5], names[3]
    images = [{"id": 100 + i, "file_name": n, "width": 64, "height": 64} for i, n in enumerate(names)]
    anns = [{"id": k, "image_id": 100 + k % 12, "category_id": 1, "bbox": [1 + k, 2, 10, 12]} for k in range(30)]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}))


@pytest.mark.parametrize("span", [3, 5])
def test_repeated_keys_across_spans_are_rejected_whatever_the_workers(tmp_path, monkeypatch, span):
    from d2c import convert_worker

    path = tmp_path / "dup.json"
    _coco_with_repeated_keys(path)
    expected = [r for r in d2c.read(path, format="coco") if getattr(r, "code", None) == "duplicate_image"]
    assert [r.record for r in expected] == ["image 104", "image 107", "image 110"]
    monkeypatch.setattr(convert_worker, "CHUNK_BLOCKS", span)  # spans of a few units: the repeats cross spans
    monkeypatch.setattr(convert_worker, "CHUNK_REFERENCE", span)
    outs = []
    for w in (1, 2):
        out = tmp_path / f"out{w}"
        convert(path, out, ConvertOptions(format="coco", workers=w, shard_rows=4, progress=False))
        outs.append(out)
        rejects = [line for line in (out / "_rejects.jsonl").read_text().splitlines() if "duplicate_image" in line]
        assert len(rejects) == 3 and all("a second image has the key dup/img" in r for r in rejects)
    for name in ("_manifest.json", "_stats.json", "_rejects.jsonl"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    a, b = shard_paths(outs[0]), shard_paths(outs[1])
    assert len(a) == 3 and all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(("units", "size", "workers"), [(0, 4, 2), (3, 4096, 2), (10, 4, 1), (10, 4, 2), (116598, 4096, 2)])
def test_spans_cover_the_units_and_shrink_at_the_end_for_several_workers(units, size, workers):
    from d2c.convert_worker import _spans

    spans = _spans(units, size, workers)
    assert [a for a, _ in spans] == [0, *(b for _, b in spans[:-1])][: len(spans)]
    assert (spans[-1][1] if spans else 0) == units
    assert all(0 < b - a <= size for a, b in spans)
    if workers > 1 and units > workers * size:  # the tail in quarter spans: the workers end together
        assert {b - a for a, b in spans[-4 * workers + 1 :]} <= {size // 4, units % (size // 4) or size // 4}
    else:
        assert all(b - a == size for a, b in spans[:-1])
