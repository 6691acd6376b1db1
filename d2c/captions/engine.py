"""The caption engine: Jinja2 templates in a sandbox, chosen per scene with draws from a per-scene stream.

A template is a pure function of the discretised attributes it ``requires`` (see
:mod:`d2c.captions.attributes`) plus three wording draws (modality noun, synonym index, digits or words).
Only those values are passed to it, so a rendering is cached by (template id, context): a conversion of
100k scenes renders each distinct context once. Scenes are captioned in batches: attributes for all of
them at once, then the choice steps of all scenes together as array operations over memoised tables
(ids of attribute sets, contexts, texts and choice steps), so a scene costs little Python of its own.
A few scenes (one captioned at a time, as a training loader does) would pay each array step's fixed cost
alone, so up to ``SMALL_BATCH`` scenes take the same steps scene by scene in plain Python, over the same
tables, memos and draws: the result never depends on which way a scene went.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from d2c.captions import attributes
from d2c.captions.words import Vocabulary, capfirst, join_and
from d2c.errors import D2CError
from d2c.model import Scene, scene_seed

log = logging.getLogger(__name__)

REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
DEFAULT_TEMPLATES_DIR = REPO_TEMPLATES / "captions"
DEFAULT_SYNONYMS = REPO_TEMPLATES / "synonyms.toml"
FAMILIES = ("count", "position", "size", "orientation", "arrangement", "multi-class", "empty", "sensor")
STYLE_NAMES = ("modality", "syn", "digits")  # wording draws every template receives
SYN_RANGE = 12  # synonym index drawn in [0, 12): divisible by 1, 2, 3, 4 and 6 options alike
STYLE_DEFAULT = ("SAR image", 0, False)
# filters that read each wording draw from the context (``map`` may apply any of them)
_SYN_FILTERS = {"number", "quantity", "noun", "synonym", "place", "metres", "map"}
_DIGIT_FILTERS = {"number", "quantity", "map"}
MAX_WORDS = 45
_FRONT = re.compile(r"\A\{#-?(.*?)-?#\}", re.DOTALL)
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_CACHE_LIMIT = 500_000
_TABLE_LIMIT = 20_000_000  # cells of the batch path's id tables (int32) before they are dropped and rebuilt
SMALL_BATCH = attributes.SMALL_BATCH  # up to this many scenes, the choice steps run scene by scene in Python


class TemplateError(D2CError):
    """A template file is malformed or did something the sandbox forbids; the message names it."""


@dataclass(frozen=True)
class Caption:
    text: str
    template_id: str
    family: str


@dataclass(frozen=True)
class TemplateInfo:
    id: str
    family: str
    weight: float
    requires: tuple[str, ...]
    path: Path


def parse_front_matter(source: str, path: Path) -> dict[str, Any]:
    """Read ``key: value`` lines from the leading ``{# ... #}`` comment; raise naming file and line."""
    m = _FRONT.match(source.lstrip("\ufeff"))
    if not m:
        raise TemplateError(f"{path}:1: missing front-matter comment '{{# id: ... family: ... #}}'")
    meta: dict[str, Any] = {}
    for lineno, line in enumerate(m.group(1).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise TemplateError(f"{path}:{lineno}: expected 'key: value' in front matter, got {line!r}")
        meta[key.strip()] = value.strip()
    return meta


def template_info(source: str, path: Path) -> TemplateInfo:
    """Validate a template's metadata: id, family, weight and requires (known attribute names)."""
    meta = parse_front_matter(source, path)
    missing = [k for k in ("id", "family", "requires") if k not in meta]
    if missing:
        raise TemplateError(f"{path}: front matter lacks {', '.join(missing)}")
    tid, family = meta["id"], meta["family"]
    if not _ID.match(tid):
        raise TemplateError(f"{path}: id {tid!r} must be lower-case letters, digits, '.', '_' or '-'")
    if family not in FAMILIES:
        raise TemplateError(f"{path}: family {family!r} is not one of {', '.join(FAMILIES)}")
    try:
        weight = float(meta.get("weight", "1"))
    except ValueError:
        raise TemplateError(f"{path}: weight {meta['weight']!r} is not a number") from None
    if not weight > 0:
        raise TemplateError(f"{path}: weight must be positive, got {weight}")
    requires = tuple(r.strip() for r in meta["requires"].strip("[]").split(",") if r.strip())
    unknown = [r for r in requires if r not in attributes.REGISTRY]
    if unknown:
        known = ", ".join(sorted(attributes.REGISTRY))
        raise TemplateError(f"{path}: requires unknown attribute(s) {', '.join(unknown)} (known: {known})")
    if not requires:
        raise TemplateError(f"{path}: requires must name at least one attribute (the claims it makes)")
    return TemplateInfo(tid, family, weight, requires, path)


def load_sources(dirs: list[Path]) -> dict[str, tuple[TemplateInfo, str]]:
    """Templates by id from ``dirs`` in order; a later folder overrides an earlier one's id."""
    found: dict[str, tuple[TemplateInfo, str]] = {}
    for d in dirs:
        if not d.is_dir():
            raise TemplateError(f"{d}: templates folder not found")
        local: dict[str, Path] = {}
        for path in sorted(d.glob("*.j2")):
            try:
                source = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise TemplateError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            info = template_info(source, path)
            if info.id in local:
                raise TemplateError(f"{path}: id {info.id!r} already used by {local[info.id]}")
            local[info.id] = path
            found[info.id] = (info, source)
    return found


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
    text = " ".join(text.split())
    if " ," in text or " ." in text or " ;" in text or " :" in text:  # the only whitespace left is " "
        text = _SPACE_PUNCT.sub(r"\1", text)
    return capfirst(text)


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


class SynIndex(int):
    """The synonym index of one render, recording every modulus the wording filters reduce it by (every
    synonym-dependent choice is ``options[syn % len(options)]``). A template that does not name ``syn``
    itself renders the same text for every index congruent to this one modulo each recorded modulus, so
    one render serves all of them."""

    def __new__(cls, value: int) -> SynIndex:
        obj = super().__new__(cls, value)
        obj.moduli = set()
        return obj

    def __mod__(self, other: Any) -> Any:
        self.moduli.add(other)
        return int(self) % other

    def congruent(self, values: range) -> list[int]:
        """The ``values`` that no recorded modulus tells apart from this index."""
        return _congruent(values, int(self), frozenset(self.moduli))


@functools.lru_cache(maxsize=4096)
def _congruent(values: range, value: int, moduli: frozenset[Any]) -> list[int]:
    return [v for v in values if all(v % m == value % m for m in moduli)]


def _syn_of(ctx: Any) -> int:
    """The context's synonym index: a :class:`SynIndex` as it is (so it records), else as an int."""
    syn = ctx["syn"]
    return syn if type(syn) is SynIndex else int(syn)


def make_environment(v: Vocabulary, threshold: int) -> SandboxedEnvironment:
    """The sandbox every template runs in: StrictUndefined, no autoescape, the wording filters."""
    env = LimitedSandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)

    @jinja2.pass_context
    def number(ctx: Any, n: int) -> str:
        return v.number(int(n), digits=bool(ctx["digits"]), syn=_syn_of(ctx), threshold=threshold)

    @jinja2.pass_context
    def quantity(ctx: Any, group: Any, adjective: str | None = None) -> str:
        return v.quantity(
            group, digits=bool(ctx["digits"]), syn=_syn_of(ctx), threshold=threshold, adjective=adjective
        )

    @jinja2.pass_context
    def noun(ctx: Any, cls_name: str, n: int = 1) -> str:
        return v.noun(str(cls_name), _syn_of(ctx), int(n))

    @jinja2.pass_context
    def place(ctx: Any, cell: str) -> str:
        return v.cell(str(cell), _syn_of(ctx))

    @jinja2.pass_context
    def metres(ctx: Any, m: int) -> str:
        return v.metres(int(m), _syn_of(ctx))

    def plural(word: str, n: int = 2) -> str:
        return str(word) if int(n) == 1 else v.plural(str(word))

    env.filters.update(
        number=number,
        quantity=quantity,
        noun=noun,
        synonym=noun,
        place=place,
        metres=metres,
        plural=plural,
        article=v.article,
        join_and=join_and,
        capfirst=capfirst,
    )
    return env


class CaptionEngine:
    """Render ``captions_per_image`` true, varied captions per scene from the template set."""

    def __init__(
        self,
        templates_dir: Path | str | None = None,
        *,
        captions_per_image: int = 5,
        seed: int = 0,
        count_threshold: int = 10,
        include_defaults: bool = True,
        max_words: int = MAX_WORDS,
    ) -> None:
        if captions_per_image < 1:
            raise TemplateError(f"captions_per_image must be at least 1, got {captions_per_image}")
        dirs = [DEFAULT_TEMPLATES_DIR] if include_defaults else []
        syn_files = [DEFAULT_SYNONYMS] if include_defaults else []
        if templates_dir is not None:
            user = Path(templates_dir)
            dirs.append(user)
            if (user / "synonyms.toml").is_file():
                syn_files.append(user / "synonyms.toml")
        if not dirs:
            raise TemplateError("no templates: give templates_dir or include_defaults=True")
        self.captions_per_image = captions_per_image
        self.seed = int(seed)
        self.count_threshold = int(count_threshold)
        self.max_words = max_words
        self.vocab = Vocabulary.load(*syn_files) if syn_files else Vocabulary()
        self.env = make_environment(self.vocab, self.count_threshold)
        loaded = load_sources(dirs)
        if not loaded:
            raise TemplateError(f"no *.j2 templates in {', '.join(map(str, dirs))}")
        self._compiled: dict[str, jinja2.Template] = {}
        self._style_use: dict[str, tuple[bool, bool, bool]] = {}
        self._syn_named: dict[str, bool] = {}  # the template reads ``syn`` itself (not only through filters)
        for tid, (info, source) in sorted(loaded.items()):
            try:
                ast = self.env.parse(source)
                self._style_use[tid] = style_use(ast)
                self._syn_named[tid] = any(n.name == "syn" for n in ast.find_all(jinja2.nodes.Name))
                self._compiled[tid] = self.env.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(
                    f"{info.path}:{exc.lineno}: template {tid!r}: syntax error: {exc.message}"
                ) from None
        self.templates: list[TemplateInfo] = [loaded[t][0] for t in sorted(loaded)]
        self._by_id = {t.id: t for t in self.templates}
        self._req_sets = [frozenset(t.requires) for t in self.templates]
        self._needed = sorted({r for t in self.templates for r in t.requires})
        digest = hashlib.sha256()
        for tid in sorted(loaded):
            digest.update(f"{tid}\0{loaded[tid][1]}\0".encode())
        digest.update(self.vocab.source_text.encode())
        self.template_set_hash = digest.hexdigest()
        self._cache: dict[tuple, str] = {}
        self._globals: dict[str, dict[str, Any]] = {}
        self._modality = self.vocab.modality or [STYLE_DEFAULT[0]]
        self._pools: dict[tuple, tuple[int, ...]] = {}
        self._choices = _Choices(self.templates)
        self._texts = _Texts(self)
        self._attr_cache = attributes.AttributeCache(self._needed, self.vocab.sensors, derive=self._entry)

    # ---- captions ----

    def attributes(self, scene: Scene) -> dict[str, Any]:
        """The attributes the template set needs, computed once for ``scene``."""
        return attributes.compute(scene, self._needed, sensors=self.vocab.sensors)

    def eligible(self, attrs: dict[str, Any]) -> list[TemplateInfo]:
        """Templates whose every required attribute the scene supports (non-None)."""
        met = {k for k, v in attrs.items() if v is not None}
        return [t for t, req in zip(self.templates, self._req_sets, strict=True) if req <= met]

    def caption(self, scene: Scene) -> list[Caption]:
        """Up to ``captions_per_image`` distinct captions, spread over families first (see
        :meth:`caption_many`, which this is for one scene; a failure is raised)."""
        (result,) = self._caption_batch([scene])
        if isinstance(result, Exception):
            raise result
        return [Caption(text, tid, self._by_id[tid].family) for text, tid in zip(*result, strict=True)]

    def caption_many(self, scenes: Sequence[Scene]) -> list[tuple[list[str], list[str]] | Exception]:
        """Per scene (caption texts, template ids), or the exception (:class:`TemplateError`,
        :class:`D2CError` or ValueError) captioning it raised; the other scenes are still captioned.

        Each step draws a family among those not used yet in this round (by summed weight), then a template
        in it (by weight), then the wording; five uniform draws per step from the scene's stream (see
        :func:`scene_uniforms`), always. Identical texts are dropped. Every scene is independent: the result
        is the same whatever batch it comes in, and all scenes of a batch take each step together."""
        return self._caption_batch(scenes)

    def _caption_batch(self, scenes: Sequence[Scene]) -> list[tuple[list[str], list[str]] | Exception]:
        """:meth:`caption_many`: attributes of all scenes at once, then the choice rounds (as array operations
        for a batch, scene by scene in plain Python over the same tables and draws for a few scenes)."""
        if self._choices.cells + self._texts.cells > _TABLE_LIMIT:
            self._forget()
        entries = self._entries_of(scenes)
        out: list[Any] = list(entries)
        ok = [k for k, e in enumerate(entries) if isinstance(e, _Entry)]
        if not ok:
            return out
        seeds = np.fromiter((scene_seed(self.seed, scenes[k].key) for k in ok), np.uint64, len(ok))
        if len(ok) <= SMALL_BATCH:
            draws = scene_uniforms(seeds, 0, _DRAWS * (self.captions_per_image + 1)).tolist()
            for j, k in enumerate(ok):
                out[k] = self._choose_one(entries[k], seeds[j : j + 1], draws[j])
            return out
        eid = np.fromiter((entries[k].id for k in ok), np.int64, len(ok))
        first = np.fromiter((entries[k].first for k in ok), np.int64, len(ok))
        for k, result in zip(ok, self._choose(eid, first, seeds), strict=True):
            out[k] = result
        return out

    def _entries_of(self, scenes: Sequence[Scene]) -> list[_Entry | Exception]:
        """Each scene's entry (attributes and what derives from them), or the error computing them raised:
        all scenes at once, or scene by scene to tell which one failed."""
        try:
            return self._attr_cache.get_many(scenes)
        except (D2CError, ValueError):
            pass
        out: list[_Entry | Exception] = []
        for s in scenes:
            try:
                out.append(self._attr_cache.get(s))
            except (D2CError, ValueError) as exc:
                out.append(exc)
        return out

    def _choose(self, eid: np.ndarray, step: np.ndarray, seeds: np.ndarray) -> list[Any]:
        """The captions of scenes with entries ``eid``, first steps ``step`` and seeds ``seeds``: each round
        takes one step of every scene still short of captions and with templates left."""
        n, cpi = len(eid), self.captions_per_image
        kept = np.zeros((n, cpi), np.int64)  # text ids (0 is the empty text, never kept)
        chosen = np.zeros((n, cpi), np.int64)  # template indices
        count = np.zeros(n, np.int64)
        failure = np.full(n, -1, np.int64)
        draws = scene_uniforms(seeds, 0, _DRAWS * (cpi + 1))
        active = np.flatnonzero(self._choices.live(step))
        at = 0
        while len(active):
            if draws.shape[1] < at + _DRAWS:
                draws = np.concatenate([draws, scene_uniforms(seeds, draws.shape[1], _DRAWS * cpi)], axis=1)
            u = draws[active, at : at + _DRAWS]
            at += _DRAWS
            here = step[active]
            idx = self._choices.pick(here, u[:, 0], u[:, 1])
            text = self._texts.ids(eid[active], idx, u[:, 2], u[:, 3], u[:, 4])
            failed = text < 0
            failure[active[failed]] = -text[failed] - 1
            new = (text > 0) & ~(kept[active] == text[:, None]).any(1)
            rows = active[new]
            kept[rows, count[rows]] = text[new]
            chosen[rows, count[rows]] = idx[new]
            count[rows] += 1
            going = ~failed & (count[active] < cpi)
            active = active[going]
            step[active] = self._choices.after(here[going], idx[going])
            active = active[self._choices.live(step[active])]
        return self._texts.results(kept, chosen, count, failure)

    def _choose_one(self, entry: _Entry, seed: np.ndarray, u: list[float]) -> Any:
        """:meth:`_choose` of one scene in plain Python: the same steps over the same memoised tables, with
        the same draws (``u``: the start of the scene's stream, extended as :meth:`_choose` extends it)."""
        choices, texts, cpi = self._choices, self._texts, self.captions_per_image
        kept: list[int] = []
        chosen: list[int] = []
        step, at = entry.first, 0
        while choices.live_one(step):
            if len(u) < at + _DRAWS:
                u = u + scene_uniforms(seed, len(u), _DRAWS * cpi)[0].tolist()
            idx = choices.pick_one(step, u[at], u[at + 1])
            text = texts.id_one(entry.id, idx, u[at + 2], u[at + 3], u[at + 4])
            at += _DRAWS
            if text < 0:
                return texts.failure(text)
            if text > 0 and text not in kept:
                kept.append(text)
                chosen.append(idx)
                if len(kept) == cpi:
                    break
            step = choices.after_one(step, idx)
        return [texts.text(t) for t in kept], [self.templates[i].id for i in chosen]

    def _entry(self, attrs: dict[str, Any]) -> _Entry:
        pool = self._eligible_pool(attrs)
        return _Entry(self._texts.add_entry(attrs), attrs, self._choices.step(pool, frozenset()))

    def _forget(self) -> None:
        """Drop the memoised entries, choice tables and text keys (their ids refer to one another)."""
        self._attr_cache.clear()
        self._choices.clear()
        self._texts.clear()

    def _eligible_pool(self, attrs: dict[str, Any]) -> tuple[int, ...]:
        """Indices of :meth:`eligible` templates, memoised by which attributes are set."""
        met_key = tuple(v is not None for v in attrs.values())
        key = (tuple(attrs), met_key)
        hit = self._pools.get(key)
        if hit is None:
            ids = {t.id for t in self.eligible(attrs)}
            hit = self._pools[key] = tuple(i for i, t in enumerate(self.templates) if t.id in ids)
        return hit

    def render(self, template_id: str, context: dict[str, Any], style: tuple[str, int, bool]) -> str:
        """Render one template (cached by template id, context and wording draws)."""
        style = tuple(
            v if used else d
            for v, used, d in zip(style, self._style_use[template_id], STYLE_DEFAULT, strict=True)
        )  # type: ignore[assignment]
        key = (template_id, tuple(context.items()), style)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        text = self._render_text(template_id, context, style)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = text
        return text

    def _render_text(self, template_id: str, context: dict[str, Any], style: tuple[str, int, bool]) -> str:
        """The normalised text of one render (not cached); any failure becomes a :class:`TemplateError`
        naming the template."""
        info = self._by_id[template_id]
        ctx = dict(context)
        ctx.update(zip(STYLE_NAMES, style, strict=True))
        try:
            raw = self._render_raw(template_id, ctx)
        except SecurityError as exc:
            raise TemplateError(
                f"{info.path}: template {template_id!r}: blocked by the sandbox: {exc}"
            ) from None
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"{info.path}: template {template_id!r}: {exc.message} (a template may use only its requires "
                f"{', '.join(info.requires)} and {', '.join(STYLE_NAMES)})"
            ) from None
        except Exception as exc:  # a template bug must name the template, not crash anonymously
            raise TemplateError(
                f"{info.path}: template {template_id!r}: {type(exc).__name__}: {exc}"
            ) from None
        return truncate_words(normalise(raw), self.max_words) if raw.strip() else ""

    def _render_raw(self, template_id: str, ctx: dict[str, Any]) -> str:
        """What ``Template.render(ctx)`` returns, without its per-call walk over the template's globals
        ChainMap (a third of a render's cost): the globals are merged into a plain dict once per template.
        Errors propagate as they are raised (``render`` only re-raises them with a rewritten traceback)."""
        tmpl = self._compiled[template_id]
        glob = self._globals.get(template_id)
        if glob is None:
            glob = self._globals[template_id] = dict(tmpl.globals)
        context = self.env.context_class(self.env, {**glob, **ctx}, tmpl.name, tmpl.blocks, globals=glob)
        return self.env.concat(tmpl.root_render_func(context))  # type: ignore[attr-defined]

    @property
    def cache_size(self) -> int:
        """Renderings held: by :meth:`render`, and by the batch path's text keys."""
        return len(self._cache) + self._texts.rendered


