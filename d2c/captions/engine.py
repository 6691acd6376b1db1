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

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from jinja2.sandbox import SecurityError

from d2c.blocks import SceneBlock
from d2c.captions import attributes
from d2c.captions.choice import DRAWS, Choices, Entry, Texts, row_counts, scene_uniforms
from d2c.captions.sandbox import (
    MAX_WORDS,
    STYLE_DEFAULT,
    STYLE_NAMES,
    clean,
    make_environment,
    style_use,
)
from d2c.captions.templates import (
    DEFAULT_SYNONYMS,
    DEFAULT_TEMPLATES_DIR,
    TemplateError,
    TemplateInfo,
    load_sources,
)
from d2c.captions.words import Vocabulary
from d2c.errors import D2CError
from d2c.model import Scene, scene_seeds

log = logging.getLogger(__name__)
_CACHE_LIMIT = 500_000
_TABLE_LIMIT = 20_000_000  # cells of the batch path's id tables (int32) before they are dropped and rebuilt
_ID, _FIRST = attrgetter("id"), attrgetter("first")  # of an Entry
SMALL_BATCH = attributes.SMALL_BATCH  # up to this many scenes, the choice steps run scene by scene in Python


@dataclass(frozen=True)
class Caption:
    text: str
    template_id: str
    family: str


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
        # "partial" always: it decides which templates may caption a scene (TemplateInfo.scenes)
        self._needed = sorted({"partial", *(r for t in self.templates for r in t.requires)})
        digest = hashlib.sha256()
        for tid in sorted(loaded):
            digest.update(f"{tid}\0{loaded[tid][1]}\0".encode())
        digest.update(self.vocab.source_text.encode())
        self.template_set_hash = digest.hexdigest()
        self._cache: dict[tuple, str] = {}
        self._globals: dict[str, dict[str, Any]] = {}
        self._modality = self.vocab.modality or [STYLE_DEFAULT[0]]
        self._pools: dict[tuple, int] = {}
        self._choices = Choices(self.templates)
        self._texts = Texts(self.templates, self._style_use, self._syn_named, self._modality, self._render_text)
        self._attr_cache = attributes.AttributeCache(self._needed, self.vocab.sensors, derive=self._entry)

    # ---- captions ----

    def attributes(self, scene: Scene) -> dict[str, Any]:
        """The attributes the template set needs, computed once for ``scene``."""
        return attributes.compute(scene, self._needed, sensors=self.vocab.sensors)

    def eligible(self, attrs: dict[str, Any]) -> list[TemplateInfo]:
        """Templates whose every required attribute the scene supports (non-None) and that may caption it:
        a partial scene (some objects rejected) only those whose ``scenes`` is ``partial`` or ``any``, a
        complete one only those whose ``scenes`` is ``complete`` or ``any``."""
        met = {k for k, v in attrs.items() if v is not None}
        partial = attrs.get("partial") is not None
        return [t for t, req in zip(self.templates, self._req_sets, strict=True)
                if req <= met and t.captions(partial)]

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

    def caption_block(self, block: SceneBlock) -> list[tuple[list[str], list[str]] | Exception]:
        """:meth:`caption_many` of the scenes of ``block`` (the same results), from its columns."""
        if self._choices.cells + self._texts.cells > _TABLE_LIMIT:
            self._forget()
        try:
            entries: list[Entry | Exception] = self._attr_cache.get_block(block)  # type: ignore[assignment]
        except (D2CError, ValueError):
            return self._caption_batch(block.scenes())  # tells which scene failed
        return self._caption_entries(entries, block.key)

    def _caption_batch(self, scenes: Sequence[Scene]) -> list[tuple[list[str], list[str]] | Exception]:
        """:meth:`caption_many`: attributes of all scenes at once, then :meth:`_caption_entries`."""
        if self._choices.cells + self._texts.cells > _TABLE_LIMIT:
            self._forget()
        return self._caption_entries(self._entries_of(scenes), [s.key for s in scenes])

    def _caption_entries(self, entries: list[Entry | Exception], keys: list[str]
                         ) -> list[tuple[list[str], list[str]] | Exception]:
        """The choice rounds of scenes with attribute ``entries`` (or the error computing them) and scene
        ``keys``: as array operations for a batch, scene by scene in plain Python over the same tables and
        draws for a few scenes."""
        out: list[Any] = list(entries)
        ok = [k for k, e in enumerate(entries) if isinstance(e, Entry)]
        if not ok:
            return out
        seeds = scene_seeds(self.seed, keys if len(ok) == len(keys) else [keys[k] for k in ok])
        if len(ok) <= SMALL_BATCH:
            draws = scene_uniforms(seeds, 0, DRAWS * (self.captions_per_image + 1)).tolist()
            for j, k in enumerate(ok):
                out[k] = self._choose_one(entries[k], seeds[j : j + 1], draws[j])  # type: ignore[arg-type]
            return out
        got = entries if len(ok) == len(entries) else [entries[k] for k in ok]
        eid = np.fromiter(map(_ID, got), np.int64, len(ok))
        first = np.fromiter(map(_FIRST, got), np.int64, len(ok))
        for k, result in zip(ok, self._choose(eid, first, seeds), strict=True):
            out[k] = result
        return out

    def _entries_of(self, scenes: Sequence[Scene]) -> list[Entry | Exception]:
        """Each scene's entry (attributes and what derives from them), or the error computing them raised:
        all scenes at once, or scene by scene to tell which one failed."""
        try:
            return self._attr_cache.get_many(scenes)
        except (D2CError, ValueError):
            pass
        out: list[Entry | Exception] = []
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
        draws = scene_uniforms(seeds, 0, DRAWS * (cpi + 1))
        active = np.flatnonzero(self._choices.live(step))
        at = 0
        while len(active):
            if draws.shape[1] < at + DRAWS:
                draws = np.concatenate([draws, scene_uniforms(seeds, draws.shape[1], DRAWS * cpi)], axis=1)
            u = draws[active, at : at + DRAWS]
            at += DRAWS
            here = step[active]
            idx = self._choices.pick(here, u[:, 0], u[:, 1])
            text = self._texts.ids(eid[active], idx, u[:, 2], u[:, 3], u[:, 4])
            failed = text < 0
            failure[active[failed]] = -text[failed] - 1
            new = (text > 0) & (row_counts(kept[active] == text[:, None]) == 0)
            rows = active[new]
            kept[rows, count[rows]] = text[new]
            chosen[rows, count[rows]] = idx[new]
            count[rows] += 1
            going = ~failed & (count[active] < cpi)
            active = active[going]
            step[active] = self._choices.after(here[going], idx[going])
            active = active[self._choices.live(step[active])]
        return self._texts.results(kept, chosen, count, failure)

    def _choose_one(self, entry: Entry, seed: np.ndarray, u: list[float]) -> Any:
        """:meth:`_choose` of one scene in plain Python: the same steps over the same memoised tables, with
        the same draws (``u``: the start of the scene's stream, extended as :meth:`_choose` extends it)."""
        choices, texts, cpi = self._choices, self._texts, self.captions_per_image
        kept: list[int] = []
        chosen: list[int] = []
        step, at = entry.first, 0
        while choices.live_one(step):
            if len(u) < at + DRAWS:
                u = u + scene_uniforms(seed, len(u), DRAWS * cpi)[0].tolist()
            idx = choices.pick_one(step, u[at], u[at + 1])
            text = texts.id_one(entry.id, idx, u[at + 2], u[at + 3], u[at + 4])
            at += DRAWS
            if text < 0:
                return texts.failure(text)
            if text > 0 and text not in kept:
                kept.append(text)
                chosen.append(idx)
                if len(kept) == cpi:
                    break
            step = choices.after_one(step, idx)
        return [texts.text(t) for t in kept], [self.templates[i].id for i in chosen]

    def _entry(self, attrs: dict[str, Any]) -> Entry:
        pool = self._eligible_pool(attrs)
        return Entry(self._texts.add_entry(attrs), attrs, self._choices.first(pool))

    def _forget(self) -> None:
        """Drop the memoised entries, choice tables and text keys (their ids refer to one another)."""
        self._attr_cache.clear()
        self._choices.clear()
        self._texts.clear()

    def _eligible_pool(self, attrs: dict[str, Any]) -> int:
        """The :meth:`eligible` templates as a bit mask (template ``i`` is bit ``i``, as in
        :class:`Choices`), memoised by which attributes are set."""
        met_key = tuple([v is not None for v in attrs.values()])
        key = (tuple(attrs), met_key)
        hit = self._pools.get(key)
        if hit is None:
            ids = {t.id for t in self.eligible(attrs)}
            hit = self._pools[key] = sum(1 << i for i, t in enumerate(self.templates) if t.id in ids)
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
        try:
            raw = self._render_raw(template_id, context, style)
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
        return clean(raw, self.max_words)

    def _render_raw(self, template_id: str, context: dict[str, Any], style: tuple[str, int, bool]) -> str:
        """What ``Template.render`` of ``context`` and the wording draws ``style`` returns, without its
        per-call walk over the template's globals ChainMap (a third of a render's cost): the globals are
        merged into a plain dict once per template, and the render's variables are made in one dict.
        Errors propagate as they are raised (``render`` only re-raises them with a rewritten traceback)."""
        tmpl = self._compiled[template_id]
        glob = self._globals.get(template_id)
        if glob is None:
            glob = self._globals[template_id] = dict(tmpl.globals)
        modality, syn, digits = style
        variables = {**glob, **context, "modality": modality, "syn": syn, "digits": digits}  # STYLE_NAMES
        context = self.env.context_class(self.env, variables, tmpl.name, tmpl.blocks, globals=glob)
        return self.env.concat(tmpl.root_render_func(context))  # type: ignore[attr-defined]

    @property
    def cache_size(self) -> int:
        """Renderings held: by :meth:`render`, and by the batch path's text keys."""
        return len(self._cache) + self._texts.rendered
