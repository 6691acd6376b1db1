"""Renders shared between caption engines (one per worker): export_renders / import_renders save work and
never change a caption or template id, whatever the chunking and the order of imports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from d2c.blocks import SceneBlock
from d2c.captions import CaptionEngine, TemplateError
from d2c.captions.choice import _NONE
from d2c.readers.base import ReadOptions
from d2c.readers.coco import CocoPlan

CLASSES = ["ship", "aircraft", "car", "tank", "bridge", "harbor"]


def _coco(path: Path, n_images: int, seed: int) -> Path:
    """A COCO file shaped like the benchmark's (sizes 512-1024, about two boxes per image, six classes), with
    some crowded images (rows, clusters, many of one class) so that most attributes vary."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n_images):
        w, h = (int(v) for v in rng.integers(512, 1025, size=2))
        images.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "width": w, "height": h})
        count = int(rng.choice([0, 1, 1, 2, 2, 2, 3, 4, 7, 12]))
        main = int(rng.integers(1, 7))
        for _ in range(count):
            bw, bh = (float(v) for v in rng.uniform(8, 120, size=2))
            x, y = float(rng.uniform(0, w - bw - 1)), float(rng.uniform(0, h - bh - 1))
            cat = main if rng.random() < 0.7 else int(rng.integers(1, 7))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "iscrowd": 0,
                         "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)]})
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]}))
    return path


@pytest.fixture(scope="module")
def blocks(tmp_path_factory) -> list[SceneBlock]:
    """Eight blocks of 150 scenes read from a generated COCO file, as convert's workers read them."""
    plan = CocoPlan(_coco(tmp_path_factory.mktemp("ex") / "ann.json", 1200, seed=5), ReadOptions())
    out = [b for a in range(0, plan.units, 150) for b in plan.read_units(a, min(a + 150, plan.units), blocks=True)
           if isinstance(b, SceneBlock)]
    assert len(out) == 8 and all(len(b) == 150 for b in out)
    return out


def _plain(results: list) -> list:
    """Results comparable with ``==``: an exception as its type and message."""
    return [(type(r), str(r)) if isinstance(r, Exception) else r for r in results]


def _memo(engine: CaptionEngine) -> set[tuple]:
    """The text memo by content: (context key, wording cell, text) of every cell holding a text."""
    texts = engine._texts
    a = texts._keys.a[: len(texts._context_keys)]
    rows, cols = np.nonzero(a >= 0)
    cells = zip(rows.tolist(), cols.tolist(), strict=True)
    return {(texts._context_keys[r], c, texts.text(a[r, c])) for r, c in cells}


def test_imported_renders_are_used_and_change_nothing(blocks):
    a, b, c = (CaptionEngine(seed=7) for _ in range(3))
    a.caption_block(blocks[0])
    blob = a.export_renders()
    assert blob and a.export_renders() == b""  # only what is new since the previous call
    added = b.import_renders(blob)
    assert added == a._texts.rendered and b._texts.rendered == 0 and b.cache_size == 0
    assert b.export_renders() == b""  # imported renders are not exported again
    assert b.caption_block(blocks[1]) == c.caption_block(blocks[1])
    assert 0 < b._texts.rendered < c._texts.rendered  # b rendered only what a had not
    # the other direction: b's own renders go back to a; a's next chunk is as a fresh engine's
    back = b.export_renders()
    assert a.import_renders(back) > 0
    assert a.caption_block(blocks[2]) == CaptionEngine(seed=7).caption_block(blocks[2])


def test_repeated_imports_add_nothing_and_the_memo_equals_the_exporter_s(blocks):
    a, b = CaptionEngine(seed=1), CaptionEngine(seed=1)
    a.caption_block(blocks[3])
    blob = a.export_renders()
    assert b.import_renders(blob) > 0
    assert b.import_renders(blob) == 0 and a.import_renders(blob) == 0  # idempotent; one's own renders
    assert b.import_renders(b"") == 0 and b.import_renders(b"not a blob") == 0
    # every cell a render serves (the congruent synonym indices too) came across, and nothing else
    assert _memo(b) == _memo(a)
    assert b.caption_block(blocks[3]) == CaptionEngine(seed=1).caption_block(blocks[3])
    assert b._texts.rendered == 0  # every wording the chunk drew was served by the import


def test_congruent_synonym_indices_are_served_after_import(blocks):
    """A render also serves the synonym indices its filters cannot tell apart: those cells come across too,
    so an engine with other draws over the same contexts renders less, and captions as a fresh engine."""
    a = CaptionEngine(seed=2)
    a.caption_block(blocks[4])
    texts = a._texts
    cells = np.count_nonzero(texts._keys.a[: len(texts._context_keys)] >= 0)
    assert cells > 1.5 * texts.rendered  # renders do serve other cells
    b, c = CaptionEngine(seed=3), CaptionEngine(seed=3)
    assert b.import_renders(a.export_renders()) == texts.rendered
    assert len(_memo(b)) == cells
    assert b.caption_block(blocks[4]) == c.caption_block(blocks[4])
    assert b._texts.rendered < c._texts.rendered


