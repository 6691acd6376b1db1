"""``d2c templates list|lint|preview`` and ``d2c captions stats`` through click."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner
from PIL import Image

from d2c.cli import main
from d2c.schema import SCHEMA


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_templates_list():
    r = run("templates", "list")
    assert r.exit_code == 0, r.output
    assert "count.shows" in r.output and "multi-class" in r.output and "main, single_cell" in r.output
    assert "main, single_cell  (scenes: any)" in r.output and "partial  (scenes: partial)" in r.output
    assert "49 templates" in r.output or "templates, set hash" in r.output


def test_templates_lint_ok_and_failing(tmp_path):
    r = run("templates", "lint", "--words")
    assert r.exit_code == 0, r.output
    assert "0 problem(s)" in r.output
    (tmp_path / "bad.j2").write_text("{#-\nid: bad\nfamily: count\nrequires: [main]\n-#}\n{{ nope }}\n")
    r = run("templates", "lint", tmp_path, "--words")
    assert r.exit_code == 1
    assert "bad.j2" in r.output and "nope" in r.output


def dota_folder(tmp_path):
    root = tmp_path / "dota"
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    Image.new("L", (600, 600)).save(root / "images" / "p1.png")
    Image.new("L", (600, 600)).save(root / "images" / "p2.png")
    (root / "labelTxt" / "p1.txt").write_text(
        "imagesource:Sentinel-1\ngsd:2.0\n"
        "100 100 160 100 160 112 100 112 ship 0\n300 300 360 300 360 312 300 312 ship 0\n"
    )
    (root / "labelTxt" / "p2.txt").write_text("")
    return root


def test_templates_preview_reads_dota(tmp_path):
    root = dota_folder(tmp_path)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "x.j2").write_text(
        "{#-\nid: count.shows\nfamily: count\nweight: 50\nrequires: [main]\n-#}\n"
        "PREVIEW {{ main|quantity }}\n"
    )
    r = run("templates", "preview", root, "--format", "dota", "-n", "5", "--templates", user)
    assert r.exit_code == 0, r.output
    assert "dota/p1" in r.output and "(2 ship)" in r.output
    assert "PREVIEW" in r.output and ("two" in r.output or " 2 " in r.output)
    assert "dota/p2" in r.output and "[empty/" in r.output
    one = run("templates", "preview", root, "--format", "dota", "-n", "1")
    assert one.output.count("dota/p") == 1


def test_preview_bad_format_is_one_line_error(tmp_path):
    r = run("templates", "preview", dota_folder(tmp_path), "--format", "nope")
    assert r.exit_code == 2
    assert "error" in r.output and "Traceback" not in r.output


def test_captions_stats_reads_shards(tmp_path):
    rows = []
    for i, caps in enumerate([["A ship.", "Two boats."], ["A ship.", "No annotated targets."]]):
        row = {name: None for name in SCHEMA.names}
        row.update(
            key=f"src/{i}",
            source="src",
            captions=caps,
            template_ids=["count.shows", "empty.none"],
            flags=[],
            objects=[],
            counts=[],
        )
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp_path / "src-00000.parquet")
    r = run("captions", "stats", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    stats = json.loads(r.output)
    assert stats["images"] == 2 and stats["captions"] == 4
    assert stats["duplicate_rate"] == 0.5 and stats["distinct_captions_ratio"] == 0.75
    assert stats["family_coverage"] == {"count": 0.5, "empty": 0.5}
    text = run("captions", "stats", tmp_path)
    assert "duplicate_rate" in text.output and "0.5000" in text.output
    empty = tmp_path / "none"
    empty.mkdir()
    r = run("captions", "stats", empty)
    assert r.exit_code == 1 and "no shard files" in r.output


def test_preview_shows_a_partial_scene_as_keep_partial_would_write_it(tmp_path):
    root = dota_folder(tmp_path)
    with open(root / "labelTxt" / "p1.txt", "a") as fh:
        fh.write("1 2 3 oops ship 0\n")  # a malformed line: p1 has two valid ships of three
    r = run("templates", "preview", root, "--format", "dota", "-n", "5", "--captions-per-image", "10")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    head = lines.index("dota/p1  (2 ship; some objects rejected: left out unless --keep-partial-scenes)")
    caps = [ln for ln in lines[head + 1 : lines.index("dota/p2  (no objects)")]]
    assert len(caps) >= 3 and all("/partial." in c for c in caps), caps
    assert all("at least" in c.lower() for c in caps), caps
