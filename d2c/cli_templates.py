"""``d2c templates list|lint|preview`` and ``d2c captions stats``: caption templates for data engineers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from d2c.errors import D2CError

DIR = click.Path(exists=True, file_okay=False, path_type=Path)


def _fail(cmd: str, exc: BaseException) -> None:
    code = getattr(exc, "exit_code", 1)
    click.echo(f"d2c {cmd}: error: {exc}", err=True)
    sys.exit(code)


def _engine(cmd: str, templates: Path | None, **kw: int):
    from d2c.captions import CaptionEngine

    try:
        return CaptionEngine(templates, **kw)
    except D2CError as exc:
        _fail(cmd, exc)


@click.group("templates")
def templates_group() -> None:
    """Caption templates: list, lint and preview them (docs/templates.md).

    \b
    Example:
      d2c templates preview data/SSDD --templates my-templates/ -n 3
    """


@templates_group.command("list")
@click.option(
    "--templates", "templates", type=DIR, default=None, help="Folder that adds or overrides templates by id."
)
def list_cmd(templates: Path | None) -> None:
    """Print each template's id, family, weight, requirements and the scenes it may caption (when not only
    complete ones: partial, any).

    \b
    Example:
      d2c templates list --templates my-templates/
    """
    engine = _engine("templates list", templates)
    for t in engine.templates:
        scenes = f"  (scenes: {t.scenes})" if t.scenes != "complete" else ""
        click.echo(f"{t.id:32s} {t.family:12s} {t.weight:4.1f}  {', '.join(t.requires)}{scenes}")
    click.echo(f"{len(engine.templates)} templates, set hash {engine.template_set_hash[:16]}")


@templates_group.command("lint")
@click.argument("directory", type=DIR, required=False)
@click.option("--words", "words_only", is_flag=True, help="Bound length by words, not CLIP tokens.")
def lint_cmd(directory: Path | None, words_only: bool) -> None:
    """Check syntax, metadata, undefined names, sandbox and caption length on synthetic scenes.

    \b
    Example:
      d2c templates lint my-templates/
    """
    from d2c.captions.lint import lint

    report = lint(directory, tokenizer="words" if words_only else "auto")
    for p in report.problems:
        click.echo(f"error: {p}", err=True)
    click.echo(
        f"{report.templates} templates, {report.renders} renders, longest caption "
        f"{report.max_length} {report.length_unit}, {len(report.problems)} problem(s)"
    )
    if not report.ok:
        sys.exit(1)


@templates_group.command("preview")
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", default="auto", show_default=True, help="Annotation format.")
@click.option("-n", "num", type=click.IntRange(min=1), default=5, show_default=True, help="Scenes to show.")
@click.option(
    "--templates", "templates", type=DIR, default=None, help="Folder that adds or overrides templates by id."
)
@click.option("--captions-per-image", type=click.IntRange(min=1), default=5, show_default=True,
              help="Captions rendered per scene.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for caption choice.")
def preview_cmd(
    input_path: Path, fmt: str, num: int, templates: Path | None, captions_per_image: int, seed: int
) -> None:
    """Print the first N scenes of INPUT with the captions they would get. A scene some of whose objects
    were rejected is shown as convert --keep-partial-scenes would write it (flagged, captioned without
    totals); convert leaves it out by default.

    \b
    Example:
      d2c templates preview data/SSDD --format dota -n 3
    """
    import d2c
    from d2c.model import Reject
    from d2c.partial import PARTIAL_FLAG, settle

    engine = _engine("templates preview", templates, captions_per_image=captions_per_image, seed=seed)
    shown = 0
    try:
        for item in settle(d2c.read(input_path, format=fmt), keep=True):
            if isinstance(item, Reject):
                click.echo(f"reject: {item}", err=True)
                continue
            counts = ", ".join(f"{n} {c}" for c, n in item.counts().items()) or "no objects"
            partial = "; some objects rejected: left out unless --keep-partial-scenes" if PARTIAL_FLAG in item.flags else ""
            click.echo(f"{item.key}  ({counts}{partial})")
            for cap in engine.caption(item):
                click.echo(f"  [{cap.family}/{cap.template_id}] {cap.text}")
            shown += 1
            if shown >= num:
                break
    except D2CError as exc:
        _fail("templates preview", exc)
    if shown == 0:
        _fail("templates preview", D2CError(f"{input_path}: no scene could be read"))


@click.group("captions")
def captions_group() -> None:
    """Caption quality measured on written shards.

    \b
    Example:
      d2c captions stats shards/
    """


@captions_group.command("stats")
@click.argument("directory", type=DIR)
@click.option("--templates", "templates", type=DIR, default=None, help="Template folder used (for families).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--clip-tokens", is_flag=True, help="Measure length in CLIP tokens (needs open_clip), not words.")
def stats_cmd(directory: Path, templates: Path | None, as_json: bool, clip_tokens: bool) -> None:
    """Captions per image, distinct ratios, distinct-1/2, family coverage, length and duplicate rate.

    \b
    Example:
      d2c captions stats shards/ --json
    """
    from d2c.captions.stats import caption_stats, shard_rows

    paths = sorted(directory.rglob("*.parquet"))
    if not paths:
        _fail("captions stats", D2CError(f"{directory}: no shard files (*.parquet)"))
    families = {t.id: t.family for t in _engine("captions stats", templates).templates}
    length = None
    if clip_tokens:
        from d2c.captions.lint import token_counter

        try:
            length = token_counter("clip")[0]
        except ImportError:
            _fail("captions stats", D2CError("--clip-tokens needs open_clip (the [train] extra)"))
    try:
        result = caption_stats(shard_rows(paths), families, length)
    except (D2CError, OSError) as exc:
        _fail("captions stats", exc)
    except Exception as exc:  # pyarrow raises its own types for a corrupt file
        _fail("captions stats", D2CError(f"{directory}: cannot read shards: {exc}"))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for k, v in result.items():
        if isinstance(v, dict):
            v = ", ".join(f"{f} {s:.1%}" for f, s in v.items())
        elif isinstance(v, float):
            v = f"{v:.4f}"
        click.echo(f"{k:26s} {v}")
