"""User templates run in Jinja2's sandbox: reaching Python internals fails, naming the template."""

from __future__ import annotations

import pytest

from d2c.captions import CaptionEngine, TemplateError
from d2c.captions.lint import lint
from d2c.model import Instance, Scene

HEADER = "{{#-\nid: evil.{n}\nfamily: count\nweight: 1\nrequires: [main]\n-#}}\n"
ATTACKS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ main.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ (modality|attr('__class__')) }}",
]


def scene() -> Scene:
    return Scene(
        key="s/a",
        source="s",
        image_path="a.png",
        root="/",
        width=100,
        height=100,
        instances=[Instance.from_hbb(10, 10, 40, 20, "ship")],
    )


@pytest.mark.parametrize("n", range(len(ATTACKS)))
def test_attack_fails_naming_template(tmp_path, n):
    (tmp_path / f"evil{n}.j2").write_text(HEADER.format(n=n) + ATTACKS[n], encoding="utf-8")
    engine = CaptionEngine(tmp_path, include_defaults=False)
    with pytest.raises(TemplateError) as err:
        engine.caption(scene())
    msg = str(err.value)
    assert f"evil.{n}" in msg and f"evil{n}.j2" in msg
    assert "sandbox" in msg or "undefined" in msg.lower()
    assert "os" not in engine.env.globals


def test_lint_reports_sandbox_violation(tmp_path):
    (tmp_path / "evil.j2").write_text(HEADER.format(n=0) + ATTACKS[0], encoding="utf-8")
    report = lint(tmp_path, tokenizer="words")
    assert not report.ok
    assert any(p.template_id == "evil.0" and "sandbox" in p.message for p in report.problems)
