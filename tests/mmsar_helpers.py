"""Small ``mmsar build`` configs for tests: one header (captions, shards, splits, SARCount, chips) and one
block per source, so each test file states only what its build is about. The text keeps ``{name}``
placeholders for ``str.format``, as the tests fill in their paths."""

from __future__ import annotations


def config(name: str, seed: int, shard_rows: int, *sources: str, top: str = "",
           ratios: tuple[float, float, float] | None = (0.5, 0.25, 0.25), max_per_count: int = 2) -> str:
    """A config's text: ``top`` lines (``work``, ``out``) after the seed, then the sections and ``sources``."""
    lines = [f'name = "{name}"', f"seed = {seed}", *([top] if top else []),
             "[captions]", "per_image = 2", "[output]", f"shard_rows = {shard_rows}"]
    if ratios is not None:
        lines += ["[splits]", f"ratios = {list(ratios)}", "[sarcount]", f"max_per_count = {max_per_count}"]
    lines += ["[chips]", "size = 16", "min_crop = 8", ""]
    return "\n".join(lines) + "\n" + "\n".join(sources)


def source(name: str, fmt: str, input: str) -> str:
    """A ``[[sources]]`` block; ``input`` is TOML (a quoted path or an inline table, braces doubled)."""
    return f'[[sources]]\nname = "{name}"\nformat = "{fmt}"\ninput = {input}\nlicence = "CC0-1.0"\n'


def coco_input(folder: str) -> str:
    """The inline table of a COCO source whose ``coco.json`` and ``images/`` lie in ``folder``."""
    return f'{{{{path = "{folder}/coco.json", images = "{folder}/images"}}}}'
