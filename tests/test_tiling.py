"""Tiling large scenes: windows, box splitting at tile borders, the visibility policy, keys and offsets,
seeded negatives, counts per tile, and windowed reads that keep memory bounded."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from d2c.errors import UsageError
from d2c.imageio import decode_image, stretch_to_rgb
from d2c.model import Instance, Provenance, Scene
from d2c.options import ConvertOptions
from d2c.rows import scene_to_row
from d2c.tiling import (
    PARTIAL_DROPPED_FLAG,
    TILE_FLAG,
    Window,
    WindowReader,
    axis_starts,
    read_window,
    tile_image_record,
    tile_key,
    tile_scene,
    tile_windows,
)


def make_scene(instances: list[Instance], width: int | None = 2000, height: int | None = 1100, root: str = "/nowhere") -> Scene:
    return Scene(key="big/scenes/s1", source="big", image_path="scenes/s1.tif", root=root, width=width,
                 height=height, instances=instances, provenance=Provenance("labels/s1.txt"))


def tiles_by_key(tiled) -> dict[str, Scene]:
    return {t.key: t for t, _ in tiled}


def write_pattern_tiff(path: Path, size: int) -> None:
    """A uint16 GeoTIFF whose sample at (x, y) is (x + 3 * y) % 65536, written strip by strip."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window as RioWindow

    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint16",
               "tiled": True, "blockxsize": 256, "blockysize": 256, "crs": "EPSG:32631",
               "transform": from_origin(500000.0, 4000000.0, 10.0, 10.0)}
    with rasterio.open(path, "w", **profile) as ds:
        xs = np.arange(size, dtype=np.int64)
        for y0 in range(0, size, 512):
            ys = np.arange(y0, min(y0 + 512, size), dtype=np.int64)
            strip = ((xs[None, :] + 3 * ys[:, None]) % 65536).astype(np.uint16)
            ds.write(strip, 1, window=RioWindow(0, y0, size, len(ys)))


def expected_pattern(win: Window) -> np.ndarray:
    xs = np.arange(win.x, win.x + win.width, dtype=np.int64)
    ys = np.arange(win.y, win.y + win.height, dtype=np.int64)
    return ((xs[None, :] + 3 * ys[:, None]) % 65536).astype(np.uint16)


def test_windows_step_by_stride_and_end_flush_with_the_edge():
    assert axis_starts(2000, 1024, 200) == [0, 824, 976]
    assert axis_starts(1100, 1024, 200) == [0, 76]
    assert axis_starts(1024, 1024, 200) == [0]
    assert axis_starts(500, 1024, 200) == [0]
    wins = tile_windows(2000, 1100, 1024, 200)
    assert [w.offset for w in wins] == [(0, 0), (824, 0), (976, 0), (0, 76), (824, 76), (976, 76)]
    assert all(w.x + w.width <= 2000 and w.y + w.height <= 1100 for w in wins)
    assert max(w.x + w.width for w in wins) == 2000 and max(w.y + w.height for w in wins) == 1100
    covered = np.zeros((1100, 2000), dtype=bool)
    for w in wins:
        covered[w.y : w.y + w.height, w.x : w.x + w.width] = True
    assert covered.all()
    assert [(w.width, w.height) for w in tile_windows(500, 300, 1024, 200)] == [(500, 300)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"tile": 8}, "--tile"), ({"overlap": 1024}, "--overlap"), ({"overlap": -1}, "--overlap"),
     ({"min_visible": 0.0}, "min_visible"), ({"below": "keep"}, "below"), ({"negative_rate": 1.5}, "negative_rate")],
)
def test_impossible_settings_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        tile_scene(make_scene([]), **kwargs)


def test_box_split_at_a_tile_border_is_clipped_into_tile_pixels():
    # 100 x 50 box straddling x = 1024 (the right edge of tile (0, 0)): 24% inside tile 0, all of it in
    # tile (824, 0); a 60 x 40 quad given as a polygon, half inside tile (0, 0).
    box = Instance.from_hbb(1000, 100, 1100, 150, "ship", record="line 3")
    quad = Instance.from_polygon([(994, 500), (1054, 500), (1054, 540), (994, 540)], "ship")
    tiled = tile_scene(make_scene([box, quad]), tile=1024, overlap=200, negative_rate=1.0)
    tiles = tiles_by_key(tiled)
    first = tiles["big/scenes/s1__0_0"]
    clipped = [i for i in first.instances if i.hbb[1] == 100.0]
    assert len(clipped) == 1
    assert clipped[0].hbb == (1000.0, 100.0, 1024.0, 150.0)
    assert clipped[0].area == pytest.approx(24 * 50)
    assert clipped[0].difficult is True  # 24 % < 70 %: kept, marked difficult (default policy)
    assert clipped[0].record == "line 3"
    quad_part = [i for i in first.instances if i.hbb[1] == 500.0][0]
    assert quad_part.hbb == (994.0, 500.0, 1024.0, 540.0) and quad_part.difficult is True  # 50 %
    second = tiles["big/scenes/s1__824_0"]
    assert sorted(i.hbb for i in second.instances) == [(170.0, 500.0, 230.0, 540.0), (176.0, 100.0, 276.0, 150.0)]
    assert not any(i.difficult for i in second.instances)
    assert tiled.rejects == []