_DRAWS = 5  # uniform draws per step: family, template, modality noun, synonym index, digits or words
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
class _Entry:
    """A set of attribute values (shared by every scene that has them): its id for the text keys, the
    values, and its first step (eligible templates, no family used yet)."""

    id: int
    attrs: dict[str, Any]
    first: int


class _Rows:
    """A float table filled row by row while a batch runs and read as one array: rows wait in a list until
    the array is read, then go in as one block (the capacity doubles)."""

    def __init__(self, width: int) -> None:
        self.width = width
        self._a = np.empty((0, width))
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
            block = np.array(self._pending, dtype=np.float64)
            if self._n + len(block) > len(self._a):
                grown = np.empty((max(2 * len(self._a), self._n + len(block), 64), self.width))
                grown[: self._n] = self._a[: self._n]
                self._a = grown
            self._a[self._n : self._n + len(block)] = block
            self._n += len(block)
            self._pending = []
        return self._a


class _Choices:
    """The choice tables of every step met so far, as arrays, so a batch picks with a few array operations.

    A step is (templates left, families used this round). Its family table holds the families not used yet
    (all of them, starting a new round, when every remaining template's family was used) in name order with
    their summed weights; each family's member table holds its remaining templates in template order with
    their weights. A pick is the first running sum above ``u * total`` (the sums are done once per table,
    in the same order as summing at every draw). Step rows are [families, total, running sums, member
    table rows]; member rows are [templates, total, running sums, template indices] (padded: inf, 0).

    Each table is also kept as a plain :class:`_Table` made from the same lists, for a small batch to walk
    scene by scene in Python (:meth:`pick_one`, :meth:`after_one`) with no per-step array overhead."""

    def __init__(self, templates: list[TemplateInfo]) -> None:
        self.family = [t.family for t in templates]
        self.weight = [t.weight for t in templates]
        self.n_fam = len(FAMILIES)
        self.width = max(Counter(self.family).values())
        self.clear()

    def clear(self) -> None:
        self._ids: dict[tuple[tuple[int, ...], frozenset[str]], int] = {}
        self._state: list[tuple[tuple[int, ...], frozenset[str], bool]] = []
        self._after = _Memo(len(self.family), self._next)
        self._steps = _Rows(2 + 2 * self.n_fam)
        self._member_ids: dict[tuple[int, ...], int] = {}
        self._members = _Rows(2 + 2 * self.width)
        self.plain: list[_Table] = []  # by step id
        self._plain_members: list[_Table] = []  # by member table row

    @property
    def cells(self) -> int:
        return self._after.cells

    def step(self, pool: tuple[int, ...], used: frozenset[str]) -> int:
        """The id of step (pool, used), building its tables the first time."""
        key = (pool, used)
        hit = self._ids.get(key)
        if hit is not None:
            return hit
        family, weight = self.family, self.weight
        fresh = [i for i in pool if family[i] not in used]
        reset = not fresh
        members: dict[str, list[int]] = {}
        fam_w: dict[str, float] = {}
        for i in fresh or pool:
            f = family[i]
            if f in members:
                members[f].append(i)
                fam_w[f] += weight[i]
            else:
                members[f] = [i]
                fam_w[f] = 0.0 + weight[i]
        fams = sorted(fam_w)
        table = _Table.of([fam_w[f] for f in fams], [self._member_row(members[f]) for f in fams])
        self._steps.add(table.row(self.n_fam))
        self.plain.append(table)
        self._state.append((pool, used, reset))
        hit = self._ids[key] = len(self._state) - 1
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
        return self._steps.a[steps, 0] > 0

    def pick(self, steps: np.ndarray, u_family: np.ndarray, u_member: np.ndarray) -> np.ndarray:
        """The template each (live) step chooses with its two draws."""
        at = np.arange(len(steps))
        f = self.n_fam
        t = self._steps.a[steps]
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
        return bool(self.plain[step].items)

    def pick_one(self, step: int, u_family: float, u_member: float) -> int:
        """:meth:`pick` of one step, in plain Python."""
        families = self.plain[step]
        members = self._plain_members[families.items[families.pick(u_family)]]
        return members.items[members.pick(u_member)]

    def after_one(self, step: int, idx: int) -> int:
        """:meth:`after` of one step, in plain Python (the same memo)."""
        return self._after.get_one(step, idx)

    def _next(self, step: int, idx: int) -> int:
        pool, used, reset = self._state[step]
        return self.step(tuple(i for i in pool if i != idx), (frozenset() if reset else used) | {self.family[idx]})


