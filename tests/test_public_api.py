"""The library entry points mmsar and sarclip_train import stay callable, whatever was imported first."""

from __future__ import annotations

import importlib


def test_d2c_convert_stays_a_function_after_the_submodule_is_imported():
    import d2c

    importlib.import_module("d2c.convert")
    assert callable(d2c.convert)
    assert d2c.convert.__module__ == "d2c.convert"


def test_d2c_read_yields_scenes_from_a_dota_folder(tmp_path):
    import d2c
    from d2c.model import Reject, Scene

    (tmp_path / "labelTxt").mkdir()
    (tmp_path / "labelTxt" / "a.txt").write_text("10 10 50 10 50 30 10 30 ship 0\n", encoding="utf-8")
    items = list(d2c.read(tmp_path, format="dota"))
    assert len(items) == 1  # no image and no size: one reject carrying its instance
    assert isinstance(items[0], Reject) and items[0].instances == 1
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("L", (64, 48)).save(tmp_path / "images" / "a.png")
    (scene,) = d2c.read(tmp_path, format="auto")
    assert isinstance(scene, Scene) and scene.key.endswith("/a") and (scene.width, scene.height) == (64, 48)
    assert scene.counts() == {"ship": 1}


def test_d2c_and_mmsar_import_without_torch():
    """The standalone d2c (base extra) must not need torch, open_clip or sklearn at import time."""
    import subprocess
    import sys

    code = ("import sys, d2c, d2c.convert, d2c.captions, d2c.readers, d2c.shards, d2c.cli, mmsar.cli, mmsar.build;"
            "heavy = sorted(m for m in ('torch', 'open_clip', 'sklearn', 'matplotlib', 'dask') if m in sys.modules);"
            "print(heavy); sys.exit(1 if heavy else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
