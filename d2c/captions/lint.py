"""Template lint: metadata, syntax, undefined names, sandbox and caption length on synthetic scenes.

Length is counted with open_clip's tokenizer when it is importable (the ``[train]`` extra; imported
lazily), else bounded by words. CLIP's context is 77 tokens; captions must fit with room to spare.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
from jinja2 import meta

from d2c.captions import attributes
from d2c.captions.sandbox import MAX_WORDS, STYLE_NAMES, SYN_RANGE, make_environment, normalise
from d2c.captions.templates import (
    DEFAULT_SYNONYMS,
    DEFAULT_TEMPLATES_DIR,
    TemplateError,
    TemplateInfo,
    template_info,
)
from d2c.captions.words import Vocabulary
from d2c.model import Instance, Scene

log = logging.getLogger(__name__)
MAX_TOKENS = 64  # of CLIP's 77, leaving room for a prefix


@dataclass(frozen=True)
class LintProblem:
    path: str
    template_id: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.template_id + ': ' if self.template_id else ''}{self.message}"


@dataclass
class LintReport:
    problems: list[LintProblem] = field(default_factory=list)
    templates: int = 0
    renders: int = 0
    max_length: int = 0
    length_unit: str = "words"

    @property
    def ok(self) -> bool:
        return not self.problems


def token_counter(kind: str = "auto") -> tuple[Callable[[str], int], str]:
    """(length function, unit): CLIP BPE tokens incl. start/end when open_clip imports, else words."""
    if kind in ("auto", "clip"):
        try:
            from open_clip.tokenizer import SimpleTokenizer
        except ImportError:
            if kind == "clip":
                raise
        else:
            tok = SimpleTokenizer()
            return (lambda text: len(tok.encode(text)) + 2), "clip tokens"
    return (lambda text: len(text.split())), "words"


def _inst(
    cx: float, cy: float, w: float, h: float, angle: float, cls: str, difficult: bool = False
) -> Instance:
    from d2c.geometry import obb_to_polygon

    return Instance.from_polygon(obb_to_polygon((cx, cy, w, h, angle)), cls, difficult=difficult)


def battery(seed: int = 0) -> list[Scene]:
    """Synthetic scenes that together meet every attribute: empty, single, rows, dense, scattered,
    clusters, many objects, several classes, difficult flags, gsd and a named sensor."""
    rng = np.random.default_rng(seed)
    scenes: list[Scene] = []

    def add(insts: list[Instance], gsd: float | None = None, source: str | None = None) -> None:
        i = len(scenes)
        scenes.append(
            Scene(
                key=f"lint/{i:03d}",
                source="lint",
                image_path=f"{i:03d}.png",
                root="/",
                width=900,
                height=900,
                instances=insts,
                gsd=gsd,
                image_source=source,
            )
        )

    add([])
    add([], source="Sentinel-1")
    for cell_x, cell_y in itertools.product((150, 450, 750), (150, 450, 750)):
        add([_inst(cell_x, cell_y, 60, 15, float(rng.uniform(0, 180)), "ship")], gsd=2.5)
    add([_inst(100 + 70 * k, 300, 40, 12, 90.0, "ship") for k in range(6)], gsd=3.0)  # row, vertical
    add([_inst(400 + 20 * (k % 3), 400 + 26 * (k // 3), 28, 10, 90.0, "ship") for k in range(9)])  # dense
    add([_inst(x, y, 30, 10, 45.0, "ship") for x, y in ((100, 100), (800, 120), (450, 800), (120, 780))])
    add(
        [_inst(100 + 20 * k, 100 + 5 * k, 20, 8, 10.0, "ship") for k in range(4)]
        + [_inst(700 + 20 * k, 700, 20, 8, 100.0, "ship") for k in range(3)]
        + [_inst(450, 120, 20, 8, 0, "ship")]
    )
    many = [
        _inst(
            float(rng.uniform(20, 880)),
            float(rng.uniform(20, 880)),
            16,
            6,
            float(rng.uniform(0, 180)),
            "ship",
            difficult=bool(k % 7 == 0),
        )
        for k in range(37)
    ]
    add(many, gsd=1.0, source="gf3")
    add(
        [
            _inst(200, 200, 80, 70, 0, "aircraft"),
            _inst(600, 300, 30, 12, 0, "ship", True),
            _inst(650, 700, 500, 120, 30, "bridge"),
            _inst(300, 650, 12, 11, 0, "car"),
            _inst(420, 480, 18, 17, 0, "tank"),
            _inst(800, 800, 140, 90, 60, "harbor"),
            _inst(100, 800, 40, 10, 0, "unmapped_class_name"),
        ],
        gsd=0.5,
        source="TerraSAR-X",
    )
    for k in range(20):  # random mixtures
        n = int(rng.integers(1, 30))
        classes = rng.choice(["ship", "aircraft", "car", "tank"], size=n, p=[0.6, 0.2, 0.1, 0.1])
        insts = [
            _inst(
                float(rng.uniform(30, 870)),
                float(rng.uniform(30, 870)),
                float(rng.uniform(10, 200)),
                float(rng.uniform(5, 10)),
                float(rng.uniform(0, 180)),
                str(c),
                bool(rng.random() < 0.1),
            )
            for c in classes
        ]
        add(
            insts,
            gsd=float(rng.uniform(0.5, 10)) if k % 2 else None,
            source="Sentinel-1" if k % 3 == 0 else None,
        )
    return scenes


def partial_battery(seed: int = 0) -> list[Scene]:
    """Battery scenes flagged ``objects_rejected`` (some of their objects were rejected), for the templates
    whose ``scenes`` is ``partial`` or ``any``: one with nothing kept, one object, one class, several
    classes, a sensor and a gsd."""
    from d2c.partial import PARTIAL_FLAG

    picks = battery(seed)
    chosen = [picks[0], picks[1], picks[2], picks[11], picks[15], picks[16]]
    return [Scene(key=s.key.replace("lint/", "lint-partial/"), source=s.source, image_path=s.image_path, root=s.root,
                  width=s.width, height=s.height, instances=list(s.instances), gsd=s.gsd,
                  image_source=s.image_source, flags=[PARTIAL_FLAG]) for s in chosen]


@functools.lru_cache(maxsize=4)
def _battery_attributes(sensors: tuple[tuple[str, str], ...]) -> list[dict]:
    return [attributes.compute(s, sensors=dict(sensors)) for s in battery() + partial_battery()]


def _check_file(path: Path, env: jinja2.Environment, problems: list[LintProblem]) -> tuple | None:
    try:
        source = path.read_text(encoding="utf-8")
        info = template_info(source, path)
    except (TemplateError, UnicodeDecodeError) as exc:
        problems.append(LintProblem(str(path), None, str(exc)))
        return None
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        problems.append(LintProblem(f"{path}:{exc.lineno}", info.id, f"syntax error: {exc.message}"))
        return None
    undeclared = meta.find_undeclared_variables(ast) - set(info.requires) - set(STYLE_NAMES)
    if undeclared:
        problems.append(
            LintProblem(
                str(path), info.id, f"uses names it does not require: {', '.join(sorted(undeclared))}"
            )
        )
        return None
    return info, env.from_string(source)


def lint(
    templates_dir: Path | None = None,
    *,
    tokenizer: str = "auto",
    max_tokens: int = MAX_TOKENS,
    max_words: int = MAX_WORDS,
    count_threshold: int = 10,
) -> LintReport:
    """Lint every ``*.j2`` in ``templates_dir`` (default: the shipped set); never raises on a bad file."""
    folder = Path(templates_dir) if templates_dir is not None else DEFAULT_TEMPLATES_DIR
    report = LintReport()
    if not folder.is_dir():
        report.problems.append(LintProblem(str(folder), None, "templates folder not found"))
        return report
    syn = [DEFAULT_SYNONYMS] + ([folder / "synonyms.toml"] if (folder / "synonyms.toml").is_file() else [])
    vocab = Vocabulary.load(*syn)
    env = make_environment(vocab, count_threshold)
    measure, report.length_unit = token_counter(tokenizer)
    limit = max_tokens if report.length_unit != "words" else max_words
    scenes = _battery_attributes(tuple(sorted(vocab.sensors.items())))
    seen_ids: dict[str, Path] = {}
    for path in sorted(folder.glob("*.j2")):
        checked = _check_file(path, env, report.problems)
        if checked is None:
            continue
        info, tmpl = checked
        report.templates += 1
        if info.id in seen_ids:
            report.problems.append(LintProblem(str(path), info.id, f"id already used by {seen_ids[info.id]}"))
        seen_ids[info.id] = path
        _render_battery(info, tmpl, scenes, vocab, measure, limit, report)
    if report.templates == 0 and not report.problems:
        report.problems.append(LintProblem(str(folder), None, "no *.j2 templates"))
    return report


def _render_battery(
    info: TemplateInfo,
    tmpl: jinja2.Template,
    scenes: list[dict],
    vocab: Vocabulary,
    measure: Callable[[str], int],
    limit: int,
    report: LintReport,
) -> None:
    """Render ``tmpl`` on every battery scene it is eligible for, with every synonym index and the longest
    modality noun; record sandbox violations, errors and over-long captions (first of each)."""
    modality = max(vocab.modality or ["SAR image"], key=len)
    eligible = [a for a in scenes if all(a.get(r) is not None for r in info.requires)
                and info.captions(a.get("partial") is not None)]
    if not eligible:
        report.problems.append(LintProblem(str(info.path), info.id, "no battery scene meets its requires"))
        return
    texts: set[str] = set()
    for attrs in eligible:
        for syn, digits in itertools.product(range(SYN_RANGE), (False, True)):
            ctx = {r: attrs[r] for r in info.requires} | {"modality": modality, "syn": syn, "digits": digits}
            try:
                texts.add(normalise(tmpl.render(ctx)))
            except jinja2.sandbox.SecurityError as exc:
                report.problems.append(LintProblem(str(info.path), info.id, f"blocked by the sandbox: {exc}"))
                return
            except Exception as exc:  # any render failure is a lint finding, named by template
                report.problems.append(
                    LintProblem(str(info.path), info.id, f"render failed: {type(exc).__name__}: {exc}")
                )
                return
            report.renders += 1
    for text in sorted(texts):
        n = measure(text)
        report.max_length = max(report.max_length, n)
        if n > limit:
            report.problems.append(
                LintProblem(str(info.path), info.id, f"{n} {report.length_unit} > {limit}: {text!r}")
            )
            return
        if not text.strip():
            report.problems.append(LintProblem(str(info.path), info.id, "renders an empty caption"))
            return
