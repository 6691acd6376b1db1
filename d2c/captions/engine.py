"""The caption engine: Jinja2 templates in a sandbox, chosen per scene with a per-scene seeded generator.

A template is a pure function of the discretised attributes it ``requires`` (see
:mod:`d2c.captions.attributes`) plus three wording draws (modality noun, synonym index, digits or words).
Only those values are passed to it, so a rendering is cached by (template id, context): a conversion of
100k scenes renders each distinct context once.
"""

from __future__ import annotations

import hashlib
import logging
import re
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


def normalise(text: str) -> str:
    """Collapse whitespace, tidy spaces before punctuation and capitalise the first letter."""
    text = " ".join(text.split())
    text = re.sub(r"\s+([,.;:])", r"\1", text)
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


def make_environment(v: Vocabulary, threshold: int) -> SandboxedEnvironment:
    """The sandbox every template runs in: StrictUndefined, no autoescape, the wording filters."""
    env = LimitedSandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)

    @jinja2.pass_context
    def number(ctx: Any, n: int) -> str:
        return v.number(int(n), digits=bool(ctx["digits"]), syn=int(ctx["syn"]), threshold=threshold)

    @jinja2.pass_context
    def quantity(ctx: Any, group: Any, adjective: str | None = None) -> str:
        return v.quantity(
            group, digits=bool(ctx["digits"]), syn=int(ctx["syn"]), threshold=threshold, adjective=adjective
        )

    @jinja2.pass_context
    def noun(ctx: Any, cls_name: str, n: int = 1) -> str:
        return v.noun(str(cls_name), int(ctx["syn"]), int(n))

    @jinja2.pass_context
    def place(ctx: Any, cell: str) -> str:
        return v.cell(str(cell), int(ctx["syn"]))

    @jinja2.pass_context
    def metres(ctx: Any, m: int) -> str:
        return v.metres(int(m), int(ctx["syn"]))

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
        for tid, (info, source) in sorted(loaded.items()):
            try:
                self._style_use[tid] = style_use(self.env.parse(source))
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
        self._index = {t.id: i for i, t in enumerate(self.templates)}
        self._modality = self.vocab.modality or [STYLE_DEFAULT[0]]
        self._attr_cache = attributes.AttributeCache(self._needed, self.vocab.sensors, derive=self._entry)
        self._pools: dict[tuple, tuple[int, ...]] = {}
        self._steps: dict[tuple, _Step] = {}
        self._globals: dict[str, dict[str, Any]] = {}
        self._style_use_at = [self._style_use[t.id] for t in self.templates]

    # ---- captions ----

    def attributes(self, scene: Scene) -> dict[str, Any]:
        """The attributes the template set needs, computed once for ``scene``."""
        return attributes.compute(scene, self._needed, sensors=self.vocab.sensors)

    def eligible(self, attrs: dict[str, Any]) -> list[TemplateInfo]:
        """Templates whose every required attribute the scene supports (non-None)."""
        met = {k for k, v in attrs.items() if v is not None}
        return [t for t, req in zip(self.templates, self._req_sets, strict=True) if req <= met]

    def caption(self, scene: Scene) -> list[Caption]:
        """Up to ``captions_per_image`` distinct captions, spread over families first.

        Each step draws a family, then a template in it, then the wording (five draws, always), exactly as
        :meth:`_step` describes; the per-step tables are memoised, so a scene costs its draws and lookups."""
        draws = _Draws(np.random.default_rng(scene_seed(self.seed, scene.key)))
        entry = self._attr_cache.get(scene)
        step = entry.first
        if step is None:
            step = entry.first = self._step(entry.pool, frozenset())
        modality = self._modality
        out: list[Caption] = []
        seen: set[str] = set()
        while step.pool and len(out) < self.captions_per_image:
            u_family, u_member, u_modality, u_syn, u_digits = draws.take5()
            family = step.fams[step.fam_pick.pick(u_family)]
            members, picker = step.members[family]
            idx = members[picker.pick(u_member)]
            style = (modality[int(u_modality * len(modality))], int(u_syn * SYN_RANGE), u_digits < 0.5)
            info = self.templates[idx]
            text = self._render_entry(idx, entry, style)
            if text and text not in seen:
                seen.add(text)
                out.append(Caption(text, info.id, info.family))
            nxt = step.after.get(idx)
            if nxt is None:
                pool = tuple(i for i in step.pool if i != idx)
                nxt = step.after[idx] = self._step(pool, (frozenset() if step.reset else step.used) | {family})
            step = nxt
        return out

    def _entry(self, attrs: dict[str, Any]) -> _Entry:
        return _Entry(attrs, self._eligible_pool(attrs), {}, None)

    def _eligible_pool(self, attrs: dict[str, Any]) -> tuple[int, ...]:
        """Indices of :meth:`eligible` templates, memoised by which attributes are set."""
        met_key = tuple(v is not None for v in attrs.values())
        key = (tuple(attrs), met_key)
        hit = self._pools.get(key)
        if hit is None:
            ids = {t.id for t in self.eligible(attrs)}
            hit = self._pools[key] = tuple(i for i, t in enumerate(self.templates) if t.id in ids)
        return hit

    def _step(self, pool: tuple[int, ...], used: frozenset[str]) -> _Step:
        """The choice tables for one step: families not used yet in this round (all, starting a new round,
        when every remaining template's family was used), their summed weights in name order, and each
        family's templates with their weights, in template order. Memoised by (pool, used)."""
        key = (pool, used)
        hit = self._steps.get(key)
        if hit is not None:
            return hit
        fresh = [self.templates[i] for i in pool if self.templates[i].family not in used]
        reset = not fresh
        if reset:
            fresh = [self.templates[i] for i in pool]
        fam_w: dict[str, float] = {}
        for t in fresh:
            fam_w[t.family] = fam_w.get(t.family, 0.0) + t.weight
        fams = sorted(fam_w)
        members: dict[str, tuple[list[int], _Picker]] = {}
        for f in fams:
            chosen = [t for t in fresh if t.family == f]
            members[f] = ([self._index[t.id] for t in chosen], _Picker.of([t.weight for t in chosen]))
        hit = _Step(pool, used, fams, _Picker.of([fam_w[f] for f in fams]), members, reset, {})
        if len(self._steps) >= _CACHE_LIMIT:
            self._steps.clear()
        self._steps[key] = hit
        return hit

    def _render_entry(self, idx: int, entry: _Entry, style: tuple[str, int, bool]) -> str:
        """:meth:`render` of template ``idx`` with its context read from ``entry``; a cache hit builds no
        context dict, and the text is also kept with the entry (shared by the scenes of one signature), keyed
        by template and the wording draws it reads."""
        use = self._style_use_at[idx]
        reduced = (
            style[0] if use[0] else STYLE_DEFAULT[0],
            style[1] if use[1] else STYLE_DEFAULT[1],
            style[2] if use[2] else STYLE_DEFAULT[2],
        )
        text = entry.texts.get((idx, reduced))
        if text is not None:
            return text
        info = self.templates[idx]
        ctx = tuple((r, entry.attrs[r]) for r in info.requires)
        text = self._cache.get((info.id, ctx, reduced))
        if text is None:
            text = self.render(info.id, dict(ctx), style)
        entry.texts[(idx, reduced)] = text
        return text

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
        text = truncate_words(normalise(raw), self.max_words) if raw.strip() else ""
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = text
        return text

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
        return len(self._cache)