def test_min_visible_policy_keep_difficult_or_drop():
    # 100 px wide box with 80 px inside tile (0, 0) (x 944..1044): above 0.7 in tile 0, 20 % in the last one.
    inst = Instance.from_hbb(944, 300, 1044, 340, "ship")
    keep = tiles_by_key(tile_scene(make_scene([inst], width=2000, height=900), min_visible=0.7, negative_rate=0))
    assert keep["big/scenes/s1__0_0"].instances[0].difficult is False
    assert keep["big/scenes/s1__0_0"].instances[0].hbb == (944.0, 300.0, 1024.0, 340.0)
    assert keep["big/scenes/s1__976_0"].instances[0].difficult is True
    # a stricter threshold makes the 80 % part difficult too
    strict = tiles_by_key(tile_scene(make_scene([inst], width=2000, height=900), min_visible=0.9, negative_rate=0))
    assert strict["big/scenes/s1__0_0"].instances[0].difficult is True

    drop = tile_scene(make_scene([inst], width=2000, height=900), below="drop", negative_rate=0)
    tiles = tiles_by_key(drop)
    assert [i.hbb for i in tiles["big/scenes/s1__0_0"].instances] == [(944.0, 300.0, 1024.0, 340.0)]
    assert tiles["big/scenes/s1__824_0"].instances[0].hbb == (120.0, 300.0, 220.0, 340.0)
    # the last tile held only a 20 % sliver that was dropped: not kept, not a negative
    assert "big/scenes/s1__976_0" not in tiles and drop.partial_skipped == 1
    assert drop.rejects == []


def test_object_never_visible_enough_is_rejected_once():
    # 1500 px long object in 1024 px tiles: at most 68 % inside any tile
    long_obj = Instance.from_hbb(250, 10, 1750, 60, "oil_platform", record="line 9")
    outside = Instance.from_hbb(5000, 10, 5010, 20, "ship", record="line 10")
    tiled = tile_scene(make_scene([long_obj, outside], width=2000, height=600), below="drop", negative_rate=1)
    codes = sorted((r.code, r.record, r.instances) for r in tiled.rejects)
    assert codes == [("tile_dropped", "line 9", 1), ("tile_outside", "line 10", 1)]
    assert all(r.scene_key == "big/scenes/s1" and r.file == "labels/s1.txt" for r in tiled.rejects)
    assert "70%" in tiled.rejects[0].reason or "70%" in tiled.rejects[1].reason
    # each tile held only parts that were dropped: none is kept, none counts as a negative
    assert len(tiled) == 0 and tiled.partial_skipped == 3


def test_keys_offsets_rows_and_counts_describe_the_tile():
    ships = [Instance.from_hbb(10 + 30 * i, 10, 30 + 30 * i, 30, "ship") for i in range(3)]
    tank = Instance.from_hbb(1500, 800, 1540, 840, "storage_tank")
    parent = make_scene([*ships, tank], width=2000, height=1100)
    parent.add_flag("image_found_by_stem")
    tiled = tile_scene(parent, negative_rate=1.0)
    assert len(tiled) == 6
    from d2c.rows import ImageRecord

    rows = {}
    for tile, win in tiled:
        assert tile.key == tile_key(parent.key, win.x, win.y) == f"{parent.key}__{win.x}_{win.y}"
        assert (tile.width, tile.height) == (win.width, win.height) == (1024, 1024)
        assert tile.source == "big" and tile.image_path == parent.image_path
        assert tile.flags[:2] == ["image_found_by_stem", TILE_FLAG]
        rec = ImageRecord(bytes=None, path=tile.image_path, format="tiff", sha256=None)
        rows[tile.key] = scene_to_row(tile, [], [], rec, parent_key=parent.key, tile_offset=win.offset)
    top_left = rows["big/scenes/s1__0_0"]
    assert top_left["parent_key"] == "big/scenes/s1" and top_left["tile_offset"] == [0, 0]
    assert top_left["counts"] == [{"category": "ship", "count": 3}]
    bottom_right = rows["big/scenes/s1__976_76"]
    assert bottom_right["tile_offset"] == [976, 76]
    assert bottom_right["counts"] == [{"category": "storage_tank", "count": 1}]
    assert bottom_right["objects"][0]["hbb"] == [524.0, 724.0, 564.0, 764.0]
    assert rows["big/scenes/s1__824_0"]["counts"] == [{"category": "storage_tank", "count": 1}]
    assert parent.num_instances == 4 and parent.width == 2000  # the parent is left untouched


