"""The caption engine: determinism, family spreading, eligibility, overrides, cache, wording, stats."""

from __future__ import annotations

import pytest

from d2c.captions import CaptionEngine, TemplateError
from d2c.captions.engine import truncate_words
from d2c.captions.lint import _inst, battery, lint
from d2c.captions.stats import CaptionStats, caption_stats
from d2c.captions.words import Vocabulary, join_and, number_words
from d2c.model import Scene

SCENES = battery()


def test_deterministic_and_order_free():
    a = CaptionEngine(seed=3)
    b = CaptionEngine(seed=3)
    forward = [a.caption(s) for s in SCENES]
    backward = [b.caption(s) for s in reversed(SCENES)][::-1]
    assert forward == backward
    other = CaptionEngine(seed=4)
    assert [other.caption(s) for s in SCENES] != forward


def test_n_captions_distinct_and_spread_over_families():
    engine = CaptionEngine(captions_per_image=5)
    for s in SCENES:
        caps = engine.caption(s)
        texts = [c.text for c in caps]
        assert 1 <= len(caps) <= 5 and len(set(texts)) == len(texts)
        eligible = {t.family for t in engine.eligible(engine.attributes(s))}
        fams = [c.family for c in caps]
        # families first: no family repeats before every eligible family has been used
        assert len(set(fams)) == min(len(fams), len(eligible)), (s.key, fams, eligible)


def test_requirements_gate_templates():
    engine = CaptionEngine(captions_per_image=50)
    empty = Scene(key="t/e", source="t", image_path="e", root="/", width=10, height=10)
    assert {c.family for c in engine.caption(empty)} == {"empty"}
    one = Scene(
        key="t/o",
        source="t",
        image_path="o",
        root="/",
        width=900,
        height=900,
        instances=[_inst(450, 450, 40, 10, 0, "ship")],
    )
    ids = {c.template_id for c in engine.caption(one)}
    assert not any(i.startswith(("empty.", "multi.", "arrangement.")) for i in ids)
    assert "size.length" not in ids  # no gsd: no metres claimed
    assert not {"sensor.showing", "sensor.acquired"} & ids  # no image_source: no sensor named


def test_templates_dir_adds_and_overrides(tmp_path):
    base = CaptionEngine()
    (tmp_path / "mine.j2").write_text(
        "{#-\nid: count.shows\nfamily: count\nweight: 5\nrequires: [main]\n-#}\nOVERRIDE {{ main|quantity }}.\n"
    )
    (tmp_path / "new.j2").write_text(
        "{#-\nid: custom.bridges\nfamily: multi-class\nweight: 1\nrequires: [multi]\n-#}\n"
        "{{ multi|length|number|capfirst }} kinds of target.\n"
    )
    (tmp_path / "synonyms.toml").write_text('[nouns]\nship = ["hull"]\n')
    engine = CaptionEngine(tmp_path, captions_per_image=60)
    assert len(engine.templates) == len(base.templates) + 1
    assert engine.template_set_hash != base.template_set_hash
    info = {t.id: t for t in engine.templates}["count.shows"]
    assert info.weight == 5 and info.path.parent == tmp_path
    texts = [c.text for s in SCENES for c in engine.caption(s)]
    assert any(t.startswith("OVERRIDE ") and "hull" in t for t in texts)
    assert any(t.endswith("kinds of target.") for t in texts)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("no front matter\n", "missing front-matter"),
        ("{#-\nid: x\nfamily: poems\nrequires: [main]\n-#}\nx", "family 'poems'"),
        ("{#-\nid: x\nfamily: count\nrequires: [no_such]\n-#}\nx", "unknown attribute"),
        ("{#-\nid: x\nfamily: count\nweight: -1\nrequires: [main]\n-#}\nx", "weight must be positive"),
        ("{#-\nid: x\nfamily: count\nrequires: [main]\n-#}\n{{ main|quantity ", "syntax error"),
    ],
)
def test_bad_templates_name_file(tmp_path, body, needle):
    (tmp_path / "bad.j2").write_text(body)
    with pytest.raises(TemplateError, match=needle) as err:
        CaptionEngine(tmp_path)
    assert "bad.j2" in str(err.value)
    report = lint(tmp_path, tokenizer="words")
    assert any(needle.split("'")[0] in str(p) and "bad.j2" in str(p) for p in report.problems)


def test_lint_undefined_name_and_default_set_clean(tmp_path):
    assert lint(tokenizer="words").ok
    (tmp_path / "u.j2").write_text("{#-\nid: u\nfamily: count\nrequires: [main]\n-#}\n{{ region|place }}\n")
    report = lint(tmp_path, tokenizer="words")
    assert [p.template_id for p in report.problems] == ["u"] and "region" in report.problems[0].message


