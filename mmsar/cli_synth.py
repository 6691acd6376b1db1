"""``mmsar synth``: generate synthetic SAR scenes with exact COCO / DOTA / VOC annotations."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from d2c.errors import D2CError, UsageError


def _size_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(lo), int(hi)
    except ValueError:
        raise UsageError(f"--size-range must look like 256:4096, got {text!r}") from None


def _formats(text: str) -> tuple[str, ...]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    return ("coco", "dota", "voc") if "all" in names or not names else tuple(names)


@click.command("synth")
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder."
)
@click.option("--images", required=True, type=int, help="Number of scenes.")
@click.option("--size", default=800, show_default=True, type=int, help="Square scene side in pixels.")
@click.option("--size-range", default=None, help="LO:HI: draw each scene's sides from this range instead.")
@click.option(
    "--format", "fmt", default="all", show_default=True, help="coco, dota, voc, all (or a comma list)."
)
@click.option(
    "--dtype",
    default="uint8",
    show_default=True,
    type=click.Choice(["uint8", "uint16", "float32"]),
    help="uint8: dB-scaled PNG; uint16 / float32: GeoTIFF.",
)
@click.option(
    "--classes", default=None, help="Comma list from ship,aircraft,tank,car,bridge,harbor (default all)."
)
@click.option("--max-objects", default=60, show_default=True, type=int, help="Most targets in one scene.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed: same seed, same scenes.")
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes.")
@click.option(
    "--gsd", default=None, type=float, help="Metres per pixel for every scene (default: drawn per scene)."
)
@click.option(
    "--aspect",
    default=None,
    type=float,
    help="With --size-range: long-to-short side ratios up to this (strip-like scenes; default near-square).",
)
def synth(
    out, images, size, size_range, fmt, dtype, classes, max_objects, seed, workers, gsd, aspect
) -> None:
    """Synthetic SAR scenes and their annotations: OUT/images/, coco.json, labelTxt/, Annotations/.

    \b
    Example:
      mmsar synth --out synth/ --images 20 --size 512 --format dota
    """
    import logging

    from d2c.progress import Progress
    from mmsar.synth import generate

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        with Progress("synth", images, unit="scenes") as bar:
            result = generate(
                out,
                images=images,
                size=size,
                size_range=_size_range(size_range),
                formats=_formats(fmt),
                dtype=dtype,
                classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None,
                max_objects=max_objects,
                seed=seed,
                workers=workers,
                gsd=gsd,
                aspect=aspect,
                progress=lambda done, total: bar.update(done),
            )
    except D2CError as exc:
        click.echo(f"mmsar synth: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        click.echo(f"mmsar synth: error: {exc}", err=True)
        sys.exit(1)
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items()) or "none"
    click.echo(f"synth: {result.images} images, {result.instances} instances ({counts}) in {result.out}")
