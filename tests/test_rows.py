"""Rows built column by column (``block_table``, ``rows_table``) stay equal to the dict rows of
``scene_to_row`` (and their Parquet bytes to theirs), on made-up, foreign-text and real-sample scenes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_blocks import _scenes as block_scenes
from test_convert_fast import _scenes as fast_scenes

from d2c.blocks import SceneBlock
from d2c.classes import ClassMap
from d2c.model import Instance, Provenance, Scene
from d2c.readers import plan
from d2c.rows import ImageRecord, RowInput, block_table, rows_table, scene_to_row
from d2c.schema import SCHEMA

REPO = Path(__file__).resolve().parents[1]


# --- block_table stays what scene_to_row's dict rows give ---------------------------------------------------

def _images(scenes: list[Scene], embed: bool) -> list[ImageRecord]:
    """Reference records (some missing), or embedded bytes with non-8-bit sources and reduced scales."""
    out = []
    for k, s in enumerate(scenes):
        if not embed:
            out.append(ImageRecord(None, s.image_path, "png" if k % 2 else None, None))
            continue
        wide = k % 3 == 0
        out.append(ImageRecord(bytes([k % 256]) * (k % 7) + b"\x89PNG\r\n", s.image_path, "png", f"{k:064x}",
                               "uint16" if wide else "uint8", '{"p": [2, 98], "gamma": 0.5}' if wide else None,
                               0.5 if k % 4 == 0 else 1))
    return out


def _check_block(scenes: list[Scene], embed: bool = False, tiles: bool = False, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    captions = [[f"{len(s.instances)} ships, «{k}»", "A SAR scene."][: int(rng.integers(0, 3))]
                for k, s in enumerate(scenes)]
    template_ids = [[f"count/{j}" for j in range(len(c))] for c in captions]
    images = _images(scenes, embed)
    parent = [f"src/parent{k // 3}" if k % 3 else None for k in range(len(scenes))] if tiles else None
    offset = [(k * 100, k * 50) if k % 3 else None for k in range(len(scenes))] if tiles else None
    fast = block_table(SceneBlock.from_scenes(scenes), captions, template_ids, images,
                       parent_key=parent, tile_offset=offset)
    plain = pa.Table.from_pylist([
        scene_to_row(s, captions[k], template_ids[k], images[k], parent_key=parent[k] if tiles else None,
                     tile_offset=offset[k] if tiles else None) for k, s in enumerate(scenes)], schema=SCHEMA)
    assert fast.schema.equals(SCHEMA, check_metadata=True)
    assert fast.equals(plain)
    fast.validate(full=True)
    if scenes:
        assert fast.slice(len(scenes) - 1).to_pylist() == plain.slice(len(scenes) - 1).to_pylist()
    assert _parquet(fast) == _parquet(plain)


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _foreign_scenes() -> list[Scene]:
    """Non-ASCII class names and keys, scenes without instances or size, gsd as an int."""
    box = [(10.0, 10.0), (30.0, 10.0), (30.0, 20.0), (10.0, 20.0)]
    out = []
    for k, names in enumerate([["船", "żaglowiec"], [], ["ship"], ["船"] * 3, []]):
        insts = [Instance.from_polygon(box, n.upper(), n, difficult=j == 1) for j, n in enumerate(names)]
        out.append(Scene(key=f"źródło/obraz{k}", source="źródło", image_path=f"obraz{k}.tif", root="/r",
                         width=None if k == 4 else 64, height=None if k == 4 else 48, instances=insts,
                         gsd=3 if k == 2 else None, image_source="Gaofen-3 ✓" if k == 1 else None, split="test",
                         provenance=Provenance("adnotacje.json", None if k == 3 else f"obraz {k}"),
                         flags=["image_missing", "size_from_annotation"] if k == 4 else []))
    return out


@pytest.mark.parametrize("embed", [False, True])
@pytest.mark.parametrize("tiles", [False, True])
def test_block_table_equals_dict_rows(embed, tiles):
    _check_block(fast_scenes(60, seed=5), embed, tiles, seed=1)
    _check_block(block_scenes(45, seed=2), embed, tiles, seed=2)
    _check_block(_foreign_scenes(), embed, tiles, seed=3)
    _check_block([s for s in fast_scenes(20, seed=6) if not s.instances], embed, tiles)  # no objects at all
    _check_block(fast_scenes(1, seed=7), embed, tiles)
    _check_block([], embed, tiles)


def test_rows_table_equals_dict_rows_for_tiles():
    scenes = _foreign_scenes() + fast_scenes(12, seed=9)
    inputs = [RowInput(s, ["c"] * (k % 3), ["t"] * (k % 3), ImageRecord(b"\x00" * k, s.image_path, "png", "ab"),
                       parent_key="p/arent" if k % 2 else None, tile_offset=(k, k + 1) if k % 2 else None)
              for k, s in enumerate(scenes)]
    plain = pa.Table.from_pylist([scene_to_row(r.scene, r.captions, r.template_ids, r.image,
                                               parent_key=r.parent_key, tile_offset=r.tile_offset)
                                  for r in inputs], schema=SCHEMA)
    assert rows_table(inputs).equals(plain)


def test_block_table_on_real_sample_blocks(real_samples):
    ssdd = real_samples / "SSDD_mmrotate_DOTA_COCO" / "train" / "train.json"
    p = plan(ssdd, format="coco", class_map=ClassMap.load("ssdd"))
    blocks = [b for b in p.read_units(0, p.units, blocks=True) if isinstance(b, SceneBlock)]
    assert sum(map(len, blocks)) > 500
    for block in blocks:
        scenes = block.scenes()
        captions = [[f"{len(s.instances)} {s.key}"] for s in scenes]
        images = [ImageRecord(None, s.image_path, s.image_format, None) for s in scenes]
        fast = block_table(block, captions, [["t"]] * len(scenes), images)
        plain = pa.Table.from_pylist([scene_to_row(s, captions[k], ["t"], images[k]) for k, s in enumerate(scenes)],
                                     schema=SCHEMA)
        assert fast.equals(plain)
