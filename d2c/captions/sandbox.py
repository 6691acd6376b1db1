"""The sandbox templates render in (Jinja2's, with limits on ``*`` and ``**``), its wording filters, and the
clean-up of rendered text (whitespace, punctuation, word limit).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import jinja2
from jinja2.filters import sync_do_map
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from jinja2.utils import _PassArg

from d2c.captions.words import Vocabulary, capfirst, join_and

STYLE_NAMES = ("modality", "syn", "digits")  # wording draws every template receives
SYN_RANGE = 12  # synonym index drawn in [0, 12): divisible by 1, 2, 3, 4 and 6 options alike
STYLE_DEFAULT = ("SAR image", 0, False)
# filters that read each wording draw from the context (``map`` may apply any of them)
_SYN_FILTERS = {"number", "quantity", "at_least", "noun", "synonym", "place", "metres", "map"}
_DIGIT_FILTERS = {"number", "quantity", "at_least", "map"}
MAX_WORDS = 45


def style_use(ast: jinja2.nodes.Template) -> tuple[bool, bool, bool]:
    """Which wording draws (modality, syn, digits) a template's output can depend on, so the render cache
    keys on those alone."""
    filters = {f.name for f in ast.find_all(jinja2.nodes.Filter)}
    names = {n.name for n in ast.find_all(jinja2.nodes.Name)}
    return (
        "modality" in names,
        bool(filters & _SYN_FILTERS) or "syn" in names,
        bool(filters & _DIGIT_FILTERS) or "digits" in names,
    )


_SPACE_PUNCT = re.compile(r"\s+([,.;:])")


def normalise(text: str) -> str:
    """Collapse whitespace, tidy spaces before punctuation and capitalise the first letter."""
    return _normalised(text.split())


def _normalised(words: list[str]) -> str:
    """:func:`normalise` of the text split into ``words``."""
    text = " ".join(words)
    if " ," in text or " ." in text or " ;" in text or " :" in text:  # the only whitespace left is " "
        text = _SPACE_PUNCT.sub(r"\1", text)
    return capfirst(text)


def clean(raw: str, max_words: int) -> str:
    """``truncate_words(normalise(raw), max_words)``, or ``""`` for a blank render, splitting the text once
    (this runs for every render): normalising never adds words (it only joins punctuation to the word
    before it), so a render of at most ``max_words`` words needs no cut."""
    words = raw.split()
    if not words:
        return ""
    text = _normalised(words)
    return text if len(words) <= max_words else truncate_words(text, max_words)


def truncate_words(text: str, max_words: int) -> str:
    """Cut ``text`` to ``max_words`` at a clause boundary if possible, never leaving a number phrase
    without its noun or splitting a number (cuts are between whole words)."""
    words = text.split()
    if len(words) <= max_words:
        return text
    kept = words[:max_words]
    for i in range(len(kept) - 1, 0, -1):  # prefer the last clause boundary
        if kept[i - 1].endswith((",", ";")):
            kept = kept[:i]
            break
    while kept and _is_number_word(kept[-1].rstrip(",;")):
        kept.pop()
    return " ".join(kept).rstrip(",;") + "." if kept else ""


_DANGLING = {
    "a",
    "an",
    "the",
    "and",
    "or",
    "with",
    "of",
    "in",
    "on",
    "at",
    "near",
    "about",
    "roughly",
    "than",
    "least",
    "single",
    "many",
    "between",
    "from",
    "to",
    "by",
}


def _is_number_word(word: str) -> bool:
    """True for digits, number words and the function words a cut must not leave at the end."""
    from d2c.captions.words import number_words

    w = word.lower()
    return w.isdigit() or w in _DANGLING or w in {number_words(i) for i in range(100)}


class LimitedSandbox(SandboxedEnvironment):
    """Jinja2's sandbox plus limits on the two operators it leaves open, which can exhaust memory or CPU
    from one expression (even at compile time, through constant folding): ``**`` with a huge result and
    ``*`` building a huge string or list. Intercepted operators are not folded, so they fail at render."""

    intercepted_binops = frozenset({"*", "**"})
    MAX_BITS = 1 << 16  # an int power may have at most this many bits
    MAX_ITEMS = 10_000  # characters or items a repetition may build

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._own_filters: dict[str, tuple[Callable[..., Any], bool]] = {}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and right > 0
            and max(left.bit_length(), 1) * right > self.MAX_BITS
        ):
            raise SecurityError(f"{left!r} ** {right!r} is too large for a template")
        if operator == "*":
            seq, n = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > self.MAX_ITEMS:
                raise SecurityError(f"repeating a {type(seq).__name__} {n} times is too large for a template")
        return super().call_binop(context, operator, left, right)

    def add_own_filters(self, filters: dict[str, Callable[..., Any]]) -> None:
        """Add d2c's filters, noting once whether each takes the context, so that :meth:`call_filter` (how
        ``map('quantity')`` calls a filter, once per item) need not inspect the function at every call."""
        self.filters.update(filters)
        self._own_filters |= {
            name: (f, _PassArg.from_obj(f) is _PassArg.context)
            for name, f in filters.items()
            if _PassArg.from_obj(f) in (None, _PassArg.context)
        }

    def call_filter(
        self,
        name: str,
        value: Any,
        args: Any = None,
        kwargs: Any = None,
        context: Any = None,
        eval_ctx: Any = None,
    ) -> Any:
        """Jinja2's ``call_filter``, the same call with the kind of argument a filter takes looked up
        once: for one of :meth:`add_own_filters` still in place (and given a context if it needs one), else
        Jinja2's own path with its checks and errors."""
        own = self._own_filters.get(name) if type(name) is str else None
        if own is None or own[0] is not self.filters.get(name) or (own[1] and context is None):
            return super().call_filter(name, value, args, kwargs, context, eval_ctx)
        func, wants_context = own
        if wants_context:
            return func(context, value, *(args or ()), **(kwargs or {}))
        return func(value, *(args or ()), **(kwargs or {}))


