"""Scenes as columns (d2c/blocks.py): a block holds the same scenes as the Scene objects it stands for, a
COCO plan read as blocks gives the items a plain read gives, and annotation-only conversion through blocks
writes byte for byte what conversion through Scenes writes (real samples, hostile corpus, mixed inputs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import d2c.convert_worker as worker
from d2c.blocks import SceneBlock, concat
from d2c.captions import CaptionEngine
from d2c.classes import ClassMap
from d2c.convert import convert
from d2c.model import Instance, Provenance, Reject, Scene
from d2c.options import ConvertOptions
from d2c.readers import plan
from d2c.readers.plan import plan_items
from d2c.shards import shard_paths

BAD = Path(__file__).parent / "data" / "bad"


def _scenes(n: int, seed: int = 0) -> list[Scene]:
    """Varied scenes: 0-4 objects (boxes, rotated boxes, pentagons), sizes or none, gsd, flags, splits."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        insts = []
        for j in range(int(rng.integers(0, 5))):
            cx, cy = (float(v) for v in rng.uniform(30, 170, size=2))
            pts = [(cx + 9 * np.cos(t), cy + 5 * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 4 + j % 2, False)]
            cls = ("ship", "tank", "car")[int(rng.integers(0, 3))]
            insts.append(Instance.from_polygon(pts, cls.upper(), cls, difficult=j == 2, record=f"a {k}.{j}"))
        out.append(Scene(key=f"s/i{k}", source="s", image_path=f"i{k}.png", root="/r",
                         width=None if k % 5 == 3 else 200, height=None if k % 5 == 3 else 180, instances=insts,
                         gsd=0.5 if k % 4 == 1 else None, image_source="Sentinel-1" if k % 3 == 0 else None,
                         split="val" if k % 2 else None, provenance=Provenance("a.json", f"image {k}"),
                         flags=["image_missing"] if k % 3 == 1 else [], image_format="png" if k % 2 else None,
                         clipped=k % 2))
    return out


def _same_scene(a: Scene, b: Scene) -> bool:
    fields = [f for f in a.__slots__ if f != "instances"]
    if any(getattr(a, f) != getattr(b, f) for f in fields) or len(a.instances) != len(b.instances):
        return False
    return all(np.array_equal(i.polygon, j.polygon) and (i.hbb, i.obb, i.area, i.category, i.raw_category,
               i.difficult, i.record) == (j.hbb, j.obb, j.area, j.category, j.raw_category, j.difficult, j.record)
               and type(i.difficult) is type(j.difficult) for i, j in zip(a.instances, b.instances, strict=True))


def _same_items(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        type(x) is type(y) and (x == y if isinstance(x, Reject) else _same_scene(x, y)) for x, y in zip(a, b, strict=True))


def test_block_round_trip_take_and_concat():
    scenes = _scenes(40)
    block = SceneBlock.from_scenes(scenes)
    assert len(block) == 40 and block.num_instances == sum(len(s.instances) for s in scenes)
    assert _same_items(block.scenes(), scenes)
    rows = [0, 3, 4, 17, 39]
    assert _same_items(block.take(rows).scenes(), [scenes[k] for k in rows])
    assert len(block.take([])) == 0 and block.take([]).num_instances == 0
    joined = concat([block.take([0, 1]), SceneBlock.from_scenes([]), block.take([5, 6, 7])])
    assert _same_items(joined.scenes(), [scenes[k] for k in (0, 1, 5, 6, 7)])
    assert _same_items(SceneBlock.from_scenes([]).scenes(), [])


def test_caption_block_equals_caption_many():
    scenes = _scenes(120, seed=3)
    a, b = CaptionEngine(seed=4), CaptionEngine(seed=4)
    assert a.caption_block(SceneBlock.from_scenes(scenes)) == b.caption_many(scenes)
    few = scenes[:5]  # the small-batch path
    assert a.caption_block(SceneBlock.from_scenes(few)) == b.caption_many(few)


