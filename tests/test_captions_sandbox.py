"""The sandbox's wording filters: memoised and called through a cheaper ``call_filter``, yet giving the same
texts, the same recorded synonym moduli and the same errors as unmemoised calls and plain Jinja2."""

from __future__ import annotations

import jinja2
import pytest
from jinja2.sandbox import SandboxedEnvironment

from d2c.captions.sandbox import SYN_RANGE, SynIndex, make_environment
from d2c.captions.templates import DEFAULT_SYNONYMS
from d2c.captions.words import Vocabulary, join_and

THRESHOLD = 10
GROUPS = [
    ("ship", 1, 0),
    ("ship", 1, 1),
    ("aircraft", 3, 0),
    ("tank", 12, 2),
    ("car", 40, 0),
    ("odd_class", 2, 0),
]


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.load(DEFAULT_SYNONYMS)


def _render(env: jinja2.Environment, source: str, syn: int, digits: bool = False, **values) -> str:
    return env.from_string(source).render(modality="SAR image", syn=syn, digits=digits, **values)


def _direct(k: int, call) -> tuple[str, set]:
    """What an unmemoised wording call with synonym index ``k`` gives and records."""
    syn = SynIndex(k)
    return call(syn), syn.moduli


@pytest.mark.parametrize("digits", [False, True])
def test_memoised_filters_match_direct_calls_and_record_the_same_moduli(vocab, digits):
    env = make_environment(vocab, THRESHOLD)

    def quantity(group, adjective=None):
        return lambda s: vocab.quantity(group, digits=digits, syn=s, threshold=THRESHOLD, adjective=adjective)

    for _ in range(2):  # the second pass is served from the memos
        for k in range(SYN_RANGE):
            for group in GROUPS:
                syn = SynIndex(k)
                text = _render(env, "{{ g|quantity }}|{{ g|quantity('small') }}", syn, digits, g=group)
                plain, moduli_a = _direct(k, quantity(group))
                small, moduli_b = _direct(k, quantity(group, "small"))
                assert text == f"{plain}|{small}"
                assert syn.moduli == moduli_a | moduli_b
                syn = SynIndex(k)
                text = _render(env, "{{ g[0]|noun(g[1]) }} {{ g[1]|number }}", syn, digits, g=group)
                noun, moduli_n = _direct(k, lambda s, g=group: vocab.noun(g[0], s, g[1]))
                number, moduli_c = _direct(
                    k, lambda s, g=group: vocab.number(g[1], digits=digits, syn=s, threshold=THRESHOLD)
                )
                assert text == f"{noun} {number}"
                assert syn.moduli == moduli_n | moduli_c


def test_map_calls_context_filters_like_direct_use(vocab):
    env = make_environment(vocab, THRESHOLD)
    groups = GROUPS[:4]
    syn = SynIndex(5)
    source = "{{ gs|map('quantity')|join_and }}; {{ gs|map(attribute=0)|map('noun', 2)|join_and }}"
    mapped = _render(env, source, syn, gs=groups)
    one_by_one = SynIndex(5)
    quantities = [_render(env, "{{ g|quantity }}", one_by_one, g=g) for g in groups]
    nouns = [_render(env, "{{ g[0]|noun(2) }}", one_by_one, g=g) for g in groups]
    assert mapped == f"{join_and(quantities)}; {join_and(nouns)}"
    assert syn.moduli == one_by_one.moduli == {2, 3}


