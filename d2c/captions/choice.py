"""How the engine chooses: each scene's stream of uniform draws, and the memoised tables (attribute sets,
contexts, texts, choice steps) that a batch of scenes walks together with array operations.
"""

from __future__ import annotations

import bisect
import functools
import math
import operator
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from d2c.captions.sandbox import SYN_RANGE, SynIndex
from d2c.captions.templates import FAMILIES, TemplateError, TemplateInfo

# The engine's renderer: (template id, context, (modality noun, synonym index, digits)) -> text.
RenderText = Callable[[str, dict[str, Any], tuple[str, Any, bool]], str]

DRAWS = 5  # uniform draws per step: family, template, modality noun, synonym index, digits or words
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX = (np.uint64(30), np.uint64(0xBF58476D1CE4E5B9), np.uint64(27), np.uint64(0x94D049BB133111EB), np.uint64(31))


def scene_uniforms(seeds: np.ndarray, start: int, count: int) -> np.ndarray:
    """Draws ``start .. start + count - 1`` of each scene's stream of uniforms in [0, 1): (len(seeds), count).

    Draw j of the scene with seed s (:func:`d2c.model.scene_seed`) is SplitMix64's output number j + 1 from
    state s: ``mix(s + (j + 1) * gamma)`` mod 2**64, its top 53 bits scaled to [0, 1). A pure function of
    (seed, j), so any batch, chunk or worker computes the same draws, all scenes of a batch at once."""
    z = seeds[:, None] + np.arange(start + 1, start + count + 1, dtype=np.uint64) * _GAMMA
    s1, m1, s2, m2, s3 = _MIX
    z = (z ^ (z >> s1)) * m1
    z = (z ^ (z >> s2)) * m2
    z ^= z >> s3
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass(slots=True)
class Entry:
    """A set of attribute values (shared by every scene that has them): its id for the text keys, the
    values, and its first step (eligible templates, no family used yet)."""

    id: int
    attrs: dict[str, Any]
    first: int


class _Rows:
    """A table filled row by row while a batch runs and read as one array: rows wait in a list until the
    array is read, then go in as one block (the capacity doubles)."""

    def __init__(self, width: int, dtype: type = np.float64) -> None:
        self.width = width
        self.dtype = dtype
        self._a = np.empty((0, width), dtype)
        self._n = 0
        self._pending: list[list[float]] = []

    def __len__(self) -> int:
        return self._n + len(self._pending)

    def add(self, row: list[float]) -> int:
        """Append ``row`` (``width`` values); its index."""
        self._pending.append(row)
        return len(self) - 1

    @property
    def a(self) -> np.ndarray:
        if self._pending:
            block = np.array(self._pending, dtype=self.dtype)
            if self._n + len(block) > len(self._a):
                grown = np.empty((max(2 * len(self._a), self._n + len(block), 64), self.width), self.dtype)
                grown[: self._n] = self._a[: self._n]
                self._a = grown
            self._a[self._n : self._n + len(block)] = block
            self._n += len(block)
            self._pending = []
        return self._a


def _bits(mask: int) -> list[int]:
    """The indices of the set bits of ``mask``, ascending."""
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