def test_blobs_from_engines_set_up_differently_are_ignored(blocks, tmp_path):
    (tmp_path / "extra.j2").write_text(
        "{#-\nid: size.extra\nfamily: size\nrequires: [main]\n-#}\n{{ main|quantity|capfirst }} here.\n"
    )
    base = CaptionEngine(seed=0)
    base.caption_block(blocks[0])
    blob = base.export_renders()
    others = [CaptionEngine(tmp_path, seed=0), CaptionEngine(seed=0, captions_per_image=3),
              CaptionEngine(seed=0, max_words=8), CaptionEngine(seed=0, count_threshold=4)]
    for other in others:
        assert other.import_renders(blob) == 0 and len(other._texts._context_keys) == 0
        other.caption_block(blocks[1])
        assert base.import_renders(other.export_renders()) == 0
    assert CaptionEngine(seed=99).import_renders(blob) > 0  # the seed only chooses among the same texts
    assert base.caption_block(blocks[1]) == CaptionEngine(seed=0).caption_block(blocks[1])


def test_template_failures_are_not_exported_and_still_reported(blocks, tmp_path):
    (tmp_path / "div.j2").write_text(
        "{#-\nid: count.div\nfamily: count\nrequires: [total]\n-#}\n{{ 12 // (total[0] - 2) }} per pair.\n"
    )
    a, b = CaptionEngine(tmp_path, seed=4), CaptionEngine(tmp_path, seed=4)
    first = a.caption_block(blocks[5])
    assert any(isinstance(r, TemplateError) for r in first)
    assert any(isinstance(r, tuple) and "count.div" in r[1] for r in first)
    assert a._texts._failures
    assert b.import_renders(a.export_renders()) == a._texts.rendered  # renders only, no failure
    assert not b._texts._failures and (b._texts._keys.a[: len(b._texts._context_keys)] != _NONE).any()
    want = _plain(CaptionEngine(tmp_path, seed=4).caption_block(blocks[6]))
    assert _plain(b.caption_block(blocks[5])) == _plain(first)  # the failures are found again
    assert _plain(b.caption_block(blocks[6])) == want


def test_scene_by_scene_captions_use_the_same_memo(blocks):
    a, b = CaptionEngine(seed=5), CaptionEngine(seed=5)
    a.caption_block(blocks[2])
    b.import_renders(a.export_renders())
    scenes = blocks[2].scenes()[:20]
    fresh = CaptionEngine(seed=5)
    assert [b.caption(s) for s in scenes] == [fresh.caption(s) for s in scenes]
    assert b.caption_many(scenes[:5]) == fresh.caption_many(scenes[:5])
    assert b._texts.rendered == 0  # caption and caption_many read the imported texts


def test_dropped_memo_tables_and_imports_change_nothing(blocks, monkeypatch):
    import d2c.captions.engine as E

    a = CaptionEngine(seed=6)
    a.caption_block(blocks[0])
    blob = a.export_renders()
    want = CaptionEngine(seed=6).caption_block(blocks[1])
    monkeypatch.setattr(E, "_TABLE_LIMIT", 1)  # the next chunk starts from empty tables
    b = CaptionEngine(seed=6)
    b.caption_block(blocks[7])
    assert b.import_renders(blob) > 0
    assert b.caption_block(blocks[1]) == want
    # renders made before the tables were dropped are not exported (their ids are gone); the others are
    assert CaptionEngine(seed=6).import_renders(b.export_renders()) == b._texts.rendered > 0


@pytest.mark.parametrize("lag", [1, 2])
def test_two_engines_exchanging_caption_as_one(blocks, lag):
    """Blocks split alternately between two engines that export after every block and import the other's
    blobs before every block (``lag``: the other's newest ``lag - 1`` blobs are still on their way), as two
    convert workers would: the captions are one engine's, with fewer renders than without exchange."""
    one = CaptionEngine(seed=3)
    want = [one.caption_block(b) for b in blocks]
    engines = [CaptionEngine(seed=3), CaptionEngine(seed=3)]
    sent: list[list[bytes]] = [[], []]  # blobs each engine exported, in order
    taken = [0, 0]  # how many of the other's blobs each engine imported
    got = []
    for i, block in enumerate(blocks):
        k = i % 2
        ready = sent[1 - k][: max(0, len(sent[1 - k]) - (lag - 1))]
        for blob in ready[taken[k]:]:
            engines[k].import_renders(blob)
        taken[k] = len(ready)
        got.append(engines[k].caption_block(block))
        sent[k].append(engines[k].export_renders())
    assert got == want
    rendered = sum(e._texts.rendered for e in engines)
    alone = [CaptionEngine(seed=3), CaptionEngine(seed=3)]
    for i, block in enumerate(blocks):
        alone[i % 2].caption_block(block)
    assert one._texts.rendered <= rendered < sum(e._texts.rendered for e in alone)
    if lag == 1:
        assert rendered == one._texts.rendered  # every render is made once