def test_groups_of_other_types_are_not_mixed_up_with_plain_ones(vocab):
    """Equal but differently typed arguments (a list, a float count, True for one) bypass the memo and
    give what the vocabulary gives them, before and after the plain group was memoised."""
    env = make_environment(vocab, THRESHOLD)
    for _ in range(2):
        assert _render(env, "{{ ['ship', 3, 0]|quantity }}", SynIndex(0)) == "three ships"
        assert _render(env, "{{ ('ship', 3, 0)|quantity }}", SynIndex(0)) == "three ships"
        assert _render(env, "{{ ('ship', 3.0, 0)|quantity }}", SynIndex(0)) == "three ships"
        assert _render(env, "{{ ('ship', true, 0)|quantity }}", SynIndex(1)) == "one vessel"
        assert (
            _render(env, "{{ 1|noun }} {{ 1.0|noun }} {{ 'ship'|noun(2.0) }}", SynIndex(0)) == "1 1.0 ships"
        )
        assert _render(env, "{{ 'hour'|article }} {{ 'unit'|article }} {{ 'ox'|article }}", 0) == (
            "an hour a unit an ox"
        )


def test_filters_read_values_the_template_sets(vocab):
    env = make_environment(vocab, THRESHOLD)
    source = "{% set digits = true %}{% set syn = 1 %}{{ ('ship', 3, 0)|quantity }}, {{ 'ship'|noun }}"
    syn = SynIndex(0)
    assert _render(env, source, syn) == "3 vessels, vessel"
    assert syn.moduli == set()  # the template's own ``syn`` was read, not the render's index


def test_plain_int_syn_renders_like_a_syn_index(vocab):
    env = make_environment(vocab, THRESHOLD)
    for k in range(SYN_RANGE):
        as_int = _render(env, "{{ g|quantity }}", k, g=GROUPS[3])
        assert as_int == _render(env, "{{ g|quantity }}", SynIndex(k), g=GROUPS[3])


def _error(env: jinja2.Environment, source: str, **values) -> str:
    with pytest.raises(Exception) as info:
        _render(env, source, SynIndex(0), **values)
    return f"{type(info.value).__name__}: {info.value}"


@pytest.mark.parametrize(
    "source",
    [
        "{{ [1]|map('no_such_filter')|list }}",
        "{{ [1]|map()|list }}",
        "{{ [('ship',)]|map('quantity')|list }}",
        "{{ ['ship']|map('noun', 1, 2, 3)|list }}",
        "{{ [none]|map('capfirst')|list }}",
        "{{ [1]|map(undefined_name)|list }}",
    ],
)
def test_map_errors_are_jinjas(vocab, source):
    """The same error, with the same message, as plain Jinja2's ``call_filter`` gives with the same filters."""
    env = make_environment(vocab, THRESHOLD)
    plain = SandboxedEnvironment(undefined=jinja2.StrictUndefined)
    plain.filters.update(env.filters)
    assert _error(env, source) == _error(plain, source)


def test_call_filter_without_context_and_replaced_filters(vocab):
    env = make_environment(vocab, THRESHOLD)
    with pytest.raises(jinja2.TemplateRuntimeError, match="context filter without context"):
        env.call_filter("quantity", ("ship", 2, 0))
    assert env.call_filter("capfirst", "sAR") == "SAR"
    assert env.call_filter("join_and", ["a", "b"]) == "a and b"
    env.filters["capfirst"] = str.upper  # a filter replaced later is the one called
    assert env.call_filter("capfirst", "sar") == "SAR"
    assert _render(env, "{{ ['ab', 'cd']|map('capfirst')|join(' ') }}", 0) == "AB CD"


def test_memo_starts_over_when_full(vocab, monkeypatch):
    from d2c.captions import sandbox

    monkeypatch.setattr(sandbox._Memo, "LIMIT", 4)
    env = make_environment(vocab, THRESHOLD)
    for n in range(2, 30):
        syn = SynIndex(2)
        assert _render(env, "{{ g|quantity }}", syn, g=("ship", n, 0)) == vocab.quantity(
            ("ship", n, 0), digits=False, syn=2, threshold=THRESHOLD
        )


def test_sandbox_still_refuses(vocab):
    env = make_environment(vocab, THRESHOLD)
    with pytest.raises(jinja2.sandbox.SecurityError):
        _render(env, "{{ modality.__class__.__mro__ }}", 0)
    with pytest.raises(jinja2.sandbox.SecurityError):
        _render(env, "{{ 'x' * 100000 }}", 0)