def test_render_cache_reused():
    engine = CaptionEngine()
    insts = [_inst(450, 450, 40, 10, 0, "ship")]
    scenes = [
        Scene(key=f"t/{i}", source="t", image_path=str(i), root="/", width=900, height=900, instances=insts)
        for i in range(1500)
    ]
    total = sum(len(engine.caption(s)) for s in scenes)
    assert engine.cache_size < total / 4  # identical contexts and wording render once


def test_wording_filters():
    v = Vocabulary.load(__import__("d2c.captions.engine", fromlist=["x"]).DEFAULT_SYNONYMS)
    assert [v.plural(w) for w in ("ship", "aircraft", "harbor", "box", "ferry", "storage tank")] == [
        "ships",
        "aircraft",
        "harbors",
        "boxes",
        "ferries",
        "storage tanks",
    ]
    assert v.article("aircraft") == "an aircraft" and v.article("SAR image") == "a SAR image"
    assert v.article("one-off") == "a one-off" and v.article("hour") == "an hour"
    assert join_and(["a"]) == "a" and join_and(["a", "b", "c"]) == "a, b and c"
    assert number_words(21) == "twenty-one" and number_words(120) == "120"
    assert v.number(3, digits=False, syn=0, threshold=10) == "three"
    assert v.number(3, digits=True, syn=0, threshold=10) == "3"
    above = {
        v.quantity(("ship", 37, 0), digits=False, syn=s, threshold=10).rsplit(" ", 1)[0] for s in range(6)
    }
    assert above == {"many", "more than thirty", "dozens of"}
    assert v.quantity(("ship", 12, 0), digits=True, syn=2, threshold=10) == "many boats"
    assert v.quantity(("ship", 11, 0), digits=True, syn=1, threshold=10) == "more than 10 vessels"
    assert v.quantity(("ship", 3, 1), digits=False, syn=0, threshold=10) == "at least three ships"
    assert (
        v.quantity(("car", 1, 0), digits=False, syn=0, threshold=10, adjective="small")
        == "a single small car"
    )
    assert v.noun("unmapped_thing", 3) == "unmapped thing"


def test_count_threshold_configurable():
    s = Scene(
        key="t/m",
        source="t",
        image_path="m",
        root="/",
        width=900,
        height=900,
        instances=[_inst(30 + 60 * k, 100 + 60 * (k % 7), 20, 8, 0, "ship") for k in range(14)],
    )
    low = " ".join(c.text for c in CaptionEngine(captions_per_image=40, count_threshold=5).caption(s))
    high = " ".join(c.text for c in CaptionEngine(captions_per_image=40, count_threshold=20).caption(s))
    assert "14" in high or "fourteen" in high
    assert "14 " not in low and "fourteen" not in low


def test_truncation_never_cuts_a_number():
    text = "A SAR image with three ships, two of them in the centre and one boat away from the edge."
    assert truncate_words(text, 40) == text
    cut = truncate_words(text, 8)
    assert cut == "A SAR image with three ships."
    # only number words: nothing kept
    assert truncate_words("one two three four five six seven ships", 5) == ""
    assert truncate_words("There are many ships and twenty boats", 6) == "There are many ships."
    assert truncate_words("Ships about 120 m long", 3) == "Ships."


def test_stats_measures_diversity_and_duplicates():
    rows = [
        ("a", ["x y z", "shared caption"], ["count.a", "size.b"]),
        ("b", ["shared caption", "p q"], ["count.a", "position.c"]),
        ("c", [], []),
    ]
    r = caption_stats(rows, families={"size.b": "size"})
    assert r["images"] == 3 and r["captions"] == 4 and r["images_without_captions"] == 1
    assert r["captions_per_image"] == pytest.approx(4 / 3)
    assert r["distinct_captions_ratio"] == pytest.approx(3 / 4)
    assert r["duplicate_rate"] == pytest.approx(2 / 4)
    assert r["distinct_1"] == pytest.approx(7 / 9)  # x y z shared caption shared caption p q
    assert r["distinct_2"] == pytest.approx(4 / 5)
    assert r["family_coverage"] == {"count": 0.5, "position": 0.25, "size": 0.25}
    assert r["mean_token_length"] == pytest.approx(9 / 4)
    # shard-wise accumulation merges to the same result
    left = CaptionStats(families={"size.b": "size"}).update(rows[:1])
    right = CaptionStats(families={"size.b": "size"}).update(rows[1:])
    assert left.merge(right).result() == r
