"""Every claim a rendered caption makes is checked against the boxes of scenes with known truth.

Each attribute a template ``requires`` has a checker below that finds the claim's words in the text and
re-derives the fact from the boxes with its own (brute-force) code. A template requiring an attribute
with no checker fails the suite, so an uncheckable template cannot ship. On top, every count phrase in
every caption is checked, and claim words (cells, sizes, orientations, arrangements, lengths, sensors)
may only appear in templates that require the matching attribute.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from d2c.captions import CaptionEngine
from d2c.captions.lint import _inst, battery
from d2c.captions.words import number_words
from d2c.model import Scene
from d2c.partial import PARTIAL_FLAG

THRESHOLD = 10
ENGINE = CaptionEngine(captions_per_image=100, seed=0, count_threshold=THRESHOLD)
VOCAB = ENGINE.vocab
WORD_NUM = {number_words(i): i for i in range(100)}


# ---------- truth, computed independently of d2c.captions.attributes ----------


def cell_of(x: float, y: float, scene: Scene) -> str:
    names = [
        ["top-left", "top", "top-right"],
        ["left", "centre", "right"],
        ["bottom-left", "bottom", "bottom-right"],
    ]
    col = min(2, int(3 * x // scene.width))
    row = min(2, int(3 * y // scene.height))
    return names[row][col]


def bucket_of(area: float, scene: Scene) -> str:
    r = area / (scene.width * scene.height)
    return "tiny" if r < 0.001 else "small" if r < 0.01 else "medium" if r < 0.1 else "large"


def orient_of(obb) -> str | None:
    _, _, w, h, a = obb
    if w / h < 1.2:
        return None
    if a < 22.5 or a >= 157.5:
        return "horizontal"
    return "vertical" if 67.5 <= a < 112.5 else "diagonal"


def linked(a, b, factor: float) -> bool:
    return math.dist(a.obb[:2], b.obb[:2]) <= factor * (a.obb[2] + b.obb[2]) / 2


def groups(insts, factor: float) -> list[list[int]]:
    """Connected components by repeated merging (brute force)."""
    comps = [{i} for i in range(len(insts))]
    merged = True
    while merged:
        merged = False
        for i in range(len(comps)):
            for j in range(i + 1, len(comps)):
                if any(linked(insts[a], insts[b], factor) for a in comps[i] for b in comps[j]):
                    comps[i] |= comps.pop(j)
                    merged = True
                    break
            if merged:
                break
    return [sorted(c) for c in comps]


def main_class(scene: Scene) -> str:
    counts = scene.counts()
    return sorted(counts, key=lambda c: (-counts[c], c))[0]


def main_insts(scene: Scene):
    m = main_class(scene)
    return [i for i in scene.instances if i.category == m]


def majority(values, value) -> bool:
    return sum(v == value for v in values) * 2 > len(values)


# ---------- parsing helpers ----------

NOUNS: dict[str, str] = {"annotated target": "*", "annotated targets": "*", "object": "*", "objects": "*"}
for cls in ["ship", "aircraft", "car", "tank", "bridge", "harbor", "unmapped_class_name"]:
    for w in VOCAB.synonyms(cls):
        NOUNS[w] = cls
        NOUNS[VOCAB.plural(w)] = cls
NOUN_RE = "|".join(sorted(map(re.escape, NOUNS), key=len, reverse=True))
NUM_RE = r"a single|one|\d+|many|dozens of|more than [\w-]+|" + "|".join(
    sorted(WORD_NUM, key=len, reverse=True)
)
COUNT_RE = re.compile(
    rf"\b(at least )?({NUM_RE}) (?:(tiny|small|medium|large) )?({NOUN_RE})\b", re.IGNORECASE
)
CELL_PHRASES = {p: cell for cell, ps in VOCAB.cells.items() for p in ps}
CELL_RE = re.compile("|".join(sorted(map(re.escape, CELL_PHRASES), key=len, reverse=True)))


def to_int(word: str) -> int:
    word = word.lower()
    return int(word) if word.isdigit() else 1 if word in ("a single", "one") else WORD_NUM[word]


def count_claim_true(phrase: str, hedge: bool, truth: int) -> bool:
    p = phrase.lower()
    if p == "many":
        return truth > THRESHOLD
    if p == "dozens of":
        return truth >= 24
    if p.startswith("more than "):
        return truth > to_int(p[10:])
    n = to_int(p)
    return truth >= n if hedge else truth == n


def check_counts(text: str, scene: Scene) -> list[tuple[str, int]]:
    """Every '<number> <noun>' in the text is true; returns (class, claimed) pairs found."""
    found = []
    counts = scene.counts()
    for m in COUNT_RE.finditer(text):
        hedge, phrase, _, noun = m.groups()
        if text[m.end() :].startswith(
            (" in the centre", " in the middle", " is in the middle", " are in the middle")
        ):
            continue  # a part of the group (checked by c_centre_edge), not a count of the class
        cls = NOUNS[noun.lower()]
        truth = scene.num_instances if cls == "*" else counts.get(cls, 0)
        assert count_claim_true(phrase, bool(hedge), truth), (
            f"count claim {m.group(0)!r} but truth {truth}: {text}"
        )
        found.append((cls, truth))
    return found


def cells_in(text: str) -> list[str]:
    return [CELL_PHRASES[m.group(0)] for m in CELL_RE.finditer(text)]


def names_class(text: str, cls: str) -> bool:
    return any(
        NOUNS[m.group(0).lower()] == cls for m in re.finditer(rf"\b({NOUN_RE})\b", text, re.IGNORECASE)
    )


def lengths_m(scene: Scene, insts) -> list[float]:
    return [i.obb[2] * scene.gsd for i in insts]


# ---------- one checker per attribute ----------


def c_empty(text, scene):
    assert scene.num_instances == 0
    assert re.search(r"\bno annotated (targets|objects)\b|without any labelled targets", text, re.IGNORECASE)


def c_total(text, scene):
    assert any(cls == "*" for cls, _ in check_counts(text, scene))


def c_main(text, scene):
    assert names_class(text, main_class(scene))


def c_only(text, scene):
    assert len(scene.counts()) == 1 and "only" in text and names_class(text, main_class(scene))


def c_multi(text, scene):
    counts = scene.counts()
    assert len(counts) >= 2
    for cls in counts:
        assert names_class(text, cls), f"{cls} not named: {text}"
    m = re.search(r"of ([\w-]+) classes", text)
    if m:
        assert to_int(m.group(1)) == len(counts)


def c_single_cell(text, scene):
    (inst,) = scene.instances
    assert cells_in(text) == [cell_of(*inst.centre, scene)], text


def c_region(text, scene):
    m = re.search(r"[Mm]ost of (?:them|the [\w ]+? in this [\w ]+? lie)", text)
    assert m and len(cells_in(text)) == 1, text
    assert majority([cell_of(*i.centre, scene) for i in main_insts(scene)], cells_in(text)[0]), text


def c_centre_edge(text, scene):
    num = r"((?:more than )?[\w-]+)"
    m = re.search(
        num + r"(?: [\w ]+?)? in the (?:centre|middle) and (?:the other )?" + num + " away from the centre",
        text,
    )
    assert m, text
    cells = [cell_of(*i.centre, scene) for i in main_insts(scene)]
    centre = cells.count("centre")
    assert count_claim_true(m.group(1), False, centre) and count_claim_true(
        m.group(2), False, len(cells) - centre
    ), text


def c_all_edge(text, scene):
    assert "none of them in the centre" in text
    assert all(cell_of(*i.centre, scene) != "centre" for i in main_insts(scene))


def c_size_uniform(text, scene):
    words = re.findall(r"\b(tiny|small|medium|large)\b", text)
    assert len(words) == 1, text
    assert all(bucket_of(i.area, scene) == words[0] for i in main_insts(scene)), text


def c_size_dominant(text, scene):
    m = re.search(r"most of them (tiny|small|medium|large)\b", text)
    assert m, text
    assert majority([bucket_of(i.area, scene) for i in main_insts(scene)], m.group(1))


def c_length_single(text, scene):
    m = re.search(r"(?:about|roughly) (\d+) (?:m|metres)\b", text)
    assert m, text
    (true,) = lengths_m(scene, main_insts(scene))
    step = 1 if true < 20 else 5 if true < 100 else 10
    assert abs(int(m.group(1)) - true) <= step / 2 + 1e-6 or (int(m.group(1)) == step and true < step), text


def c_length_range(text, scene):
    m = re.search(r"between (\d+) and (\d+) (?:m|metres) long", text)
    assert m, text
    lo, hi = int(m.group(1)), int(m.group(2))
    assert all(lo - 1e-6 <= v <= hi + 1e-6 for v in lengths_m(scene, main_insts(scene))), text


def _orient_word(text):
    words = re.findall(r"\b(horizontal|vertical|diagonal)ly\b", text)
    assert len(words) == 1, text
    return words[0]


def c_orientation_uniform(text, scene):
    w = _orient_word(text)
    assert all(orient_of(i.obb) == w for i in main_insts(scene)), text


def c_orientation_dominant(text, scene):
    w = _orient_word(text)
    assert "most of" in text.lower() and majority([orient_of(i.obb) for i in main_insts(scene)], w), text


def c_dense(text, scene):
    assert "densely packed" in text
    insts = main_insts(scene)
    assert len(insts) >= 4 and len(groups(insts, 1.0)) == 1


def c_row(text, scene):
    assert re.search(r"in a row|in a straight line", text), text
    insts = main_insts(scene)
    pts = np.array([i.centre for i in insts])
    pts = pts - pts.mean(axis=0)
    _, vecs = np.linalg.eigh(pts.T @ pts)
    normal = vecs[:, 0]  # smallest eigenvalue: perpendicular to the best line
    tol = 0.5 * float(np.median([i.obb[3] for i in insts]))
    assert len(insts) >= 3 and np.abs(pts @ normal).max() <= tol + 1e-9


def c_clusters(text, scene):
    m = re.search(r"forming ((?:more than )?[\w-]+) clusters?\b", text)
    assert m, text
    k = sum(1 for g in groups(main_insts(scene), 2.0) if len(g) >= 2)
    assert count_claim_true(m.group(1), False, k), text


def c_scattered(text, scene):
    assert "scattered" in text
    insts = main_insts(scene)
    assert len(insts) >= 3 and all(len(g) == 1 for g in groups(insts, 2.0))


def c_isolated(text, scene):
    m = re.search(r"((?:more than )?[\w-]+) of them isolated from the rest", text)
    assert m, text
    comps = groups(scene.instances, 2.0)
    main = main_class(scene)
    alone = sum(1 for g in comps if len(g) == 1 and scene.instances[g[0]].category == main)
    assert count_claim_true(m.group(1), False, alone), text


def c_sensor(text, scene):
    name = VOCAB.sensors[scene.image_source.lower()]
    assert name in text, text


def c_partial(text, scene):
    """Of a scene some of whose objects were rejected, only that it has annotated objects."""
    assert PARTIAL_FLAG in scene.flags and re.search(r"\bat least (one|1) annotated target\b", text), text


CHECKERS = {
    "empty": c_empty,
    "total": c_total,
    "main": c_main,
    "only": c_only,
    "multi": c_multi,
    "single_cell": c_single_cell,
    "region": c_region,
    "centre_edge": c_centre_edge,
    "all_edge": c_all_edge,
    "size_uniform": c_size_uniform,
    "size_dominant": c_size_dominant,
    "length_single": c_length_single,
    "length_range": c_length_range,
    "orientation_uniform": c_orientation_uniform,
    "orientation_dominant": c_orientation_dominant,
    "dense": c_dense,
    "row": c_row,
    "clusters": c_clusters,
    "scattered": c_scattered,
    "isolated": c_isolated,
    "sensor": c_sensor,
    "partial": c_partial,
}

# claim words -> the attributes that license them
GUARDS = [
    (
        re.compile("|".join(re.escape(p) for p, c in CELL_PHRASES.items() if c != "centre")),
        {"single_cell", "region"},
    ),
    (re.compile(r"\b(centre|middle)\b"), {"single_cell", "region", "centre_edge", "all_edge"}),
    (re.compile(r"\b(tiny|small|medium|large)\b"), {"size_uniform", "size_dominant"}),
    (re.compile(r"\d+ (m|metres)\b"), {"length_single", "length_range"}),
    (re.compile(r"\b(horizontal|vertical|diagonal)"), {"orientation_uniform", "orientation_dominant"}),
    (re.compile(r"densely"), {"dense"}),
    (re.compile(r"\brow\b|straight line"), {"row"}),
    (re.compile(r"cluster"), {"clusters"}),
    (re.compile(r"scattered"), {"scattered"}),
    (re.compile(r"isolated"), {"isolated"}),
    (re.compile("|".join(map(re.escape, set(VOCAB.sensors.values())))), {"sensor"}),
    (re.compile(r"\bno annotated|without any", re.IGNORECASE), {"empty"}),
    (re.compile(r"\bonly\b"), {"only"}),
]


def truth_scenes() -> list[Scene]:
    """Recipes with known structure plus random mixtures and the lint battery."""
    rng = np.random.default_rng(7)
    scenes = list(battery())

    def add(insts, gsd=None, source=None, size=(1000, 800)):
        i = len(scenes)
        scenes.append(
            Scene(
                key=f"truth/{i:04d}",
                source="truth",
                image_path=f"{i}.png",
                root="/",
                width=size[0],
                height=size[1],
                instances=insts,
                gsd=gsd,
                image_source=source,
            )
        )

    for k in range(60):
        recipe = k % 6
        if recipe == 0:  # row along a random direction
            a = float(rng.uniform(0, 180))
            d = np.array([math.cos(math.radians(a)), math.sin(math.radians(a))])
            n = int(rng.integers(3, 8))
            insts = [
                _inst(*(np.array([500, 400]) + (j - n / 2) * 45 * d), 40, 12, (a + 90) % 180, "ship")
                for j in range(n)
            ]
        elif recipe == 1:  # dense block
            n = int(rng.integers(4, 14))
            insts = [
                _inst(300 + 22 * (j % 4), 300 + 22 * (j // 4), 24, 8, float(rng.uniform(0, 180)), "car")
                for j in range(n)
            ]
        elif recipe == 2:  # scattered
            pts = [(100 + 800 * (j % 2) + 10 * j, 100 + 200 * j) for j in range(int(rng.integers(3, 4)))]
            insts = [_inst(x, y, 30, 10, float(rng.uniform(0, 180)), "aircraft") for x, y in pts]
        elif recipe == 3:  # single object, varied size
            w = float(rng.uniform(10, 600))
            insts = [
                _inst(
                    float(rng.uniform(0, 1000)),
                    float(rng.uniform(0, 800)),
                    w,
                    w / float(rng.uniform(1, 5)),
                    float(rng.uniform(0, 180)),
                    "ship",
                    bool(rng.random() < 0.3),
                )
            ]
        else:  # random mixture, sometimes many objects
            n = int(rng.integers(2, 45))
            insts = [
                _inst(
                    float(rng.uniform(0, 1000)),
                    float(rng.uniform(0, 800)),
                    float(rng.uniform(8, 120)),
                    float(rng.uniform(4, 8)),
                    float(rng.uniform(0, 180)),
                    str(rng.choice(["ship", "ship", "tank", "bridge"])),
                    bool(rng.random() < 0.05),
                )
                for _ in range(n)
            ]
        add(insts, gsd=float(rng.uniform(0.3, 5)) if k % 2 else None, source=["Gaofen-3", None, "s1"][k % 3])
    return scenes


SCENES = truth_scenes()


def test_every_required_attribute_has_a_checker():
    missing = {r for t in ENGINE.templates for r in t.requires} - set(CHECKERS)
    assert not missing, f"templates make claims no checker verifies: {missing}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_claim_is_true(seed):
    engine = CaptionEngine(captions_per_image=100, seed=seed, count_threshold=THRESHOLD)
    infos = {t.id: t for t in engine.templates}
    used = set()
    for scene in SCENES:
        for cap in engine.caption(scene):
            info = infos[cap.template_id]
            used.add(cap.template_id)
            check_counts(cap.text, scene)
            for req in info.requires:
                CHECKERS[req](cap.text, scene)
            for pattern, allowed in GUARDS:
                if pattern.search(cap.text):
                    assert allowed & set(info.requires), (
                        f"{cap.template_id} claims {pattern.pattern!r}: {cap.text}"
                    )
    complete = {t.id for t in engine.templates if t.captions(partial=False)}
    assert used == complete, f"templates never rendered (unchecked): {complete - used}"


def partial_scenes() -> list[tuple[Scene, Scene]]:
    """(what was annotated, what was kept) pairs: each truth scene with a random part of its objects
    rejected (all of them, for some), the kept part flagged as the convert pipeline flags it."""
    rng = np.random.default_rng(18)
    pairs = []
    for k, full in enumerate(SCENES):
        if not full.instances:
            continue
        n = len(full.instances)
        lost = n if k % 7 == 0 else int(rng.integers(1, n + 1)) if n > 1 else 1
        drop = set(rng.choice(n, size=lost, replace=False).tolist())
        kept = Scene(key=full.key + "-partial", source=full.source, image_path=full.image_path, root=full.root,
                     width=full.width, height=full.height, gsd=full.gsd, image_source=full.image_source,
                     instances=[i for j, i in enumerate(full.instances) if j not in drop], flags=[PARTIAL_FLAG])
        pairs.append((full, kept))
    return pairs


TOTAL_CLAIMS = {"empty", "total", "only"}


@pytest.mark.parametrize("seed", [0, 1])
def test_partial_scenes_claim_no_total(seed):
    """A scene kept with --keep-partial-scenes is captioned only by templates whose ``scenes`` allows it,
    and every caption is true whatever the rejected objects were: counts are lower bounds of what was kept
    ("at least", "many", "more than"), never totals; no emptiness or "only"."""
    engine = CaptionEngine(captions_per_image=100, seed=seed, count_threshold=THRESHOLD)
    infos = {t.id: t for t in engine.templates}
    used = set()
    for full, kept in partial_scenes():
        caps = engine.caption(kept)
        assert caps, f"{kept.key}: no caption"
        for cap in caps:
            info = infos[cap.template_id]
            used.add(cap.template_id)
            assert info.scenes in ("partial", "any") and not TOTAL_CLAIMS & set(info.requires), cap
            for m in COUNT_RE.finditer(cap.text):
                hedge, phrase, _, noun = m.groups()
                assert hedge or phrase.lower() in ("many", "dozens of") or phrase.lower().startswith("more than "), (
                    f"{cap.template_id} states a total of a partial scene: {cap.text}")
                cls = NOUNS[noun.lower()]
                truth = full.num_instances if cls == "*" else kept.counts().get(cls, 0)
                assert count_claim_true(phrase, True, truth), f"{m.group(0)!r} but {truth} kept: {cap.text}"
            for req in info.requires:
                CHECKERS[req](cap.text, kept)
            for pattern, allowed in GUARDS:
                if pattern.search(cap.text):
                    assert allowed & set(info.requires) - TOTAL_CLAIMS, f"{cap.template_id}: {cap.text}"
    assert used == {t.id for t in engine.templates if t.captions(partial=True)}


def test_partial_flag_changes_the_templates_not_the_cache():
    """The same objects flagged partial or not share no cached choice: the engine's memo keys on the flag
    (one at a time and in a batch)."""
    engine = CaptionEngine(captions_per_image=5, seed=0)
    full, kept = next((f, k) for f, k in partial_scenes() if k.instances)
    plain = Scene(key=kept.key, source=kept.source, image_path=kept.image_path, root=kept.root, width=kept.width,
                  height=kept.height, gsd=kept.gsd, image_source=kept.image_source, instances=kept.instances)
    for _ in range(2):
        ids_plain = {c.template_id for c in engine.caption(plain)}
        ids_partial = {c.template_id for c in engine.caption(kept)}
        assert all(engine._by_id[t].captions(partial=False) for t in ids_plain)
        assert all(engine._by_id[t].captions(partial=True) for t in ids_partial)
    batch = engine.caption_many([plain, kept] * 20)
    assert batch[0] != batch[1] and batch[0] == batch[-2] and batch[1] == batch[-1]
    assert batch[1][0] == [c.text for c in engine.caption(kept)]


def test_checkers_catch_false_claims():
    """The checkers can fail: a wrong count, cell or orientation is caught."""
    scene = Scene(
        key="t/x",
        source="t",
        image_path="x.png",
        root="/",
        width=900,
        height=900,
        instances=[_inst(100, 100, 60, 10, 0.0, "ship")],
        gsd=2.0,
    )
    with pytest.raises(AssertionError):
        check_counts("A SAR image with two ships.", scene)
    with pytest.raises(AssertionError):
        c_single_cell("A ship lies in the centre of this SAR image.", scene)
    with pytest.raises(AssertionError):
        c_orientation_uniform("A ship lying vertically.", scene)
    with pytest.raises(AssertionError):
        c_length_single("A ship about 150 m long.", scene)
    c_length_single("A ship about 120 m long.", scene)
