"""Class maps: the default SAR taxonomy, aliases, per-source maps and the unknown-class policy."""

from __future__ import annotations

import logging

import pytest

from d2c.classes import DEFAULT_CLASSES, ClassMap, ClassResolver, normalise
from d2c.errors import UsageError


def test_default_taxonomy_and_aliases():
    m = ClassMap.default()
    assert m.classes == DEFAULT_CLASSES == ("ship", "aircraft", "car", "tank", "bridge", "harbor")
    cases = {
        "vessel": "ship", "Boat": "ship", "plane": "aircraft", "airplane": "aircraft", "harbour": "harbor",
        "storage-tank": "tank", "storage_tank": "tank", "Small Vehicle": "car", "large-vehicle": "car",
        "SHIP": "ship", "bridge": "bridge",
    }
    assert {raw: m.canonical(raw) for raw in cases} == cases
    assert m.canonical("windmill") is None and m.canonical(0) is None
    assert normalise("  Ground_Track Field ") == "ground-track-field"


def test_ssdd_map_extends_default_and_maps_zero():
    m = ClassMap.load("ssdd")
    assert m.canonical(0) == m.canonical("0") == "ship" and m.canonical("plane") == "aircraft"
    assert m.to_dict()["aliases"]["0"] == "ship"


def test_custom_map_file_and_errors(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text('name = "mine"\nextends = "default"\nclasses = ["windmill"]\n[aliases]\n"3" = "windmill"\nturbine = "windmill"\n')
    m = ClassMap.load(f)
    assert m.name == "mine" and m.canonical("3") == "windmill" and m.canonical("turbine") == "windmill"
    assert "windmill" in m.classes and m.canonical("ship") == "ship"
    bad = tmp_path / "bad.toml"
    bad.write_text('[aliases]\nfoo = "spaceship"\n')
    with pytest.raises(UsageError, match="expected one of"):
        ClassMap.load(bad)
    with pytest.raises(UsageError, match="not found"):
        ClassMap.load("no-such-map")
    broken = tmp_path / "broken.toml"
    broken.write_text("[aliases\n")
    with pytest.raises(UsageError, match="cannot read class map"):
        ClassMap.load(broken)


def test_resolver_policies(caplog):
    keep = ClassResolver()
    with caplog.at_level(logging.WARNING, logger="d2c.classes"):
        assert keep.resolve("Wind Mill").category == "wind-mill"
        assert keep.resolve("Wind Mill").category == "wind-mill"
    assert len([r for r in caplog.records if "wind" in r.getMessage().lower()]) == 1  # warned once
    num = keep.resolve("0")
    assert num.category is None and num.code == "numeric_class" and "--class-map" in num.reason
    rej = ClassResolver(unknown="reject").resolve("windmill")
    assert (rej.category, rej.code) == (None, "unknown_class")
    assert ClassResolver(ClassMap.load("ssdd")).resolve(0).category == "ship"
    with pytest.raises(UsageError):
        ClassResolver(unknown="drop")
