"""The caption engine: determinism, family spreading, eligibility, overrides, cache, wording, stats."""

from __future__ import annotations

import pytest

from d2c.captions import CaptionEngine, TemplateError
from d2c.captions.lint import _inst, battery, lint
from d2c.captions.sandbox import truncate_words
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


def test_lint_counts_clip_tokens():
    """The shipped set fits CLIP's context in open_clip's own BPE tokens (not only the word bound), and a
    caption of short words that passes the word bound is caught by its token count."""
    report = lint(tokenizer="clip")
    assert report.ok and report.length_unit == "clip tokens" and 10 < report.max_length <= 64, report.max_length


def test_lint_clip_tokens_catch_what_words_miss(tmp_path):
    body = " ".join(["x-y-z"] * 20)  # 20 words, about 100 BPE tokens
    (tmp_path / "long.j2").write_text(f"{{#-\nid: long\nfamily: count\nrequires: [main]\n-#}}\n{body}\n")
    assert lint(tmp_path, tokenizer="words").ok
    report = lint(tmp_path, tokenizer="clip")
    assert [p.template_id for p in report.problems] == ["long"] and "token" in report.problems[0].message


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


def test_caption_many_equals_caption_whatever_the_batches():
    whole = CaptionEngine(seed=11).caption_many(SCENES)
    split = CaptionEngine(seed=11)
    parts = split.caption_many(SCENES[7:]) + split.caption_many(SCENES[:7])
    assert parts == whole[7:] + whole[:7]
    single = CaptionEngine(seed=11)
    assert whole == [([c.text for c in caps], [c.template_id for c in caps]) for caps in map(single.caption, SCENES)]
    assert all(1 <= len(texts) == len(ids) <= 5 for texts, ids in whole)
    assert CaptionEngine(seed=11).caption_many([]) == []


def test_caption_many_returns_a_failing_scene_s_error_and_captions_the_rest(tmp_path):
    (tmp_path / "div.j2").write_text(
        "{#-\nid: count.div\nfamily: count\nrequires: [main]\n-#}\n{{ 12 // (main[1] - 1) }} per pair.\n"
    )
    (tmp_path / "ok.j2").write_text(
        "{#-\nid: size.ok\nfamily: size\nrequires: [main]\n-#}\n{{ main|quantity|capfirst }} here.\n"
    )
    engine = CaptionEngine(tmp_path, include_defaults=False, captions_per_image=2)

    def ships(n: int) -> Scene:
        insts = [_inst(100 + 200 * k, 450, 40, 10, 0, "ship") for k in range(n)]
        return Scene(key=f"t/{n}", source="t", image_path=f"{n}", root="/", width=900, height=900, instances=insts)

    one, three = engine.caption_many([ships(1), ships(3)])
    assert isinstance(one, TemplateError) and "count.div" in str(one) and "div.j2" in str(one)
    texts, ids = three
    assert sorted(ids) == ["count.div", "size.ok"] and "6 per pair." in texts
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        engine.caption(ships(1))


def test_scene_uniforms_are_splitmix64_by_draw_index():
    import numpy as np

    from d2c.captions.choice import scene_uniforms
    from d2c.model import scene_seed

    assert scene_uniforms(np.zeros(1, np.uint64), 0, 1)[0, 0] == (0xE220A8397B1DCDAF >> 11) / 2**53  # reference
    seeds = np.array([scene_seed(0, f"t/{i}") for i in range(500)], dtype=np.uint64)
    whole = scene_uniforms(seeds, 0, 40)
    assert np.array_equal(whole[:, 10:25], scene_uniforms(seeds, 10, 15))  # any window of the stream
    assert np.array_equal(whole[7:8], scene_uniforms(seeds[7:8], 0, 40))  # any batch of scenes
    assert ((whole >= 0) & (whole < 1)).all()
    assert abs(whole.mean() - 0.5) < 0.01 and abs((whole < 0.1).mean() - 0.1) < 0.01
    assert abs(np.corrcoef(whole[:, 0], whole[:, 1])[0, 1]) < 0.1


def test_dropping_the_memo_tables_between_batches_changes_nothing(monkeypatch):
    import d2c.captions.engine as E

    want = CaptionEngine(seed=2).caption_many(SCENES)
    monkeypatch.setattr(E, "_TABLE_LIMIT", 1)  # every batch starts from empty tables
    engine = CaptionEngine(seed=2)
    assert [r for s in SCENES for r in engine.caption_many([s])] == want


