"""Reader plug-ins: installing tests/plugin_example registers the ``csvbox`` format through the
``d2c.readers`` entry-point group; d2c then reads and converts it, and ``d2c formats`` lists it.

The plug-in is pip-installed (offline, from a copy so the source tree gets no build files) into the
running venv and uninstalled afterwards. Entry points are read once per process, so the checks run in
fresh interpreters, as a user's would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from d2c.shards import iter_rows

PLUGIN_SRC = Path(__file__).resolve().parent / "plugin_example"
DIST = "d2c-plugin-example"

CHECK = r"""
import json, sys
import d2c
from d2c.model import Scene
from d2c.readers import REGISTRY, detect_format

root, out = sys.argv[1], sys.argv[2]
items = list(d2c.read(root, format="csvbox", source="csvx"))
result = d2c.convert(root, out, d2c.ConvertOptions(format="csvbox", source="csvx", captions_per_image=2))
print(json.dumps({
    "auto": detect_format(root),
    "reader_module": type(REGISTRY["csvbox"]).__module__,
    "scenes": {s.key: [[i.category, list(i.hbb)] for i in s.instances] for s in items if isinstance(s, Scene)},
    "rejects": [[r.record, r.code] for r in items if not isinstance(r, Scene)],
    "shards": len(result.shards),
}))
"""


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def installed_plugin(tmp_path_factory):
    build = tmp_path_factory.mktemp("plugin") / "plugin_example"
    shutil.copytree(PLUGIN_SRC, build, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    proc = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(build))
    assert proc.returncode == 0, proc.stderr[-2000:]
    try:
        yield
    finally:
        _pip("uninstall", "-y", DIST)


@pytest.fixture
def csv_dataset(tmp_path) -> Path:
    root = tmp_path / "harbour"
    (root / "images").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.new("L", (64, 48), 30).save(root / "images" / name)
    (root / "boxes.csv").write_text(
        "image,width,height,class,x_min,y_min,x_max,y_max\n"
        "images/a.png,64,48,ship,4,4,20,12\n"
        "images/a.png,64,48,ship,30,20,40,30\n"
        "images/b.png,64,48,,,,,\n"
        "images/b.png,64,48,ship,5,5,5,9\n"
        "images/b.png,64,48,ship\n",
        encoding="utf-8",
    )
    return root


def test_installed_plugin_reads_converts_and_is_listed(installed_plugin, csv_dataset, tmp_path):
    out = tmp_path / "shards"
    proc = subprocess.run([sys.executable, "-c", CHECK, str(csv_dataset), str(out)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["auto"] == "csvbox" and got["reader_module"] == "d2c_plugin_example"
    assert got["scenes"] == {"csvx/images/a": [["ship", [4.0, 4.0, 20.0, 12.0]], ["ship", [30.0, 20.0, 40.0, 30.0]]],
                             "csvx/images/b": []}
    assert got["rejects"] == [["line 5", "bad_geometry"], ["line 6", "bad_line"]]
    rows = {r["key"]: r for r in iter_rows(out)}
    assert sorted(rows) == ["csvx/images/a", "csvx/images/b"]
    assert rows["csvx/images/a"]["counts"] == [{"category": "ship", "count": 2}]
    assert len(rows["csvx/images/a"]["captions"]) == 2

    listing = subprocess.run([sys.executable, "-c", "from d2c.cli import main; main()", "formats", "--json"],
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr[-2000:]
    formats = {r["format"]: r for r in json.loads(listing.stdout)}
    assert formats["csvbox"]["kind"] == "plug-in"
    assert formats["csvbox"]["source"].startswith(f"{DIST} 0.1.0 (entry point csvbox = d2c_plugin_example:READER)")
    assert {"coco", "dota", "voc"} <= {k for k, v in formats.items() if v["kind"] == "built-in"}


def test_formats_lists_builtins_without_plugins():
    from click.testing import CliRunner

    from d2c.cli import main

    res = CliRunner().invoke(main, ["formats"])
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line.split()[1:] for line in res.output.splitlines()}
    for name in ("coco", "dota", "voc"):
        assert lines[name][:2] == ["built-in", f"d2c.readers.{name}"]
