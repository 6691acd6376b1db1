"""The caption engine's per-render shortcuts against the general code they stand for: the one-split clean-up
of a render, ``capfirst`` returning its argument, the memoised cells a render serves, and the sync ``map``
filter against Jinja2's own."""

from __future__ import annotations

import itertools

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d2c.captions.choice import _served, _wordings
from d2c.captions.sandbox import (
    MAX_WORDS,
    SYN_RANGE,
    SynIndex,
    clean,
    make_environment,
    normalise,
    truncate_words,
)
from d2c.captions.templates import DEFAULT_SYNONYMS
from d2c.captions.words import Vocabulary, capfirst

_WORDS = ["a", "ship", "three", "3", ",", ".", ";", ":", "and", "many", "ships,", "the", "éclair", "ß", "SAR"]
_SPACES = [" ", "  ", "\n", "\t", " \u3000 ", ""]


def _general(raw: str, max_words: int) -> str:
    """What the engine did before :func:`clean`: normalise, then cut, unless the render is blank."""
    return truncate_words(normalise(raw), max_words) if raw.strip() else ""


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(_SPACES), st.sampled_from(_WORDS)), max_size=60),
    st.sampled_from(_SPACES),
    st.integers(1, MAX_WORDS),
)
def test_clean_is_normalise_then_truncate(pieces, tail, max_words):
    raw = "".join(space + word for space, word in pieces) + tail
    assert clean(raw, max_words) == _general(raw, max_words)


@pytest.mark.parametrize(
    "raw",
    ["", "   \n", "a ship , near the coast .", "x " * MAX_WORDS, "x " * (MAX_WORDS + 1), "y , " * 40, "ß ship"],
)
def test_clean_edge_cases(raw):
    """Blank, exactly at the limit, one over, punctuation that shrinks the word count, a letter whose
    upper case is two letters."""
    assert clean(raw, MAX_WORDS) == _general(raw, MAX_WORDS)


@pytest.mark.parametrize("text", ["", "a", "A", "three ships", "3 ships", "SAR image", "ßx", "éclair", " x"])
def test_capfirst_upper_cases_the_first_character_only(text):
    assert capfirst(text) == text[:1].upper() + text[1:]


def test_served_cells_are_the_congruent_indices():
    """The memoised cells of a render are those its synonym index's recorded moduli do not tell apart,
    for every wording (modality, syn, digits) and every set of up to two moduli."""
    for count in range(3):
        for moduli in itertools.combinations(range(1, SYN_RANGE + 2), count):
            for wording in range(3 * SYN_RANGE * 2):
                syn = SynIndex(wording % (SYN_RANGE * 2) // 2)
                for m in moduli:
                    syn % m  # noqa: B018 - what a filter does
                base = wording - 2 * syn
                assert _served(wording, syn.moduli) == _wordings(base, syn.congruent(range(SYN_RANGE)))


def test_syn_index_records_lazily_and_once():
    syn = SynIndex(7)
    assert syn.moduli == set() and int(syn) == 7 and syn == 7
    assert syn % 3 == 1 and syn % 3 == 1 and syn % 4 == 3
    assert syn.moduli == {3, 4}
    syn.record(frozenset({3, 6}))
    assert syn.moduli == {3, 4, 6}
    assert SynIndex(7).moduli == set()  # the class default is never changed


def test_map_filter_matches_jinja2s_own():
    """The environment's ``map`` (Jinja2's sync variant, registered directly) gives what a plain sandbox's
    ``map`` gives, with filters, arguments and attributes, and fails the same way."""
    env = make_environment(Vocabulary.load(DEFAULT_SYNONYMS), 10)
    plain = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined)
    values = {"gs": [{"n": "b"}, {"n": "a"}], "ws": ["x", "Y"], "empty": []}
    for source in (
        "{{ ws|map('upper')|join(',') }}",
        "{{ ws|map('replace', 'x', 'z')|join(',') }}",
        "{{ gs|map(attribute='n')|join(',') }}",
        "{{ gs|map(attribute='m', default='d')|join(',') }}",
        "{{ empty|map('upper')|list }}",
        "{{ ws|map('lower')|map('upper')|list }}",
    ):
        assert env.from_string(source).render(**values) == plain.from_string(source).render(**values), source
    failing = ("{{ ws|map|list }}", "{{ ws|map('no_such_filter')|list }}", "{{ gs|map(attribute='n', x=1)|list }}")
    for source in failing:
        with pytest.raises(Exception) as ours:
            env.from_string(source).render(**values)
        with pytest.raises(Exception) as theirs:
            plain.from_string(source).render(**values)
        assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value), source


@pytest.mark.parametrize("fills", [False, True])
def test_memo_table_batch_get_makes_each_new_key_once_in_order(fills):
    """A batch look-up equals key-by-key look-ups, and calls ``make`` once per new key, in first-seen
    order, whether the new keys are written together or one by one (a ``make`` that also fills the next
    cell of its row saves that cell's own call)."""
    import numpy as np

    from d2c.captions.choice import _Memo

    calls: list[tuple[int, int]] = []

    def make(row: int, col: int) -> int:
        calls.append((row, col))
        if fills and col + 1 < 4:
            memo.put(row, slice(col + 1, col + 2), 10 * row + col + 1)
        return 10 * row + col

    memo = _Memo(4, make, fills=fills)
    rows, cols = np.array([70, 2, 70, 0, 2, 0]), np.array([1, 3, 1, 0, 3, 1])
    assert memo.get(rows, cols).tolist() == (10 * rows + cols).tolist()
    want = [(70, 1), (2, 3), (0, 0)] if fills else [(70, 1), (2, 3), (0, 0), (0, 1)]
    assert calls == want
    assert memo.get(rows, cols).tolist() == (10 * rows + cols).tolist() and calls == want  # all known now
    one_by_one = [memo.get_one(r, c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]
    assert one_by_one == (10 * rows + cols).tolist()