class SynIndex(int):
    """The synonym index of one render, recording every modulus the wording filters reduce it by (every
    synonym-dependent choice is ``options[syn % len(options)]``). A template that does not name ``syn``
    itself renders the same text for every index congruent to this one modulo each recorded modulus, so
    one render serves all of them.

    ``moduli`` is a class-level empty frozenset until the first reduction sets the instance's own: making
    an index (once per render) then costs no more than making an int."""

    moduli: frozenset[Any] = frozenset()

    def __mod__(self, other: Any) -> Any:
        if other not in self.moduli:
            self.moduli = self.moduli | {other}
        return int(self) % other

    def record(self, moduli: frozenset[Any]) -> None:
        """Record ``moduli`` as if each had reduced this index (a memoised wording call replayed)."""
        if not moduli <= self.moduli:
            self.moduli = self.moduli | moduli

    def congruent(self, values: range) -> list[int]:
        """The ``values`` that no recorded modulus tells apart from this index."""
        return _congruent(values, int(self), self.moduli)


@functools.lru_cache(maxsize=4096)
def _congruent(values: range, value: int, moduli: frozenset[Any]) -> list[int]:
    return [v for v in values if all(v % m == value % m for m in moduli)]


def _draw(ctx: Any, name: str) -> Any:
    """``ctx[name]`` (a variable the template set first, else the render's value) without the two method
    calls of Jinja2's ``Context.__getitem__``; a missing name raises the same KeyError."""
    assigned = ctx.vars
    return assigned[name] if name in assigned else ctx.parent[name]


def _syn_of(ctx: Any) -> int:
    """The context's synonym index: a :class:`SynIndex` as it is (so it records), else as an int."""
    assigned = ctx.vars
    syn = assigned["syn"] if "syn" in assigned else ctx.parent["syn"]
    return syn if type(syn) is SynIndex else int(syn)


class _Memo(dict):
    """``fn(key)`` by ``key``, computed on first use; the key's values must be exactly typed, so that equal
    keys mean equal calls. The vocabulary and threshold behind ``fn`` must not change once the environment
    is made."""

    LIMIT = 1 << 16  # entries kept before the memo starts over

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        super().__init__()
        self.fn = fn

    def __missing__(self, key: Any) -> Any:
        value = self.fn(key)
        if len(self) >= self.LIMIT:
            self.clear()
        self[key] = value
        return value


def _recording(fn: Callable[..., str]) -> Callable[[tuple], tuple[str, frozenset[Any]]]:
    """``fn(syn, *rest)`` as a function of the key ``(syn as an int, *rest)`` for a :class:`_Memo`, giving
    the text and the moduli ``fn`` reduced a fresh :class:`SynIndex` by (see :func:`_replayed`)."""

    def run(key: tuple) -> tuple[str, frozenset[Any]]:
        probe = SynIndex(key[0])
        return fn(probe, *key[1:]), probe.moduli

    return run