def test_negatives_kept_at_a_seeded_rate():
    empty = make_scene([], width=5000, height=5000)
    small = make_scene([], width=1000, height=1000)
    runs = {rate: tile_scene(small, tile=100, overlap=0, negative_rate=rate, seed=7) for rate in (0.0, 1.0)}
    assert len(runs[0.0]) == 0 and runs[0.0].negatives_skipped == 100
    assert len(runs[1.0]) == 100 and runs[1.0].negatives_kept == 100
    runs[0.3] = tile_scene(empty, tile=100, overlap=0, negative_rate=0.3, seed=7)
    kept = len(runs[0.3])
    assert 650 <= kept <= 850, kept
    again = tile_scene(empty, tile=100, overlap=0, negative_rate=0.3, seed=7)
    assert [t.key for t, _ in again] == [t.key for t, _ in runs[0.3]]
    other = tile_scene(empty, tile=100, overlap=0, negative_rate=0.3, seed=8)
    assert [t.key for t, _ in other] != [t.key for t, _ in runs[0.3]]
    # a tile with objects is always kept, whatever the rate
    one = tile_scene(make_scene([Instance.from_hbb(10, 10, 20, 20, "ship")], 5000, 5000), tile=100, overlap=0,
                     negative_rate=0.0)
    assert [t.key for t, _ in one] == ["big/scenes/s1__0_0"]


def test_windowed_reads_of_a_big_uint16_geotiff_keep_memory_bounded(tmp_path, monkeypatch):
    import rasterio.io

    size = 6000
    path = tmp_path / "scenes" / "s1.tif"
    path.parent.mkdir()
    write_pattern_tiff(path, size)
    scene = make_scene([Instance.from_hbb(5990, 5990, 5999, 5999, "ship")], width=None, height=None,
                       root=str(tmp_path))
    calls = []
    real_read = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("window"))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    tiled = tile_scene(scene, tile=1024, overlap=200, negative_rate=1.0)
    assert len(tiled) == 64 and tiled.tiles[-1][1] == Window(4976, 4976, 1024, 1024)
    whole = size * size * 2
    tracemalloc.start()
    try:
        with WindowReader(path) as reader:
            for tile, win in tiled:
                rec = tile_image_record(tile, win, reader, mode="reference")
                assert rec.bytes is None and rec.orig_dtype == "uint16" and rec.path == "scenes/s1.tif"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < whole / 8, f"peak {peak} bytes for a {whole}-byte raster"
    assert len(calls) == 64 and all(c is not None for c in calls)
    assert {(c.width, c.height) for c in calls} == {(1024, 1024)}
    # the pixels are those of the window
    last_tile, last_win = tiled.tiles[-1]
    np.testing.assert_array_equal(read_window(path, last_win), expected_pattern(last_win))
    rec = tile_image_record(last_tile, last_win, WindowReader(path), mode="embed")
    want, _ = stretch_to_rgb(expected_pattern(last_win))
    np.testing.assert_array_equal(decode_image(rec.bytes), want)
    assert rec.format == "png" and '"orig_dtype": "uint16"' in rec.stretch
    assert last_tile.instances[0].hbb == (1014.0, 1014.0, 1023.0, 1023.0)


def test_window_outside_the_image_is_refused(tmp_path):
    path = tmp_path / "small.tif"
    write_pattern_tiff(path, 300)
    from d2c.errors import D2CError

    with pytest.raises(D2CError, match="outside the 300x300"):
        read_window(path, Window(200, 0, 200, 100))
    small = read_window(path, Window(10, 20, 30, 40))
    assert small.shape == (40, 30) and small.dtype == np.uint16
    np.testing.assert_array_equal(small, expected_pattern(Window(10, 20, 30, 40)))