_NONE = np.iinfo(np.int32).min  # no id yet: ids are >= 0, failures small negative numbers


class _Memo:
    """``make(row, col) -> int`` memoised in a growing int32 table, so a batch looks up all its keys with one
    array gather and calls ``make`` only for those met for the first time."""

    def __init__(self, width: int, make: Callable[[int, int], int]) -> None:
        self.make = make
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
        for j, r, c in zip(miss.tolist(), rows[miss].tolist(), cols[miss].tolist(), strict=True):
            value = self.a.item(r, c)  # an earlier ``make`` may have filled it
            if value == _NONE:
                value = self.make(r, c)
                self.a[r, c] = value
            got[j] = value
        return got

    def get_one(self, row: int, col: int) -> int:
        """:meth:`get` of one key, in plain Python."""
        if row >= len(self.a):
            self._grow(row + 1)
        value = self.a.item(row, col)
        if value == _NONE:
            value = self.make(row, col)
            self.a[row, col] = value
        return value

    def put(self, row: int, cols: list[int], value: int) -> None:
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
    return np.minimum((target[:, None] >= running).sum(1), n.astype(np.int64) - 1)


class _Texts:
    """Rendered texts by (template, its context, the wording draws it reads), as integer keys so a batch
    looks them up with array gathers (see :class:`_Memo`): an entry's context for a template (the values of its ``requires``) is
    interned once, and texts are interned too (id 0 is the empty text); failures get negative ids."""

    def __init__(self, engine: CaptionEngine) -> None:
        self.engine = engine
        self.templates = engine.templates
        self.use = np.array([engine._style_use[t.id] for t in engine.templates], dtype=np.int64).reshape(-1, 3)
        self._use = self.use.tolist()
        self.n_modality = len(engine._modality)
        self.syn_named = [engine._syn_named[t.id] for t in engine.templates]
        self.template_ids = np.array([t.id for t in engine.templates], dtype=object)
        self.clear()

    def clear(self) -> None:
        self.rendered = 0
        self._entries: list[dict[str, Any]] = []
        self._context_of = _Memo(len(self.templates), self._context)  # (entry, template) -> context id
        self._context_ids: dict[tuple[int, tuple], int] = {}
        self._contexts: list[tuple[int, tuple]] = []  # context id -> (template, values of its requires)
        self._keys = _Memo(self.n_modality * SYN_RANGE * 2, self._render)  # (context, wording) -> text id
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
        key = (idx, tuple(attrs[r] for r in self.templates[idx].requires))
        hit = self._context_ids.get(key)
        if hit is None:
            hit = self._context_ids[key] = len(self._contexts)
            self._contexts.append(key)
        return hit

    def _render(self, context: int, wording: int) -> int:
        """Render the text of ``context`` with ``wording`` (modality, syn, digits); the other synonym indices
        that would give the same text (see :class:`SynIndex`) get its id too."""
        modality, rest = divmod(wording, SYN_RANGE * 2)
        idx, values = self._contexts[context]
        info = self.templates[idx]
        syn = SynIndex(rest // 2)
        style = (self.engine._modality[modality], syn, bool(rest % 2))
        try:
            text = self.engine._render_text(info.id, dict(zip(info.requires, values, strict=True)), style)
        except TemplateError as exc:
            self._failures.append(exc)
            return -len(self._failures)
        self.rendered += 1
        hit = self._ids.get(text)
        if hit is None:
            hit = self._ids[text] = len(self._ids)
            if hit == len(self._texts):
                self._texts = np.concatenate([self._texts, np.empty(len(self._texts), dtype=object)])
            self._texts[hit] = text
        if self.use[idx, 1] and not self.syn_named[idx]:
            base = wording - 2 * syn
            self._keys.put(context, [base + 2 * other for other in syn.congruent(range(SYN_RANGE))], hit)
        return hit

    def results(self, kept: np.ndarray, chosen: np.ndarray, count: np.ndarray, failure: np.ndarray) -> list[Any]:
        """Per scene (texts, template ids) from the kept text ids and template indices, or its failure."""
        texts = self._texts[kept].tolist()
        ids = self.template_ids[chosen].tolist()
        full = kept.shape[1]
        out: list[Any] = [
            (t, i) if c == full else (t[:c], i[:c])
            for t, i, c in zip(texts, ids, count.tolist(), strict=True)
        ]
        for k in np.flatnonzero(failure >= 0).tolist():
            out[k] = self._failures[failure[k]]
        return out