def _mixed_coco(root: Path) -> Path:
    """A COCO file mixing what blocks take (plain boxes and 4-point polygons, found and missing images)
    with what they leave to Scenes: RLE, 5-point polygons, crowds, zero-area and outside boxes, clipped
    boxes, unknown categories, duplicate keys, images without annotations."""
    (root / "images").mkdir(parents=True)
    for k in (1, 4, 7):
        Image.new("L", (120, 100), 30).save(root / "images" / f"{k:03d}.png")
    images = [{"id": k, "file_name": f"{k:03d}.png", "width": 120, "height": 100} for k in range(1, 13)]
    images.append({"id": 13, "file_name": "sub/../012.png", "width": 120, "height": 100})  # the key of image 12
    images.append({"id": 14, "file_name": "014.png", "width": 120, "height": 100})
    box = {"bbox": [10, 10, 30, 20], "category_id": 1}
    anns = [{**box, "image_id": 1}, {**box, "image_id": 1, "category_id": 2, "difficult": 1},
            {"image_id": 2, "category_id": 1, "segmentation": [[5, 5, 40, 8, 38, 30, 4, 28]]},
            {**box, "image_id": 3, "segmentation": {"size": [100, 120], "counts": [500, 20, 80, 20, 11380]}},
            {"image_id": 5, "category_id": 2, "segmentation": [[5, 5, 40, 8, 38, 30, 20, 40, 4, 28]]},
            {**box, "image_id": 6, "iscrowd": 1}, {**box, "image_id": 7, "bbox": [10, 10, 0, 20]},
            {**box, "image_id": 8, "bbox": [500, 500, 10, 10]}, {**box, "image_id": 9, "bbox": [100, 90, 40, 30]},
            {**box, "image_id": 10, "category_id": 9}, {**box, "image_id": 11}, {**box, "image_id": 12},
            {**box, "image_id": 13}, {**box, "image_id": 14, "category_id": 2}, {**box, "image_id": 99}]
    for k, a in enumerate(anns):
        a["id"] = k + 1
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "ship"}, {"id": 2, "name": "tank"}]}))
    return path


def _inputs(real_samples: Path, tmp_path: Path) -> list[tuple[Path, dict]]:
    bad = tmp_path / "bad"
    shutil.copytree(BAD / "coco", bad)
    ssdd = real_samples / "SSDD_mmrotate_DOTA_COCO" / "train" / "train.json"
    return [(ssdd, {"class_map": ClassMap.load("ssdd")}), (ssdd, {}), (_mixed_coco(tmp_path / "mixed"), {}),
            *((p, {}) for p in sorted(bad.glob("*.json")))]


def test_coco_plan_read_as_blocks_gives_the_same_items(real_samples, tmp_path):
    blocks = 0
    for path, opts in _inputs(real_samples, tmp_path):
        p = plan(path, format="coco", **opts)
        expected = list(plan_items(p))
        got = list(p.head)
        for start in range(0, p.units, 5):  # spans, as workers read them
            for item in p.read_units(start, min(start + 5, p.units), blocks=True):
                blocks += isinstance(item, SceneBlock)
                got.extend(item.scenes() if isinstance(item, SceneBlock) else [item])
        assert _same_items(got, expected), path
    assert blocks >= 10  # blocks were really read (SSDD with its class map, the mixed file)


@pytest.mark.timeout(60)
def test_conversion_through_blocks_writes_what_scenes_write(real_samples, tmp_path, monkeypatch):
    for k, (path, opts) in enumerate(_inputs(real_samples, tmp_path)[:4]):
        outs = []
        for mode, workers in (("blocks", 1), ("blocks", 2), ("scenes", 1)):
            if mode == "scenes":
                monkeypatch.setattr(worker, "uses_blocks", lambda job: False)
            out = tmp_path / f"out{k}-{mode}-{workers}"
            convert(path, out, ConvertOptions(format="coco", workers=workers, shard_rows=9, seed=3,
                                              progress=False, **opts))
            outs.append(out)
            monkeypatch.undo()
        names = [[p.name for p in shard_paths(o)] for o in outs]
        assert names[0] == names[1] == names[2], path
        for name in [*names[0], "_manifest.json", "_stats.json", "_rejects.jsonl"]:
            data = {(o / name).read_bytes() for o in outs}
            assert len(data) == 1, (path, name)
    stats = json.loads((tmp_path / "out0-blocks-1" / "_stats.json").read_text())
    assert stats["scenes_written"] > 500  # SSDD with its class map: real rows went through blocks


def test_blocks_with_rejected_scenes_write_what_scenes_write(tmp_path, monkeypatch):
    """A template that fails for tanks rejects those scenes (caption_error) inside a block: the block's
    other scenes are still written, counted as the Scene path counts them."""
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    (tpl / "bad.j2").write_text("{#-\nid: user.bad\nfamily: count\nweight: 1.0\nrequires: [main]\n-#}\n"
                                "{{ (1 // 0) if main[0] == 'tank' else 'A SAR image of ships.' }}\n")
    path = _mixed_coco(tmp_path / "mixed")
    outs = []
    for mode in ("blocks", "scenes"):
        if mode == "scenes":
            monkeypatch.setattr(worker, "uses_blocks", lambda job: False)
        out = tmp_path / mode
        convert(path, out, ConvertOptions(format="coco", templates=tpl, include_default_templates=False,
                                          progress=False))
        outs.append(out)
    rejects = [json.loads(line) for line in (outs[0] / "_rejects.jsonl").read_text().splitlines()]
    assert [r["scene_key"] for r in rejects if r["code"] == "caption_error"] == ["ann/005", "ann/014"]
    for name in [*(p.name for p in shard_paths(outs[0])), "_manifest.json", "_stats.json", "_rejects.jsonl"]:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
