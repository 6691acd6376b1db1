"""ConvertOptions (d2c/options.py): refused settings name the CLI option, and the run metadata read from the
fields' metadata is what convert recorded when it listed the keys by hand (so shards keep their bytes)."""

from __future__ import annotations

import dataclasses

import pytest

from d2c.classes import ClassMap
from d2c.convert import RUN_KEYS
from d2c.errors import UsageError
from d2c.imageio import StretchConfig
from d2c.options import ConvertOptions
from d2c.schema import SCHEMA_VERSION

# The hand-kept list convert.py had before the settings became one dataclass ("source" was skipped there;
# "span" came with mmsar's task splitting, in the same hand-kept list).
OLD_RUN_KEYS = ("schema_version", "seed", "template_set_hash", "captions_per_image", "images_mode",
                "shard_rows", "max_bytes", "max_side", "class_map", "source", "stretch", "tile", "overlap",
                "tile_min_visible", "tile_below", "tile_negative_rate", "keep_partial_scenes", "max_vertices",
                "max_parts", "span")
RESOLVED = {"templates": "hash", "class_map": {"ship": "ship"}}


def test_run_keys_are_the_resume_checked_keys_of_before():
    assert sorted(RUN_KEYS) == sorted(k for k in OLD_RUN_KEYS if k != "source")


def test_span_is_recorded_last_and_only_when_set():
    assert "span" not in ConvertOptions().run_metadata(RESOLVED)
    meta = ConvertOptions(span=(2, 6)).run_metadata(RESOLVED)
    assert list(meta)[-1] == "span" and meta["span"] == [2, 6]
    with pytest.raises(UsageError, match="span must be"):
        ConvertOptions(span=(5, 2))


def test_untiled_default_metadata_has_the_keys_and_values_of_before():
    meta = ConvertOptions(seed=3, source="toy").run_metadata(RESOLVED)
    assert meta == {
        "schema_version": SCHEMA_VERSION, "seed": 3, "template_set_hash": "hash", "captions_per_image": 5,
        "images_mode": "reference", "shard_rows": 2000, "max_bytes": 512 << 20, "max_side": None,
        "class_map": {"ship": "ship"}, "source": "toy", "tile": None, "overlap": None,
        "stretch": dataclasses.asdict(StretchConfig()), "keep_partial_scenes": False}
    assert list(meta) == ["schema_version", "seed", "template_set_hash", "captions_per_image", "images_mode",
                          "shard_rows", "max_bytes", "max_side", "class_map", "source", "tile", "overlap",
                          "stretch", "keep_partial_scenes"]


def test_tiling_and_other_limits_add_their_keys_only_when_used():
    meta = ConvertOptions(tile=512, overlap=64, tile_min_visible=1, tile_negative_rate=0,
                          keep_partial_scenes=1).run_metadata(RESOLVED)  # type: ignore[arg-type]
    assert list(meta)[-3:] == ["tile_min_visible", "tile_below", "tile_negative_rate"]
    assert (meta["tile"], meta["overlap"], meta["keep_partial_scenes"]) == (512, 64, True)
    assert [type(meta["tile_min_visible"]), type(meta["tile_negative_rate"])] == [float, float]
    assert "max_vertices" not in meta and "max_parts" not in meta
    meta = ConvertOptions(max_parts=7).run_metadata(RESOLVED)
    assert (meta["max_vertices"], meta["max_parts"]) == (1000, 7) and "tile_below" not in meta
    assert set(ConvertOptions(tile=64, overlap=0, max_vertices=8).run_metadata(RESOLVED)) == set(OLD_RUN_KEYS) - {"span"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"images_mode": "inline"}, "--images-mode must be 'embed' or 'reference', got 'inline'"),
    ({"shard_rows": 0}, "--shard-rows must be at least 1, got 0"),
    ({"workers": 0}, "--workers must be at least 1, got 0"),
    ({"captions_per_image": 0}, "--captions-per-image must be at least 1, got 0"),
    ({"max_side": 8}, "--max-side must be at least 16 px, got 8"),
    ({"max_vertices": True}, "max_vertices must be a positive integer, got True"),
    ({"tile": 128, "tile_min_visible": 0}, "--tile-min-visible must be a number in (0, 1], got 0"),
    ({"tile": 128, "tile_below": "keep"}, "--tile-below must be one of difficult, drop, got 'keep'"),
    ({"tile": 128, "tile_negative_rate": 2}, "--tile-negative-rate must be a number in [0, 1], got 2"),
    ({"tile": 8}, "--tile must be an integer of at least 16 px, got 8"),
    ({"tile": 128, "overlap": 128}, "--overlap must be an integer in [0, tile=128), got 128"),
])
def test_impossible_settings_are_refused_when_the_options_are_made(kwargs, message):
    with pytest.raises(UsageError) as err:
        ConvertOptions(**kwargs)
    assert str(err.value) == message


def test_tiling_settings_are_not_checked_without_tile_and_options_are_frozen():
    opts = ConvertOptions(tile_below="keep", class_map=ClassMap.default())
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.seed = 1  # type: ignore[misc]
    assert dataclasses.replace(opts, seed=2).seed == 2