def test_tile_with_a_dropped_part_is_flagged():
    cut = Instance.from_hbb(1000, 100, 1100, 150, "ship")  # 24 % inside tile (0, 0)
    whole = Instance.from_hbb(100, 100, 120, 120, "ship")
    tiles = tiles_by_key(tile_scene(make_scene([cut, whole]), below="drop", negative_rate=0))
    first = tiles["big/scenes/s1__0_0"]
    assert [i.hbb for i in first.instances] == [(100.0, 100.0, 120.0, 120.0)]
    assert PARTIAL_DROPPED_FLAG in first.flags
    assert PARTIAL_DROPPED_FLAG not in tiles["big/scenes/s1__824_0"].flags


def test_tiled_rows_give_convert_one_captioned_row_per_tile(tmp_path):
    from d2c.captions import CaptionEngine
    from d2c.rows import scene_from_row
    from d2c.tiling import tiled_rows

    (tmp_path / "scenes").mkdir()
    write_pattern_tiff(tmp_path / "scenes" / "s1.tif", 1500)
    ships = [Instance.from_hbb(20 + 40 * i, 20, 50 + 40 * i, 35, "ship", record=f"line {i}") for i in range(5)]
    long_obj = Instance.from_hbb(20, 700, 1470, 760, "ship", record="line 9")  # at most 69 % in a tile
    scene = make_scene([*ships, long_obj], width=1500, height=1500, root=str(tmp_path))
    engine = CaptionEngine(captions_per_image=2, seed=3)
    rows, rejects = tiled_rows(scene, engine.caption, tile=1024, overlap=200, below="drop", negative_rate=0,
                               seed=3, mode="embed")
    assert [(r.code, r.record) for r in rejects] == [("tile_dropped", "line 9")]
    assert [r["key"] for r in rows] == ["big/scenes/s1__0_0"]  # the other tiles held nothing or only a cut
    row = rows[0]
    assert row["parent_key"] == scene.key and row["tile_offset"] == [0, 0]
    assert row["counts"] == [{"category": "ship", "count": 5}]
    assert "tile" in row["flags"] and PARTIAL_DROPPED_FLAG in row["flags"]
    assert decode_image(row["image"]["bytes"]).shape == (1024, 1024, 3)
    tile = scene_from_row(row)
    assert [c.text for c in engine.caption(tile)] == row["captions"]  # captions are the tile's
    # the image must be there in embed mode: one reject for the whole scene, with all its objects
    gone = make_scene(ships, width=1500, height=1500, root=str(tmp_path / "nothing"))
    rows, rejects = tiled_rows(gone, engine.caption, tile=1024, mode="embed")
    assert rows == [] and [(r.code, r.instances) for r in rejects] == [("image_missing", 5)]


def test_tiled_rows_are_the_rows_convert_writes(tmp_path):
    """One tiling path: ``tiled_rows`` of a scene gives exactly the rows ``convert --tile`` writes for it."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    import d2c
    from d2c.captions import CaptionEngine
    from d2c.convert import convert
    from d2c.schema import SCHEMA
    from d2c.shards import shard_paths
    from d2c.tiling import tiled_rows

    root = tmp_path / "big"
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    write_pattern_tiff(root / "images" / "s1.tif", 1500)
    lines = [f"{20 + 40 * i} 20 {50 + 40 * i} 20 {50 + 40 * i} 35 {20 + 40 * i} 35 ship 0" for i in range(5)]
    (root / "labelTxt" / "s1.txt").write_text("\n".join([*lines, "20 700 1470 700 1470 760 20 760 ship 1"]) + "\n")
    out = tmp_path / "out"
    convert(root, out, ConvertOptions(format="dota", tile=1024, overlap=200, seed=3, captions_per_image=2,
                                      tile_below="drop", progress=False))
    written = pa.concat_tables([pq.read_table(p) for p in shard_paths(out)])
    (scene,) = [s for s in d2c.read(root, format="dota") if isinstance(s, Scene)]
    rows, rejects = tiled_rows(scene, CaptionEngine(captions_per_image=2, seed=3).caption, tile=1024, overlap=200,
                               below="drop", seed=3)
    assert len(rows) == written.num_rows >= 1
    assert pa.Table.from_pylist(rows, schema=SCHEMA).equals(written.cast(SCHEMA))
    logged = [json.loads(line) for line in (out / "_rejects.jsonl").read_text().splitlines()]
    assert [r.to_dict() for r in rejects] == logged and [r["code"] for r in logged] == ["tile_dropped"]
