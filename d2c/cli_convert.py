"""``d2c convert``: the standalone D2C tool (annotations in, captioned Parquet shards out)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from d2c.errors import D2CError
from d2c.limits import DEFAULT_MAX_PARTS, DEFAULT_MAX_VERTICES

log = logging.getLogger(__name__)


def _fail(exc: BaseException, code: int) -> None:
    click.echo(f"d2c convert: error: {exc}", err=True)
    sys.exit(code)


@click.command("convert")
@click.argument("input", default=".", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="auto", show_default=True,
              help="Annotation format of INPUT: auto, coco, dota, voc, yolo, yolo_obb (or a plug-in reader's name); auto "
                   "detects it and says what it chose.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the shards, _manifest.json, _stats.json and _rejects.jsonl.")
@click.option("--images", type=click.Path(path_type=Path), help="Image folder (else the format's layout).")
@click.option("--annotations", type=click.Path(path_type=Path), help="Annotation file or folder override.")
@click.option("--source", help="Source name: shard prefix and key prefix (default: from INPUT's name).")
@click.option("--class-map", metavar="FILE|NAME",
              help="TOML class map (raw name -> canonical class), or a built-in one by name (ssdd); "
                   "default: the SAR taxonomy.")
@click.option("--templates", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Caption template folder: adds to or overrides the built-in set by template id.")
@click.option("--no-default-templates", is_flag=True,
              help="Caption with the --templates folder alone, leaving d2c's built-in templates out.")
@click.option("--captions-per-image", default=5, show_default=True, type=click.IntRange(min=1),
              help="Captions rendered per scene (each from a different template where possible).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for caption choice.")
@click.option("--images-mode", default="reference", show_default=True, type=click.Choice(["embed", "reference"]),
              help="embed: store image bytes in the shards; reference: store paths relative to the root "
                   "(small and fast; sarclip-train needs embed, mmsar build embeds by default).")
@click.option("--shard-rows", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Rows per shard at most (shards are also bounded in bytes).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (COCO, DOTA and VOC inputs are also read by them); the output is "
                   "identical whatever the number.")
@click.option("--resume", is_flag=True, help="Keep complete shards of an interrupted identical run and go on.")
@click.option("--strict", is_flag=True, help="Exit 1 if anything was rejected.")
@click.option("--max-side", type=click.IntRange(min=16),
              help="Store a reduced copy of images whose long side exceeds this (size recorded).")
@click.option("--tile", type=int, help="Cut scenes into TILE-px tiles (one row each); for very large scenes.")
@click.option("--overlap", default=200, show_default=True, type=int, help="Tile overlap in pixels.")
@click.option("--tile-min-visible", default=0.7, show_default=True,
              type=click.FloatRange(0.0, 1.0, min_open=True),
              help="With --tile: keep an object cut by a tile border when at least this share of its area "
                   "lies inside the tile; smaller parts follow --tile-below.")
@click.option("--tile-below", default="difficult", show_default=True, type=click.Choice(["difficult", "drop"]),
              help="With --tile: what happens to an object part under --tile-min-visible: keep it clipped and "
                   "marked difficult, or drop it (an object no tile keeps goes to _rejects.jsonl).")
@click.option("--tile-negative-rate", default=0.1, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="With --tile: share of empty tiles (no object) kept as negatives, chosen per tile from "
                   "--seed; 0 keeps none, 1 keeps all.")
@click.option("--db", is_flag=True, help="Non-8-bit rasters: take 10*log10 before the 2-98% clip.")
@click.option("--dual-pol", default="vv,vh,mean", show_default=True,
              type=click.Choice(["vv,vh,mean", "vv,vh,ratio", "vv,vv,vh"]),
              help="How two-band (VV, VH) rasters become three channels.")
@click.option("--keep-partial-scenes", is_flag=True,
              help="Keep a scene some of whose objects were rejected (default: reject it whole, code "
                   "partial_scene): it is flagged objects_rejected and captioned only by templates that claim "
                   "no total, emptiness or 'only'.")
@click.option("--max-vertices", default=DEFAULT_MAX_VERTICES, show_default=True, type=click.IntRange(min=4),
              help="Geometry budget: vertices of one object (all its polygon parts together); an object with "
                   "more is rejected (too_complex) before any polygon work.")
@click.option("--max-parts", default=DEFAULT_MAX_PARTS, show_default=True, type=click.IntRange(min=1),
              help="Geometry budget: polygon parts of one object (COCO segmentations); more is rejected "
                   "(too_complex).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def convert_cmd(input: Path, fmt: str, out: Path, images: Path | None, annotations: Path | None,
                source: str | None, class_map: str | None, templates: Path | None,
                no_default_templates: bool, captions_per_image: int, seed: int, images_mode: str, shard_rows: int, workers: int, resume: bool, strict: bool,
                max_side: int | None, tile: int | None, overlap: int, tile_min_visible: float, tile_below: str,
                tile_negative_rate: float, db: bool, dual_pol: str, keep_partial_scenes: bool,
                max_vertices: int, max_parts: int, verbose: bool) -> None:
    """Convert detection annotations (COCO JSON, DOTA labelTxt, Pascal VOC, YOLO) into captioned Parquet shards.

    INPUT is a dataset root (DOTA: labelTxt/ + images/; VOC: Annotations/ + JPEGImages/; YOLO: images/ +
    labels/ + data.yaml) or a COCO JSON
    file; it defaults to the current directory. Exit codes: 0 done (rejects allowed unless --strict),
    1 failure (or rejects under --strict), 2 usage error. A scene some of whose objects were rejected is
    rejected whole unless --keep-partial-scenes, so that no caption claims a total it cannot know.

    \b
    Example:
      d2c convert data/SSDD --format dota --out shards/ --images-mode embed --workers 4
    """
    from d2c.convert import StrictError, convert
    from d2c.imageio import StretchConfig
    from d2c.options import ConvertOptions

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")
    if not input.exists():
        _fail(FileNotFoundError(f"{input}: no such file or folder"), 2)
    if no_default_templates and templates is None:
        _fail(ValueError("--no-default-templates needs --templates DIR (the templates to use instead)"), 2)
    try:
        options = ConvertOptions(
            format=fmt, images=images, annotations=annotations, source=source, class_map=class_map,
            templates=templates, include_default_templates=not no_default_templates,
            captions_per_image=captions_per_image, seed=seed, images_mode=images_mode, shard_rows=shard_rows,
            max_side=max_side, tile=tile, overlap=overlap, stretch=StretchConfig(db=db, dual_pol=dual_pol),
            keep_partial_scenes=keep_partial_scenes, tile_min_visible=tile_min_visible, tile_below=tile_below,
            tile_negative_rate=tile_negative_rate, max_vertices=max_vertices, max_parts=max_parts,
            workers=workers, resume=resume, strict=strict)
        result = convert(input, out, options)
    except StrictError as exc:
        _print_summary(out)
        _fail(exc, 1)
    except D2CError as exc:
        _fail(exc, exc.exit_code)
    except (OSError, ValueError) as exc:
        _fail(exc, 1)
    else:
        _print_summary(result.out)


def _print_summary(out: Path) -> None:
    """The rich accounting table (d2c.accounting) from _stats.json, on stderr."""
    import json

    from rich.console import Console

    from d2c.accounting import Stats, summary_table
    from d2c.shards import STATS

    try:
        stats = json.loads((out / STATS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    table = summary_table(Stats.from_dict(stats), title=f"d2c convert -> {out}")
    table.add_row("captions written", str(stats.get("captions")))
    table.add_row("shards / rows", f"{stats.get('shards')} / {stats.get('rows')}")
    Console(stderr=True).print(table)
    if stats.get("images_mode") == "reference":
        click.echo("note: images are referenced, not embedded; sarclip-train needs them embedded "
                   "(--images-mode embed, or mmsar build)", err=True)