@dataclass(slots=True)
class _Entry:
    """A scene's attributes with what the engine derives from them: eligible template indices and each
    chosen template's rendering (filled as templates are chosen)."""

    attrs: dict[str, Any]
    pool: tuple[int, ...]
    texts: dict[tuple[int, tuple[str, int, bool]], str]  # (template index, wording) -> rendered text
    first: _Step | None  # the first step's tables (set at the first caption)


@dataclass(frozen=True, slots=True)
class _Step:
    """One step's state (templates left, families used this round) and choice tables (see
    :meth:`CaptionEngine._step`); ``after`` links to the next step by the template chosen."""

    pool: tuple[int, ...]
    used: frozenset[str]
    fams: list[str]
    fam_pick: _Picker
    members: dict[str, tuple[list[int], _Picker]]
    reset: bool
    after: dict[int, _Step]


@dataclass(frozen=True, slots=True)
class _Picker:
    """An index chosen with probability proportional to fixed weights from one uniform draw ``u`` in
    [0, 1): the first running sum above ``u * sum(weights)``. The sums are done once per table, with the
    same float operations in the same order as summing at every draw, so choices never change."""

    total: float
    running: tuple[float, ...]

    @classmethod
    def of(cls, weights: list[float]) -> _Picker:
        acc, running = 0.0, []
        for w in weights:
            acc += w
            running.append(acc)
        return cls(sum(weights), tuple(running))

    def pick(self, u: float) -> int:
        target = u * self.total
        for i, acc in enumerate(self.running):
            if target < acc:
                return i
        return len(self.running) - 1


class _Draws:
    """Uniform draws from the per-scene generator, fetched in batches (one numpy call per 64)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.buf: list[float] = []
        self.at = 0

    def take5(self) -> list[float]:
        """The next five draws (the generator's stream is the same whatever the batch boundaries)."""
        if self.at + 5 > len(self.buf):
            self.buf, self.at = self.buf[self.at:] + self.rng.random(64).tolist(), 0
        self.at += 5
        return self.buf[self.at - 5 : self.at]