def _replayed(syn: int, hit: tuple[str, frozenset[Any]]) -> str:
    """The text of a memoised :func:`_recording` call, after recording its moduli on the caller's ``syn``:
    a fresh call would have reduced ``syn`` by exactly those."""
    moduli = hit[1]
    if moduli and type(syn) is SynIndex and not moduli <= syn.moduli:  # mostly recorded by an earlier call
        syn.record(moduli)
    return hit[0]


def _plain_group(group: Any) -> bool:
    """A (class name, count, difficult) tuple of exact types, as the attributes give it: memoisable."""
    return (
        type(group) is tuple
        and len(group) == 3
        and type(group[0]) is str
        and type(group[1]) is int
        and type(group[2]) in (int, bool)
    )


def make_environment(v: Vocabulary, threshold: int) -> SandboxedEnvironment:
    """The sandbox every template runs in: StrictUndefined, no autoescape, the wording filters (memoised
    where they cost more than a look-up; see :class:`_Memo` and :func:`_recording`)."""
    env = LimitedSandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    number_memo = _Memo(
        _recording(lambda syn, n, digits: v.number(n, digits=digits, syn=syn, threshold=threshold))
    )
    quantity_memo = _Memo(
        _recording(
            lambda syn, group, digits, adjective: v.quantity(
                group, digits=digits, syn=syn, threshold=threshold, adjective=adjective
            )
        )
    )
    at_least_memo = _Memo(
        _recording(lambda syn, group, digits: v.quantity(group, digits=digits, syn=syn, threshold=threshold,
                                                         at_least=True))
    )
    noun_memo = _Memo(_recording(lambda syn, name, n: v.noun(name, syn, n)))
    article_memo = _Memo(v.article)

    @jinja2.pass_context
    def number(ctx: Any, n: int) -> str:
        n = int(n)  # int() gives an exact int: a plain key
        digits = bool(_draw(ctx, "digits"))
        syn = _syn_of(ctx)
        return _replayed(syn, number_memo[(int(syn), n, digits)])

    @jinja2.pass_context
    def quantity(ctx: Any, group: Any, adjective: str | None = None) -> str:
        digits = bool(_draw(ctx, "digits"))
        syn = _syn_of(ctx)
        if _plain_group(group) and (adjective is None or type(adjective) is str):
            return _replayed(syn, quantity_memo[(int(syn), group, digits, adjective)])
        return v.quantity(group, digits=digits, syn=syn, threshold=threshold, adjective=adjective)

    @jinja2.pass_context
    def at_least(ctx: Any, group: Any) -> str:
        """A group as a lower bound: ``at least three ships``, ``at least one ship``, ``many ships``."""
        digits = bool(_draw(ctx, "digits"))
        syn = _syn_of(ctx)
        if _plain_group(group):
            return _replayed(syn, at_least_memo[(int(syn), group, digits)])
        return v.quantity(group, digits=digits, syn=syn, threshold=threshold, at_least=True)

    @jinja2.pass_context
    def noun(ctx: Any, cls_name: str, n: int = 1) -> str:
        name, syn, n = str(cls_name), _syn_of(ctx), int(n)
        if type(name) is str:  # str() gives what __str__ returns (a subclass, maybe); int() an exact int
            return _replayed(syn, noun_memo[(int(syn), name, n)])
        return v.noun(name, syn, n)

    @jinja2.pass_context
    def place(ctx: Any, cell: str) -> str:
        return v.cell(str(cell), _syn_of(ctx))

    @jinja2.pass_context
    def metres(ctx: Any, m: int) -> str:
        return v.metres(int(m), _syn_of(ctx))

    def plural(word: str, n: int = 2) -> str:
        return str(word) if int(n) == 1 else v.plural(str(word))

    def article(phrase: str) -> str:
        return article_memo[phrase] if type(phrase) is str else v.article(phrase)

    env.add_own_filters(
        {
            "number": number,
            "quantity": quantity,
            "at_least": at_least,
            "noun": noun,
            "synonym": noun,
            "place": place,
            "metres": metres,
            "plural": plural,
            "article": article,
            "join_and": join_and,
            "map": sync_do_map,  # Jinja2's own, without the async dispatch around it: never async here
            "capfirst": capfirst,
        }
    )
    return env
