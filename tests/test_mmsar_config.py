"""mmsar.toml: the example parses, defaults are applied, and every bad value names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from d2c.errors import UsageError
from mmsar.config import check_inputs, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def test_example_config_parses_with_paths_resolved_from_its_folder():
    cfg = load_config(REPO / "examples" / "mmsar.toml")
    names = [s.name for s in cfg.sources]
    assert names == ["ssdd_voc", "ssdd_dota", "ssdd_coco", "synthetic"]
    dota = cfg.sources[1]
    assert [i.split for i in dota.inputs] == [None, "test"]
    assert dota.inputs[0].path == (REPO.parent / "shared/real-samples/SSDD_mmrotate_DOTA_COCO/train").resolve()
    assert dota.class_map == "ssdd"
    coco = cfg.sources[2]
    assert coco.inputs[0].images is not None and coco.inputs[0].split == "test"
    assert cfg.sources[3].ratios == pytest.approx((0.7, 0.15, 0.15)) and cfg.sources[3].weight == 0.5
    assert cfg.out == (REPO / "mmsar-out").resolve() and cfg.work == cfg.out.parent / "mmsar-out.work"
    assert cfg.sarcount.nouns == {"ship": ("ship", "ships")}
    resolved = cfg.resolved()
    assert "out" not in resolved and resolved["sources"][0]["inputs"][0]["path"].endswith("SSDD_VOC_labelImg")


def test_defaults_and_out_override(tmp_path):
    cfg = parse_config({"sources": [{"name": "a", "input": "data"}]}, tmp_path, out=tmp_path / "o")
    assert cfg.out == (tmp_path / "o").resolve()
    assert cfg.splits.ratios == (0.8, 0.1, 0.1) and cfg.shard_rows == 2000
    assert (cfg.sarcount.min_count, cfg.sarcount.max_count) == (1, 10)
    assert cfg.dedupe.near_threshold == 2 and not cfg.dedupe.drop_near
    assert cfg.images.mode == "embed" and cfg.sources[0].format == "auto"
    with pytest.raises(UsageError, match=r"sources\[0\]\.input\[0\]\.path: .*data not found"):
        check_inputs(cfg)


@pytest.mark.parametrize(("data", "message"), [
    ({}, r"^sources: required key is missing"),
    ({"sources": []}, r"^sources: at least one"),
    ({"sources": [{"input": "x"}]}, r"^sources\[0\]\.name: required"),
    ({"sources": [{"name": "a"}]}, r"^sources\[0\]\.input: required"),
    ({"sources": [{"name": "a", "input": "x", "format": "yaml"}]}, r"^sources\[0\]\.format: must be one of"),
    ({"sources": [{"name": "a", "input": "x", "ratios": [1, 2]}]}, r"^sources\[0\]\.ratios: expected three"),
    ({"sources": [{"name": "a", "input": "x", "split": "dev"}]}, r"^sources\[0\]\.split: must be one of"),
    ({"sources": [{"name": "a", "input": "x", "colour": 1}]}, r"^sources\[0\]\.colour: unknown key"),
    ({"sources": [{"name": "a", "input": "x"}, {"name": "a", "input": "y"}]}, r"^sources\[1\]\.name: duplicate"),
    ({"sources": [{"name": "a/b", "input": "x"}]}, r"^sources\[0\]\.name: use letters"),
    ({"sources": [{"name": "a", "input": [{"path": "x", "split": "eval"}]}]}, r"^sources\[0\]\.input\[0\]\.split"),
    ({"sources": [{"name": "a", "input": "x", "weight": 0}]}, r"^sources\[0\]\.weight: must be positive"),
    ({"sources": [{"name": "a", "input": "x", "tile": {"size": 512, "overlap": 512}}]},
     r"^sources\[0\]\.tile\.overlap"),
    ({"sources": [{"name": "a", "input": "x", "tile": {"size": 512, "min_visible": 0}}]},
     r"^sources\[0\]\.tile\.min_visible: must be in \(0, 1\]"),
    ({"sources": [{"name": "a", "input": "x", "tile": {"size": 512, "min_visible": "high"}}]},
     r"^sources\[0\]\.tile\.min_visible: expected a number"),
    ({"sources": [{"name": "a", "input": "x", "tile": {"size": 512, "below": "keep"}}]},
     r"^sources\[0\]\.tile\.below: must be one of difficult, drop"),
    ({"sources": [{"name": "a", "input": "x", "tile": {"size": 512, "negative_rate": 1.5}}]},
     r"^sources\[0\]\.tile\.negative_rate: must be in \[0, 1\]"),
    ({"sources": [{"name": "a", "input": "x", "tile": {"overlap": 100}}]}, r"^sources\[0\]\.tile\.size: required"),
    ({"sources": [{"name": "a", "input": "x", "tile": {"size": 512, "min_visibility": 0.5}}]},
     r"^sources\[0\]\.tile\.min_visibility: unknown key"),
    ({"sources": [{"name": "a", "input": "x"}], "images": {"mode": "copy"}}, r"^images\.mode: must be"),
    ({"sources": [{"name": "a", "input": "x"}], "output": {"shard_rows": 0}}, r"^output\.shard_rows: must be >= 1"),
    ({"sources": [{"name": "a", "input": "x"}], "sarcount": {"min_count": 5, "max_count": 2}},
     r"^sarcount\.max_count: must be >= min_count"),
    ({"sources": [{"name": "a", "input": "x"}], "sarcount": {"templates": ["no slot"]}},
     r"^sarcount\.templates\[0\]: needs exactly one"),
    ({"sources": [{"name": "a", "input": "x"}], "sarcount": {"nouns": {"ship": "ships"}}},
     r"^sarcount\.nouns\.ship: expected \[singular, plural\]"),
    ({"sources": [{"name": "a", "input": "x"}], "dedupe": {"drop_near": "yes"}}, r"^dedupe\.drop_near: expected"),
    ({"sources": [{"name": "a", "input": "x"}], "chips": {"size": "big"}}, r"^chips\.size: expected an integer"),
    ({"sources": [{"name": "a", "input": "x"}], "chips": {"external": [{"path": "p"}]}},
     r"^chips\.external\[0\]\.name: required"),
    ({"sources": [{"name": "a", "input": "x"}], "typo": 1}, r"^typo: unknown key"),
])
def test_errors_name_the_key(tmp_path, data, message):
    with pytest.raises(UsageError, match=message):
        parse_config(data, tmp_path)


def test_tile_keys_parse_with_defaults(tmp_path):
    tiles = [{"size": 512}, {"size": 1024, "overlap": 256, "min_visible": 0.5, "below": "drop", "negative_rate": 0}]
    cfg = parse_config({"sources": [{"name": f"s{i}", "input": "x", "tile": t} for i, t in enumerate(tiles)]},
                       tmp_path)
    default, custom = (s.tile for s in cfg.sources)
    assert (default.size, default.overlap, default.min_visible, default.below, default.negative_rate) == (
        512, 200, 0.7, "difficult", 0.1)
    assert (custom.size, custom.overlap, custom.min_visible, custom.below, custom.negative_rate) == (
        1024, 256, 0.5, "drop", 0.0)
    assert cfg.resolved()["sources"][1]["tile"]["below"] == "drop"


def test_load_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "mmsar.toml"
    bad.write_text("sources = [\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"mmsar\.toml: invalid TOML"):
        load_config(bad)
    bad.write_text('[[sources]]\nname = "a"\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"mmsar\.toml: sources\[0\]\.input: required"):
        load_config(bad)
    with pytest.raises(UsageError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_inline_class_map_table_is_kept(tmp_path):
    cfg = parse_config({"sources": [{"name": "a", "input": "x", "class_map": {"aliases": {"0": "ship"}}}]}, tmp_path)
    assert cfg.sources[0].class_map == {"aliases": {"0": "ship"}}


def test_keep_partial_scenes_reaches_the_conversion(tmp_path):
    """A source's keep_partial_scenes (default false) is what its d2c conversion gets: the scene with a bad
    line is staged flagged, or left out as a partial_scene reject."""
    import json

    from test_convert import make_dota

    from mmsar.sources import job_for
    from mmsar.staging import stage_source

    make_dota(tmp_path / "ds", n=3)
    with pytest.raises(UsageError, match=r"sources\[0\]\.keep_partial_scenes: expected"):
        parse_config({"sources": [{"name": "a", "input": "ds", "keep_partial_scenes": "yes"}]}, tmp_path)
    staged = {}
    for keep in (False, True):
        cfg = parse_config({"sources": [{"name": "toy", "format": "dota", "input": "ds", "keep_partial_scenes": keep}],
                            "images": {"mode": "reference"}}, tmp_path, out=tmp_path / f"o{keep}")
        assert cfg.sources[0].keep_partial_scenes is keep
        stage = stage_source(job_for(cfg, cfg.sources[0], "hash"))
        staged[keep] = stage
        codes = [json.loads(line)["code"] for line in (cfg.work / "toy" / "_rejects.jsonl").read_text().splitlines()]
        assert ("partial_scene" in codes) is not keep
    assert staged[False]["rows"] == 2 and staged[True]["rows"] == 3
