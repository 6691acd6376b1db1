"""Arrow arrays without ``pa.array`` (d2c/arrow_arrays.py): each builder gives what ``pa.array`` gives for
the same values (or raises what it raises), ``block_table`` built from them stays equal to the dict rows of
``scene_to_row``, and a conversion no longer imports pandas, in the main process or its workers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_blocks import _scenes as block_scenes
from test_convert_fast import _scenes as fast_scenes

from d2c import arrow_arrays as aa
from d2c.blocks import SceneBlock
from d2c.classes import ClassMap
from d2c.model import Instance, Provenance, Scene
from d2c.readers import plan
from d2c.rows import ImageRecord, RowInput, block_table, rows_table, scene_to_row
from d2c.schema import SCHEMA

REPO = Path(__file__).resolve().parents[1]
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _same(got: pa.Array, values, type_) -> None:
    want = pa.array(values, type_)
    assert got.type == want.type and got.null_count == want.null_count
    assert repr(got.to_pylist()) == repr(want.to_pylist())  # NaN-aware, exact (repr of floats round-trips)
    assert got.equals(want) or "nan" in repr(want.to_pylist())  # (NaN != NaN for equals)
    got.validate(full=True)


def _raises_like(build, values, type_) -> None:
    """The builder raises the error ``pa.array`` raises (same type and message)."""
    with pytest.raises(Exception) as want:
        pa.array(values, type_)
    with pytest.raises(want.type) as got:
        build(values)
    assert str(got.value) == str(want.value)


STRING_CASES = [
    [], [None], [None, None, None], [""], ["", ""], ["a", None, "", "bc"], ["ship"] * 5,
    ["żaglowiec", "船", None, "ascii", "émoji 🚢"], ["x" * 10_000, "y"], [None, "只", None],
    [str(k) for k in range(1000)],
]


@pytest.mark.parametrize("values", STRING_CASES)
def test_strings_equal_pa_array(values):
    _same(aa.strings(values), values, pa.string())
    _same(aa.strings(tuple(values)), values, pa.string())


def test_strings_raise_or_convert_like_pa_array():
    _raises_like(aa.strings, ["ok", "\ud800"], pa.string())  # a lone surrogate is not mangled
    _raises_like(aa.strings, ["\udcff"], pa.string())
    _raises_like(aa.strings, ["a", 1], pa.string())
    _raises_like(aa.strings, [None, 2.5], pa.string())
    _same(aa.strings(["a", b"bytes", None]), ["a", b"bytes", None], pa.string())  # pa.array's own rules

    class Name(str):
        def __len__(self) -> int:
            return 99

    _same(aa.strings([Name("ship"), "tank"]), [Name("ship"), "tank"], pa.string())


@pytest.mark.parametrize("values", [[], [None], [b""], [b"\x00\xff\x89PNG", None, b"", b"abc"], [b"x" * 5000] * 3])
def test_binaries_equal_pa_array(values):
    _same(aa.binaries(values), values, pa.binary())


def test_binaries_leave_other_types_to_pa_array():
    _same(aa.binaries(["text", b"b", None]), ["text", b"b", None], pa.binary())
    _raises_like(aa.binaries, [b"a", 3], pa.binary())


@pytest.mark.parametrize("type_", [pa.int32(), pa.int64()])
@pytest.mark.parametrize("values", [[], [None], [0], [1, None, -3], [INT32_MIN, INT32_MAX, None, 0], list(range(500))])
def test_integers_equal_pa_array(type_, values):
    _same(aa.numbers(values, type_), values, type_)
    _same(aa.numbers(np.array([0 if v is None else v for v in values], dtype=np.int64), type_),
          np.array([0 if v is None else v for v in values], dtype=np.int64), type_)


def test_integers_big_values_and_errors_like_pa_array():
    big = [2**62, -(2**63), 2**63 - 1, None]
    _same(aa.numbers(big, pa.int64()), big, pa.int64())
    _same(aa.numbers(np.array([2**40, 7], dtype=np.uint64), pa.int64()), np.array([2**40, 7], dtype=np.uint64),
          pa.int64())
    _same(aa.numbers(np.array([1, 2], dtype=np.int16), pa.int32()), np.array([1, 2], dtype=np.int16), pa.int32())
    for values in ([INT32_MAX + 1], [INT32_MIN - 1, None], [True, 2], [2**64], ["3"]):
        _raises_like(lambda v: aa.numbers(v, pa.int32()), values, pa.int32())
    _raises_like(lambda v: aa.numbers(v, pa.int32()), np.array([2**40]), pa.int32())
    _same(aa.numbers([np.int64(3), None], pa.int32()), [np.int64(3), None], pa.int32())  # left to pa.array


@pytest.mark.parametrize("values", [[], [None], [0.5], [1.5, None, -2.25, 1e300], [float("nan"), float("inf"), None],
                                    [1, 2.5, None, 2**53], [0.1 * k for k in range(300)]])
def test_floats_equal_pa_array(values):
    _same(aa.numbers(values, pa.float64()), values, pa.float64())
    assert aa.numbers(values, pa.float64()).null_count == values.count(None)  # NaN stays a value


def test_floats_from_numpy_and_errors_like_pa_array():
    for arr in (np.array([0.5, np.nan, -1e-300]), np.zeros(0), np.array([1.5, 2.0], dtype=np.float32),
                np.arange(12.0)[::3]):
        _same(aa.numbers(arr, pa.float64()), arr, pa.float64())
    _raises_like(lambda v: aa.numbers(v, pa.float64()), [2**53 + 1], pa.float64())
    _raises_like(lambda v: aa.numbers(v, pa.float64()), [0.5, "x"], pa.float64())


@pytest.mark.parametrize("values", [[], [None], [True], [True, False, None, True], [False] * 17,
                                    [k % 3 == 0 for k in range(100)]])
def test_bools_equal_pa_array(values):
    _same(aa.bools(values), values, pa.bool_())
    if None not in values:
        _same(aa.bools(np.array(values, dtype=bool)), np.array(values, dtype=bool), pa.bool_())


def test_bools_leave_other_types_to_pa_array():
    _same(aa.bools(np.array([1, 0, 2])), np.array([1, 0, 2]), pa.bool_())
    _raises_like(aa.bools, [True, "no"], pa.bool_())


LIST_CASES = [
    (pa.list_(pa.string()), [[], None, ["a"], ["b", None, ""], ["żółw", "ship"], []]),
    (pa.list_(pa.string()), [["image_missing"]] * 4),
    (pa.list_(pa.string()), [None, None]),
    (pa.list_(pa.string()), []),
    (pa.list_(pa.string()), [("a", "b"), ["c"]]),
    (pa.list_(pa.int32()), [(3, 4), None, [INT32_MAX, INT32_MIN], [], (0, None)]),
    (pa.list_(pa.int64()), [[2**60], [1, 2, 3]]),
    (pa.list_(pa.float64()), [[0.5, 1], None, [], [float("nan")]]),
    (pa.list_(pa.bool_()), [[True], [None, False], None]),
    (pa.list_(pa.binary()), [[b"x", None], [], None]),
]


@pytest.mark.parametrize(("type_", "values"), LIST_CASES)
def test_lists_equal_pa_array(type_, values):
    _same(aa.lists(values, type_), values, type_)


def test_lists_leave_other_shapes_to_pa_array():
    _same(aa.lists([["a"], "bc"], pa.list_(pa.string())), [["a"], "bc"], pa.list_(pa.string()))
    _raises_like(lambda v: aa.lists(v, pa.list_(pa.int32())), [[2**40]], pa.list_(pa.int32()))
    _raises_like(lambda v: aa.lists(v, pa.list_(pa.string())), [["a", "\ud800"]], pa.list_(pa.string()))
    nested = pa.list_(pa.list_(pa.int32()))
    _same(aa.lists([[[1]], None], nested), [[[1]], None], nested)
    arrays = [np.array([1, 2]), None, np.array([], dtype=np.int64)]  # numpy items: no truth value, no ==
    _same(aa.lists(arrays, pa.list_(pa.int32())), arrays, pa.list_(pa.int32()))
    _raises_like(aa.strings, [np.array(["a", "b"]), None], pa.string())
    _raises_like(aa.binaries, [np.frombuffer(b"ab", np.uint8), None], pa.binary())


def test_float_lists_offsets_and_list_array():
    values, lengths = np.arange(11, dtype=np.float64) / 4, [4, 0, 2, 5]
    nested = [values[0:4].tolist(), [], values[4:6].tolist(), values[6:11].tolist()]
    _same(aa.float_lists(values, lengths), nested, pa.list_(pa.float64()))
    _same(aa.float_lists(np.zeros((0, 2)), []), [], pa.list_(pa.float64()))
    _same(aa.offsets([3, 0, 2]), [0, 3, 3, 5], pa.int32())
    _same(aa.offsets([]), [0], pa.int32())
    with pytest.raises(ValueError, match="add up to 3"):
        aa.list_array(pa.list_(pa.float64()), [1, 2], aa.numbers([1.0], pa.float64()))


def test_indices_take_rows_like_a_list():
    table = pa.table({"a": list(range(10)), "s": [f"r{k}" for k in range(10)]})
    for rows in ([], [0], [9, 2, 2, 5], list(range(10))):
        _same(aa.indices(rows), rows, pa.int64())
        assert table.take(aa.indices(rows)).equals(table.take(pa.array(rows, pa.int64())))
    _same(aa.indices(np.array([4, 1], dtype=np.int32)), np.array([4, 1], dtype=np.int32), pa.int64())


def test_past_the_offset_limit_pa_array_decides(monkeypatch):
    """Strings or bytes past the int32 offsets (2**31 - 1 bytes, here a small limit) go to pa.array."""
    calls = []

    def spy(values, type_):
        calls.append(type_)
        return pa.array(values, type_)

    monkeypatch.setattr(aa, "OFFSET_LIMIT", 6)
    monkeypatch.setattr(aa, "_fallback", spy)
    _same(aa.strings(["abcd", "efg"]), ["abcd", "efg"], pa.string())
    _same(aa.strings(["ab", "cd"]), ["ab", "cd"], pa.string())
    _same(aa.strings(["żółw", "x"]), ["żółw", "x"], pa.string())  # 7 bytes, 5 characters
    _same(aa.binaries([b"abcd", b"efg"]), [b"abcd", b"efg"], pa.binary())
    _same(aa.lists([["a"] * 4, ["b"] * 3], pa.list_(pa.string())), [["a"] * 4, ["b"] * 3], pa.list_(pa.string()))
    assert calls == [pa.string(), pa.string(), pa.binary(), pa.list_(pa.string())]
    with pytest.raises(OverflowError):
        aa.offsets([4, 3])


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


# --- conversion without pandas --------------------------------------------------------------------------------

PROBE = textwrap.dedent("""
    import json, os, sys
    marker = sys.argv[2]

    class Watch:  # notes every import of pandas, in this process and in the workers forked from it
        def find_spec(self, name, path=None, target=None):
            if name == "pandas":
                with open(marker, "a") as f:
                    f.write(f"{os.getpid()}\\n")
            return None

    sys.meta_path.insert(0, Watch())
    from d2c.convert import convert
    results = {}
    for workers in (1, 2):
        res = convert(sys.argv[1], out=sys.argv[3] + str(workers), format="coco", images_mode="reference",
                      workers=workers, progress=False)
        results[workers] = [res.stats["scenes_written"], res.stats["rejects_total"]]
    results["pandas"] = "pandas" in sys.modules
    results["marked"] = os.path.exists(marker)
    import pyarrow as pa
    pa.array([1])  # the watch does see pandas when something does import it
    results["watch_works"] = os.path.exists(marker) and "pandas" in sys.modules
    print(json.dumps(results))
""")


def _tiny_coco(path: Path) -> Path:
    """Three images (missing: reference mode flags them), boxes of two classes, one image without objects."""
    images = [{"id": k, "file_name": f"img{k}.png", "width": 100 + k, "height": 80} for k in (1, 2, 3)]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 10], "area": 200, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [40, 30, 8, 8], "area": 64, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}]
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "ship"}, {"id": 2, "name": "aircraft"}]}))
    return path


@pytest.mark.timeout(60)
def test_conversion_does_not_import_pandas(tmp_path):
    ann = _tiny_coco(tmp_path / "tiny.json")
    marker = tmp_path / "pandas-imported"
    proc = subprocess.run([sys.executable, "-c", PROBE, str(ann), str(marker), str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=REPO, timeout=55,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["1"] == got["2"] == [3, 0]  # every scene written, no rejects (no row dropped from a chunk)
    assert got["pandas"] is False and got["marked"] is False  # neither here nor in the two workers
    assert got["watch_works"] is True