class Choices:
    """The choice tables of every step met so far, as arrays, so a batch picks with a few array operations.

    A step is (templates left, families used this round), both bit masks (template ``i`` is bit ``i``, a
    family its index in name order), so that finding a step and the next one costs a few integer
    operations. What a step chooses from, its candidates, are the templates left of the families not used
    yet (all templates left, starting a new round, when every remaining template's family was used); steps
    with the same candidates (reached through different templates or rounds) share one family table,
    made once. A family table holds the candidates' families in name order with their summed weights; each
    family's member table holds its candidates in template order with their weights. A pick is the first
    running sum above ``u * total`` (the sums are done once per table, in the same order as summing at every
    draw). Family table rows are [families, total, running sums, member table rows]; member rows are
    [templates, total, running sums, template indices] (padded: inf, 0).

    Each table is also kept as a plain :class:`_Table` made from the same lists, for a small batch to walk
    scene by scene in Python (:meth:`pick_one`, :meth:`after_one`) with no per-step array overhead."""

    def __init__(self, templates: list[TemplateInfo]) -> None:
        self.family = [t.family for t in templates]
        self.weight = [t.weight for t in templates]
        self.n_fam = len(FAMILIES)
        self.width = max(Counter(self.family).values())
        names = sorted(set(self.family))
        self._family_bit = [1 << names.index(f) for f in self.family]
        self._family_templates = [sum(1 << i for i, f in enumerate(self.family) if f == n) for n in names]
        self.clear()

    def clear(self) -> None:
        self._ids: dict[tuple[int, int], int] = {}  # (templates left, families used) -> step id
        self._state: list[tuple[int, int, bool, int]] = []  # step id -> (left, used, new round, table id)
        self._step_table = _Rows(1, np.int64)  # step id -> family table id, as an array
        self._after = _Memo(len(self.family), self._next)
        self._covered: dict[int, int] = {}  # families used -> their templates
        self._table_ids: dict[int, int] = {}  # candidates -> family table id
        self._tables = _Rows(2 + 2 * self.n_fam)
        self._plain: list[_Table] = []  # by family table id
        self._member_ids: dict[tuple[int, ...], int] = {}
        self._members = _Rows(2 + 2 * self.width)
        self._plain_members: list[_Table] = []  # by member table row

    @property
    def cells(self) -> int:
        return self._after.cells

    def first(self, pool: int) -> int:
        """The id of the first step of a scene whose eligible templates are ``pool`` (a bit mask)."""
        return self.step(pool, 0)

    def step(self, left: int, used: int) -> int:
        """The id of step (templates ``left``, families ``used``: bit masks), made the first time."""
        key = (left, used)
        hit = self._ids.get(key)
        if hit is not None:
            return hit
        covered = self._covered.get(used)
        if covered is None:
            covered = sum(m for k, m in enumerate(self._family_templates) if used >> k & 1)
            self._covered[used] = covered
        fresh = left & ~covered
        table = self._table(fresh or left)
        self._state.append((left, used, not fresh, table))
        self._step_table.add([table])
        hit = self._ids[key] = len(self._state) - 1
        return hit

    def _table(self, candidates: int) -> int:
        """The id of the family table of ``candidates`` (a bit mask of templates), made the first time."""
        hit = self._table_ids.get(candidates)
        if hit is not None:
            return hit
        members: dict[str, list[int]] = {}
        fam_w: dict[str, float] = {}
        for i in _bits(candidates):
            f = self.family[i]
            if f in members:
                members[f].append(i)
                fam_w[f] += self.weight[i]
            else:
                members[f] = [i]
                fam_w[f] = 0.0 + self.weight[i]
        fams = sorted(fam_w)
        table = _Table.of([fam_w[f] for f in fams], [self._member_row(members[f]) for f in fams])
        self._plain.append(table)
        hit = self._table_ids[candidates] = self._tables.add(table.row(self.n_fam))
        return hit

    def _member_row(self, members: list[int]) -> int:
        key = tuple(members)
        hit = self._member_ids.get(key)
        if hit is None:
            table = _Table.of([self.weight[i] for i in members], members)
            hit = self._member_ids[key] = self._members.add(table.row(self.width))
            self._plain_members.append(table)
        return hit

    def live(self, steps: np.ndarray) -> np.ndarray:
        """Whether each step has templates left."""
        return self._tables.a[self._step_table.a[steps, 0], 0] > 0

    def pick(self, steps: np.ndarray, u_family: np.ndarray, u_member: np.ndarray) -> np.ndarray:
        """The template each (live) step chooses with its two draws."""
        at = np.arange(len(steps))
        f = self.n_fam
        t = self._tables.a[self._step_table.a[steps, 0]]
        fam = _first_above(t[:, 1], t[:, 2 : 2 + f], u_family, t[:, 0])
        m = self._members.a[t[at, 2 + f + fam].astype(np.int64)]
        w = self.width
        j = _first_above(m[:, 1], m[:, 2 : 2 + w], u_member, m[:, 0])
        return m[at, 2 + w + j].astype(np.int64)

    def after(self, steps: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """The step that follows each step once it chose template ``idx``."""
        return self._after.get(steps, idx)

    def live_one(self, step: int) -> bool:
        """:meth:`live` of one step."""
        return bool(self._plain[self._state[step][3]].items)

    def pick_one(self, step: int, u_family: float, u_member: float) -> int:
        """:meth:`pick` of one step, in plain Python."""
        families = self._plain[self._state[step][3]]
        members = self._plain_members[families.items[families.pick(u_family)]]
        return members.items[members.pick(u_member)]

    def after_one(self, step: int, idx: int) -> int:
        """:meth:`after` of one step, in plain Python (the same memo)."""
        return self._after.get_one(step, idx)

    def _next(self, step: int, idx: int) -> int:
        left, used, new_round, _ = self._state[step]
        return self.step(left & ~(1 << idx), (0 if new_round else used) | self._family_bit[idx])


_NONE = np.iinfo(np.int32).min  # no id yet: ids are >= 0, failures small negative numbers


class _Memo:
    """``make(row, col) -> int`` memoised in a growing int32 table, so a batch looks up all its keys with one
    array gather and calls ``make`` only for those met for the first time. A ``make`` that may set other
    cells of the table (:meth:`put`) is declared with ``fills=True``: a batch then checks each new key
    before making it; otherwise the new keys are made in one go and written with one array assignment."""

    def __init__(self, width: int, make: Callable[[int, int], int], *, fills: bool = False) -> None:
        self.make = make
        self.fills = fills
        self.a = np.full((64, width), _NONE, dtype=np.int32)

    @property
    def cells(self) -> int:
        return self.a.size

    def _grow(self, top: int) -> None:
        """Make room for rows below ``top``."""
        if top > len(self.a):
            grown = np.full((max(2 * len(self.a), top), self.a.shape[1]), _NONE, dtype=np.int32)
            grown[: len(self.a)] = self.a
            self.a = grown

    def get(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        self._grow(int(rows.max(initial=-1)) + 1)
        got = self.a[rows, cols]
        miss = np.flatnonzero(got == _NONE)
        if len(miss):
            rows, cols = rows[miss], cols[miss]
            keys = dict.fromkeys(zip(rows.tolist(), cols.tolist(), strict=True))  # each once, in order
            self._make(list(keys))
            got[miss] = self.a[rows, cols]
        return got

    def _make(self, keys: list[tuple[int, int]]) -> None:
        """Make the cells ``keys`` (distinct, not made yet when the batch looked), in order."""
        a, make = self.a, self.make  # ``make`` never grows this table (only get, get_one and fill do)
        if self.fills:
            for row, col in keys:
                if a.item(row, col) == _NONE:  # an earlier ``make`` may have filled it
                    a[row, col] = make(row, col)
        else:
            values = [make(row, col) for row, col in keys]
            made = np.array(keys, np.int64)
            a[made[:, 0], made[:, 1]] = values

    def get_one(self, row: int, col: int) -> int:
        """:meth:`get` of one key, in plain Python."""
        if row >= len(self.a):
            self._grow(row + 1)
        value = self.a.item(row, col)
        if value == _NONE:
            value = self.make(row, col)
            self.a[row, col] = value
        return value

    def put(self, row: int, cols: slice, value: int) -> None:
        """Set cells of a row that exists (``make`` filling siblings of the cell it makes)."""
        self.a[row, cols] = value


@dataclass(frozen=True, slots=True)
class _Table:
    """One choice table: positive weights' total (``sum``, in order) and running sums, and the items they
    choose between (member table rows, or template indices)."""

    total: float
    running: list[float]
    items: list[int]
    finite: bool  # the total is finite, so the running sums are too and ascending

    @classmethod
    def of(cls, weights: list[float], items: list[int]) -> _Table:
        acc, running = 0.0, []
        for w in weights:
            acc += w
            running.append(acc)
        total = sum(weights)
        return cls(total, running, list(items), math.isfinite(total))

    def row(self, width: int) -> list[float]:
        """The table as one array row: [count, total, running sums, items], padded to ``width`` items."""
        pad = width - len(self.items)
        return [len(self.items), self.total, *self.running, *[np.inf] * pad, *self.items, *[0] * pad]

    def pick(self, u: float) -> int:
        """:func:`_first_above` of this table's row, in plain Python: the count of running sums at or below
        ``u * total`` (a bisection when they are ascending), at most the last index."""
        target = u * self.total
        if self.finite:
            k = bisect.bisect_right(self.running, target)
        else:
            k = sum(target >= r for r in self.running)
        return min(k, len(self.items) - 1)


def _first_above(total: np.ndarray, running: np.ndarray, u: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per row: the index of the first running sum above ``u * total`` (padding is inf), or the last of
    the row's ``n`` when none is (rounding)."""
    target = u * total
    return np.minimum(row_counts(target[:, None] >= running), n.astype(np.int64) - 1)


def row_counts(mask: np.ndarray) -> np.ndarray:
    """The number of true cells in each row of a 2-D bool ``mask``, as int64: ``mask.sum(1)``, in a third
    of its time on the short rows of the choice steps (numpy's row-wise reduction pays per row)."""
    return np.einsum("ij->i", mask, dtype=np.int64)


def _wordings(base: int, same: list[int]) -> slice:
    """The wording cells ``base + 2 * v`` of the synonym indices ``same`` (ascending), as a slice. Those are
    the indices congruent to one index modulo each modulus the filters reduced it by, i.e. modulo their
    least common multiple: evenly spaced (and never empty), so one slice write sets them all."""
    step = same[1] - same[0] if len(same) > 1 else SYN_RANGE
    return slice(base + 2 * same[0], base + 2 * same[-1] + 1, 2 * step)


@functools.lru_cache(maxsize=4096)
def _served(wording: int, moduli: frozenset[Any]) -> slice:
    """The wording cells (see :func:`_wordings`) a render with ``wording`` serves when the filters reduced its
    synonym index by ``moduli``: memoised, as there are few of them and every render asks."""
    syn = SynIndex(wording % (SYN_RANGE * 2) // 2)
    syn.record(moduli)
    return _wordings(wording - 2 * syn, syn.congruent(range(SYN_RANGE)))


def _values_of(names: Sequence[str]) -> Callable[[dict[str, Any]], Any]:
    """A function giving the values of ``names`` in a dict, as a key (one C call: the value itself for one
    name, a tuple for several, ``()`` for none)."""
    return operator.itemgetter(*names) if names else lambda _: ()


class Texts:
    """Rendered texts by (template, its context, the wording draws it reads), as integer keys so a batch
    looks them up with array gathers (see :class:`_Memo`): an entry's context for a template (the values of its ``requires``) is
    interned once, and texts are interned too (id 0 is the empty text); failures get negative ids."""

    def __init__(self, templates: Sequence[TemplateInfo], style_use: dict[str, tuple[bool, bool, bool]],
                 syn_named: dict[str, bool], modality: Sequence[str], render_text: RenderText) -> None:
        """``style_use``/``syn_named`` per template id: which wording draws it reads, and whether it reads
        ``syn`` itself; ``modality``: the modality nouns; ``render_text``: the engine's renderer (taken as
        arguments, so that this module never imports the engine: no import circle)."""
        self.templates = templates
        self._modality = modality
        self._render_text = render_text
        self.use = np.array([style_use[t.id] for t in templates], dtype=np.int64).reshape(-1, 3)
        self._use = self.use.tolist()
        self.n_modality = len(modality)
        # a text of a template that reads ``syn`` only through the wording filters serves every synonym
        # index those filters cannot tell apart (see _render)
        self._syn_shared = [
            u[1] and not syn_named[t.id] for u, t in zip(self._use, self.templates, strict=True)
        ]
        self._requires = [_values_of(t.requires) for t in self.templates]
        self.template_ids = np.array([t.id for t in templates], dtype=object)
        self.clear()

    def clear(self) -> None:
        self.rendered = 0
        self._entries: list[dict[str, Any]] = []
        self._context_of = _Memo(len(self.templates), self._context)  # (entry, template) -> context id
        self._context_ids: dict[tuple[int, Any], int] = {}
        self._contexts: list[tuple[int, dict[str, Any]]] = []  # context id -> (template, requires: values)
        # (context, wording) -> text id; a render also sets the synonym indices it serves
        self._keys = _Memo(self.n_modality * SYN_RANGE * 2, self._render, fills=True)
        self._ids: dict[str, int] = {"": 0}
        self._texts = np.array([""] * 64, dtype=object)  # by text id (capacity doubles)
        self._failures: list[Exception] = []

    @property
    def cells(self) -> int:
        return self._keys.cells + self._context_of.cells

    def add_entry(self, attrs: dict[str, Any]) -> int:
        self._entries.append(attrs)
        return len(self._entries) - 1

    def ids(self, eid: np.ndarray, idx: np.ndarray, u_modality: np.ndarray, u_syn: np.ndarray,
            u_digits: np.ndarray) -> np.ndarray:
        """Text id of each chosen template with its wording draws (rendered on first use)."""
        use = self.use[idx]
        modality = np.minimum((u_modality * self.n_modality).astype(np.int64), self.n_modality - 1) * use[:, 0]
        syn = (u_syn * SYN_RANGE).astype(np.int64) * use[:, 1]
        digits = (u_digits < 0.5) * use[:, 2]
        context = self._context_of.get(eid, idx)
        return self._keys.get(context, modality * (SYN_RANGE * 2) + syn * 2 + digits)

    def id_one(self, eid: int, idx: int, u_modality: float, u_syn: float, u_digits: float) -> int:
        """:meth:`ids` of one chosen template, in plain Python (the same memos and rounding)."""
        use_modality, use_syn, use_digits = self._use[idx]
        modality = min(int(u_modality * self.n_modality), self.n_modality - 1) * use_modality
        syn = int(u_syn * SYN_RANGE) * use_syn
        digits = (u_digits < 0.5) * use_digits
        context = self._context_of.get_one(eid, idx)
        return self._keys.get_one(context, modality * (SYN_RANGE * 2) + syn * 2 + digits)

    def text(self, text_id: int) -> str:
        return self._texts[text_id]

    def failure(self, text_id: int) -> Exception:
        """The error of a failed render (a negative text id)."""
        return self._failures[-text_id - 1]

    def _context(self, eid: int, idx: int) -> int:
        attrs = self._entries[eid]
        key = (idx, self._requires[idx](attrs))
        hit = self._context_ids.get(key)
        if hit is None:
            hit = self._add_context(key, {r: attrs[r] for r in self.templates[idx].requires})
        return hit

    def _add_context(self, key: tuple[int, Any], values: dict[str, Any]) -> int:
        """Intern a new context: ``key`` is (template index, its requires' values as ``_requires`` gives
        them), ``values`` the same as a dict by name."""
        hit = self._context_ids[key] = len(self._contexts)
        self._contexts.append((key[0], values))
        return hit

    def _intern(self, text: str) -> int:
        """The id of ``text``, made the first time."""
        hit = self._ids.get(text)
        if hit is None:
            hit = self._ids[text] = len(self._ids)
            if hit == len(self._texts):
                self._texts = np.concatenate([self._texts, np.empty(len(self._texts), dtype=object)])
            self._texts[hit] = text
        return hit

    def _render(self, context: int, wording: int) -> int:
        """Render the text of ``context`` with ``wording`` (modality, syn, digits); the other synonym indices
        that would give the same text (see :class:`SynIndex`) get its id too."""
        modality, rest = divmod(wording, SYN_RANGE * 2)
        idx, values = self._contexts[context]
        syn = SynIndex(rest // 2)
        style = (self._modality[modality], syn, bool(rest % 2))
        try:
            text = self._render_text(self.templates[idx].id, values, style)
        except TemplateError as exc:
            self._failures.append(exc)
            return -len(self._failures)
        self.rendered += 1
        hit = self._intern(text)
        if self._syn_shared[idx]:
            self._keys.put(context, _served(wording, syn.moduli), hit)
        return hit

    def results(self, kept: np.ndarray, chosen: np.ndarray, count: np.ndarray, failure: np.ndarray) -> list[Any]:
        """Per scene (texts, template ids) from the kept text ids and template indices, or its failure."""
        texts = self._texts[kept].tolist()
        ids = self.template_ids[chosen].tolist()
        out: list[Any] = list(zip(texts, ids, strict=True))  # most scenes have all their captions
        short = np.flatnonzero(count < kept.shape[1])
        for k, c in zip(short.tolist(), count[short].tolist(), strict=True):
            out[k] = (texts[k][:c], ids[k][:c])
        for k in np.flatnonzero(failure >= 0).tolist():
            out[k] = self._failures[failure[k]]
        return out
