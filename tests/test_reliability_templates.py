"""Template attacks beyond tests/test_captions_security.py (which covers ``__class__``/``__mro__``/
``__globals__``/``attr()`` through the engine): resource exhaustion through ``**`` and ``*`` (which Jinja2's
sandbox leaves open, even at compile time), loaders, str.format, recursion; and the same attacks through
``d2c convert --templates`` and ``d2c templates lint``: a clear error naming the template, never a hang."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from d2c.captions import CaptionEngine, TemplateError
from d2c.cli import main
from d2c.model import Instance, Scene

pytestmark = pytest.mark.timeout(20)

HEADER = "{{#-\nid: evil.{n}\nfamily: count\nweight: {w}\nrequires: [main]\n-#}}\n"
ATTACKS = {
    "{{ 9 ** (9 ** 9) }}": "too large",
    "{{ 'a' * 10 ** 9 }}": "too large",
    "{{ [0] * 10 ** 8 }}": "too large",
    "{{ main * 100000000 }}": "too large",
    "{% include '/etc/passwd' %}": "loader",
    "{% import 'os' as os %}": "loader",
    "{% extends '/etc/passwd' %}": "loader",
    "{{ '{0.__class__.__mro__}'.format(modality) }}": "sandbox",
    "{{ modality.__class__.__base__.__subclasses__() }}": "sandbox",
    "{{ lipsum.__globals__ }}": "sandbox",
    "{{ self.__init__.__globals__ }}": "sandbox",
    "{{ namespace.__init__.__globals__ }}": "sandbox",
    "{{ [].pop.__self__ }}": "sandbox",
    "{{ range(10 ** 9) | list }}": "MAX_RANGE",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}": "RecursionError",
    "{{ config.items() }}": "undefined",
}


def _scene() -> Scene:
    return Scene(key="s/a", source="s", image_path="a.png", root="/", width=100, height=100,
                 instances=[Instance.from_hbb(10, 10, 40, 20, "ship")])


def _write(folder: Path, body: str, n: int = 0, weight: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"evil{n}.j2"
    path.write_text(HEADER.format(n=n, w=weight) + body, encoding="utf-8")
    return path


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_fails_fast_naming_the_template(tmp_path, attack):
    path = _write(tmp_path, attack)
    with pytest.raises(TemplateError) as err:  # at load (compile-time folding) or at render: never a hang
        CaptionEngine(tmp_path, include_defaults=False).caption(_scene())
    msg = str(err.value)
    assert str(path) in msg and "evil.0" in msg and "\n" not in msg, msg
    assert ATTACKS[attack] in msg, msg


def test_plain_arithmetic_still_renders(tmp_path):
    _write(tmp_path, "{{ 2 * 3 }} {{ 2 ** 10 }} {{ 'ab' * 3 }}")
    (cap,) = CaptionEngine(tmp_path, include_defaults=False, captions_per_image=1).caption(_scene())
    assert cap.text == "6 1024 ababab"


def _dataset(root: Path, n: int = 3) -> Path:
    (root / "labelTxt").mkdir(parents=True)
    (root / "images").mkdir()
    for i in range(n):
        Image.new("L", (64, 48), 40).save(root / "images" / f"P{i}.png")
        (root / "labelTxt" / f"P{i}.txt").write_text("2 2 30 2 30 12 2 12 ship 0\n")
    return root


def test_convert_and_lint_report_the_template(tmp_path):
    """Through the CLI: every scene the attack would caption is a ``caption_error`` Reject naming the
    template (exit 0, or 1 with --strict), the run finishes, and lint flags it (exit 1); no traceback."""
    ds = _dataset(tmp_path / "ds")
    evil = tmp_path / "tpl"
    path = _write(evil, "{{ cycler.__init__.__globals__.os.popen('id').read() }}", weight=100_000)
    runner = CliRunner()
    for strict, code in ((False, 0), (True, 1)):
        out = tmp_path / f"out{int(strict)}"
        args = ["convert", str(ds), "--format", "dota", "--out", str(out), "--templates", str(evil)]
        result = runner.invoke(main, args + (["--strict"] if strict else []))
        assert result.exit_code == code and "Traceback" not in result.output, result.output
        rejects = [json.loads(line) for line in (out / "_rejects.jsonl").read_text().splitlines()]
        assert len(rejects) == 3 and {r["code"] for r in rejects} == {"caption_error"}
        assert all(str(path) in r["reason"] and "sandbox" in r["reason"] for r in rejects)
        assert json.loads((out / "_stats.json").read_text())["invariant_holds"]
    lint = runner.invoke(main, ["templates", "lint", str(evil), "--words"])
    assert lint.exit_code == 1 and "evil.0" in lint.output and "Traceback" not in lint.output, lint.output


def test_broken_template_files_stop_convert_with_one_line_naming_them(tmp_path):
    """Not UTF-8, or a syntax error: the run stops before writing anything (exit 1), naming the file."""
    ds = _dataset(tmp_path / "ds", n=1)
    for n, raw in enumerate([HEADER.format(n=0, w=1).encode() + b"caf\xe9 {{ main }}",
                             HEADER.format(n=1, w=1).encode() + b"{{ main "]):
        evil = tmp_path / f"tpl{n}"
        evil.mkdir()
        (evil / "bad.j2").write_bytes(raw)
        result = CliRunner().invoke(main, ["convert", str(ds), "--format", "dota", "--out", str(tmp_path / f"o{n}"),
                                           "--templates", str(evil)])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        (line,) = [ln for ln in result.output.splitlines() if "error" in ln]
        assert str(evil / "bad.j2") in line and ("UTF-8" in line or "syntax error" in line), line