def _varied(n: int, seed: int) -> list[Scene]:
    """Scenes of 0-6 boxes of one to three classes (often three of one class), boxes on or near grid-cell
    lines, of every size bucket and orientation; some without a frame, with gsd or with a named sensor."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        w, h = (int(v) for v in rng.choice([300, 600, 900, 1024], size=2))
        insts = []
        for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3, 3, 3, 4, 6]))):
            cx = float(rng.choice([w / 3, 2 * w / 3, rng.uniform(10, w - 10)]))
            cy = float(rng.choice([h / 3, rng.uniform(10, h - 10)]))
            long = float(rng.choice([6, 20, 60, 200]) * rng.uniform(1.0, 1.5))
            short = long / float(rng.choice([1.0, 1.1, 2.0, 4.0]))
            cls = ("ship", "car", "tank")[int(rng.integers(0, 1 + k % 3))]
            insts.append(_inst(cx, cy, long, short, float(rng.choice([0, 45, 90, rng.uniform(0, 180)])), cls,
                               difficult=bool(rng.random() < 0.2)))
        framed = k % 9 != 4
        out.append(Scene(key=f"v{seed}/{k}", source="v", image_path=f"{k}.png", root="/",
                         width=w if framed else None, height=h if framed else None, instances=insts,
                         gsd=0.7 if k % 11 == 5 else None, image_source="Sentinel-1" if k % 5 == 2 else None))
    return out


@pytest.mark.parametrize(("seed", "cpi", "extra"), [(0, 5, False), (3, 2, False), (5, 9, True)])
def test_small_batches_caption_exactly_as_the_batch_path(tmp_path, monkeypatch, seed, cpi, extra):
    """A few scenes at a time (plain Python over the same tables and draws) give what one large batch (array
    steps) gives, scene for scene, in any order and batch size; and so does a single scene forced through the
    array steps. ``extra`` adds templates that fail on some scenes and weights whose sums overflow."""
    import random

    import d2c.captions.engine as E

    if extra:
        (tmp_path / "div.j2").write_text(
            "{#-\nid: count.div\nfamily: count\nrequires: [total]\n-#}\n{{ 12 // (total[0] - 2) }} per pair.\n"
        )
        for name in ("huge_a", "huge_b"):
            (tmp_path / f"{name}.j2").write_text(
                f"{{#-\nid: size.{name}\nfamily: size\nweight: 1e308\nrequires: [main]\n-#}}\n"
                f"{{{{ main|quantity|capfirst }}}} ({name}).\n"
            )
    folder = tmp_path if extra else None
    scenes = _varied(300, seed) + SCENES

    def plain(result):
        return result if not isinstance(result, Exception) else (type(result), str(result))

    whole = [plain(r) for r in CaptionEngine(folder, seed=seed, captions_per_image=cpi).caption_many(scenes)]
    assert len(scenes) > E.SMALL_BATCH
    if extra:
        assert any(isinstance(r, tuple) and r[0] is TemplateError for r in whole)
        assert any(not isinstance(r[0], type) and "size.huge_b" in r[1] for r in whole)
    small = CaptionEngine(folder, seed=seed, captions_per_image=cpi)
    rng = random.Random(seed)
    order = rng.sample(range(len(scenes)), len(scenes))
    got: dict[int, object] = {}
    at = 0
    while at < len(order):
        part = order[at : at + rng.randint(1, E.SMALL_BATCH)]
        at += len(part)
        for k, r in zip(part, small.caption_many([scenes[k] for k in part]), strict=True):
            got[k] = plain(r)
    assert [got[k] for k in range(len(scenes))] == whole
    monkeypatch.setattr(E, "SMALL_BATCH", 0)  # one scene through the array steps
    arrays = CaptionEngine(folder, seed=seed, captions_per_image=cpi)
    assert [plain(arrays.caption_many([s])[0]) for s in scenes[::7]] == whole[::7]


def test_scalar_discretisation_equals_the_array_helpers():
    """The plain-Python cell, size and orientation codes (scene signatures) equal the array ones, on the
    boundaries too, so scenes that share a signature share their attributes."""
    import numpy as np

    from d2c.captions import attributes as A

    rng = np.random.default_rng(0)
    size = np.array([300.0, 900.0, 1024.0, 7.0, 1e-9, 3e12])[rng.integers(0, 6, 4000)]
    x = np.concatenate([size[:1000] * rng.integers(0, 4, 1000) / 3, rng.uniform(-50, 1100, 3000)])
    want = A.cell_codes(x, x[::-1], size, size[::-1])
    assert [A.cell_code(a, b, c, d) for a, b, c, d in zip(x, x[::-1], size, size[::-1], strict=True)] == want.tolist()
    rel = np.concatenate([[0.0, 0.001, 0.01, 0.1, 1.0, np.nextafter(0.001, 0), np.nextafter(0.1, 1), np.inf],
                          rng.uniform(0, 0.2, 2000)])
    assert [A.size_code(r) for r in rel] == A.size_codes(rel).tolist()
    angle = np.concatenate([[0, 22.5, 67.5, 112.5, 157.5, np.nextafter(22.5, 0), np.nextafter(157.5, 0)],
                            rng.uniform(0, 180, 2000)])
    short = rng.choice([0.0, 1.0, 5.0, 10.0], len(angle))
    long = short * rng.choice([1.0, 1.2, np.nextafter(1.2, 0), 3.0], len(angle)) + (short == 0)
    got = [A.orientation_code(a, lo, s) for a, lo, s in zip(angle, long, short, strict=True)]
    assert got == A.orientation_codes(angle, long, short).tolist()


def test_synonym_siblings_of_a_render_are_one_slice_of_its_row():
    """The synonym indices that share a render's text (congruent to its index modulo every modulus the
    filters reduced it by) are evenly spaced, so the text table sets them with one slice: checked for
    every index and every set of up to three moduli a filter could record."""
    import itertools

    from d2c.captions.choice import _wordings
    from d2c.captions.sandbox import SYN_RANGE, SynIndex

    row = list(range(3 * SYN_RANGE * 2))  # (modality, syn, digits) cells of one context
    for count in range(4):
        for moduli in itertools.combinations(range(1, 2 * SYN_RANGE + 1), count):
            for value in range(SYN_RANGE):
                syn = SynIndex(value)
                for m in moduli:
                    syn % m  # noqa: B018 - what a filter does
                same = syn.congruent(range(SYN_RANGE))
                for base in (0, 1, 2 * SYN_RANGE + 1, 4 * SYN_RANGE):
                    assert row[_wordings(base, same)] == [base + 2 * v for v in same]


def test_choice_steps_pick_by_the_rule_with_shared_tables():
    """Every step's pick (array and plain) and next step follow the rule worked out afresh from the templates
    left and the families used in the round, though steps with the same candidates share one table."""
    import random

    import numpy as np

    from d2c.captions.choice import Choices

    templates = CaptionEngine().templates
    family = [t.family for t in templates]

    def first_above(weights: list[float], u: float) -> int:
        target, acc = u * sum(weights), 0.0
        for k, w in enumerate(weights):
            acc += w
            if acc > target:
                return k
        return len(weights) - 1

    def rule(left: list[int], used: set[str], u_family: float, u_member: float) -> int:
        candidates = [i for i in left if family[i] not in used] or left
        names = sorted({family[i] for i in candidates})
        members = [[i for i in candidates if family[i] == f] for f in names]
        chosen = members[first_above([sum(templates[i].weight for i in m) for m in members], u_family)]
        return chosen[first_above([templates[i].weight for i in chosen], u_member)]

    choices = Choices(templates)
    rng = random.Random(4)
    steps = 0
    for _ in range(300):
        left = sorted(rng.sample(range(len(templates)), rng.randint(0, len(templates))))
        used: set[str] = set()
        step = choices.first(sum(1 << i for i in left))
        while True:
            assert choices.live_one(step) == bool(left) == bool(choices.live(np.array([step]))[0])
            if not left:
                break
            u_family, u_member = rng.random(), rng.random()
            idx = rule(left, used, u_family, u_member)
            assert choices.pick_one(step, u_family, u_member) == idx
            assert choices.pick(np.array([step]), np.array([u_family]), np.array([u_member]))[0] == idx
            new_round = all(family[i] in used for i in left)
            left.remove(idx)
            used = (set() if new_round else used) | {family[idx]}
            step, before = choices.after_one(step, idx), step
            assert choices.after(np.array([before]), np.array([idx]))[0] == step
            steps += 1
    assert steps > 3000


def test_attribute_cache_by_discrete_facts_gives_each_scene_its_own_attributes():
    """Blocks looked up by their discrete facts (class and source ids shared across blocks of different
    classes and widths) give every scene exactly the attributes computed for it alone, and derive each
    distinct set of a shared scene's values once."""
    from d2c.blocks import SceneBlock
    from d2c.captions import attributes as A

    engine = CaptionEngine()
    names = engine._needed
    calls: list[dict] = []
    cache = A.AttributeCache(names, engine.vocab.sensors, derive=lambda attrs: calls.append(attrs) or attrs)
    scenes = _varied(400, 8) + _varied(300, 9) + SCENES
    assert cache.by_signature
    got = []
    for lo, hi in ((0, 120), (120, 121), (121, 400), (400, len(scenes))):  # one class only in some blocks
        got += cache.get_block(SceneBlock.from_scenes(scenes[lo:hi]))
    first = len(calls)
    got += cache.get_block(SceneBlock.from_scenes(scenes[::-1]))[::-1]  # all met before
    sensors = engine.vocab.sensors
    want = [A.compute(s, names, sensors) for s in scenes]
    assert got == want + want
    shared = A.Batch.of(scenes, sensors).shared.tolist()
    distinct = {tuple(w.values()) for w, s in zip(want, shared, strict=True) if s}
    assert first <= len(distinct) + shared.count(False) < len(scenes)
    assert 0 < len(calls) - first <= shared.count(False)  # only scenes that read geometry are derived again
