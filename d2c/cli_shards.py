"""``d2c inspect``, ``d2c verify`` and ``d2c export``: reading shard folders back."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import click

from d2c.errors import D2CError

DIR = click.Path(exists=True, file_okay=False, path_type=Path)


def _fail(cmd: str, exc: BaseException, code: int) -> None:
    click.echo(f"d2c {cmd}: error: {exc}", err=True)
    sys.exit(code)


@click.command("inspect")
@click.argument("directory", type=DIR)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--gallery", "gallery", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw a PNG grid of sample images (a row per source, a column per class) with their "
                   "boxes and one caption each.")
@click.option("--per-class", type=click.IntRange(min=1), default=2, show_default=True,
              help="With --gallery: sample images per source and class (more when the grid would hold "
                   "fewer than 8 images and the data has them).")
def inspect_cmd(directory: Path, as_json: bool, gallery: Path | None, per_class: int) -> None:
    """Summarise a shard folder: rows, classes, captions per image, sizes, rejects, schema version.

    DIRECTORY may also be a dataset root (an mmsar build output): every shard folder below it is
    summarised, with the total.

    \b
    Example:
      d2c inspect shards/ --gallery gallery.png      d2c inspect mmsar-out/ --json
    """
    try:
        _inspect(directory, as_json)
        if gallery is not None:
            from d2c.gallery import GalleryOptions, draw_gallery
            from d2c.shards import shard_folders

            g = draw_gallery(shard_folders(directory), gallery, GalleryOptions(per_class=per_class, min_images=8),
                             title=str(directory))
            click.echo(f"gallery: {g.path} ({len(g.samples)} images, {len(g.sources)} source(s) x "
                       f"{len(g.classes)} class(es))", err=as_json)
    except (D2CError, OSError, ValueError) as exc:  # a damaged shard: one line naming it
        _fail("inspect", exc, getattr(exc, "exit_code", 1))


def _inspect(directory: Path, as_json: bool) -> None:
    from d2c.shards import shard_folders

    folders = shard_folders(directory)
    if folders == [directory]:
        summary = _summary(directory)
        if as_json:
            click.echo(json.dumps(summary, indent=2))
            return
        for key, value in summary.items():
            click.echo(f"{key.replace('_', ' ')}: {value}")
        return
    per = {f.relative_to(directory).as_posix(): _summary(f) for f in folders}
    total = {"folders": len(per), "shards": sum(v["shards"] for v in per.values()),
             "rows": sum(v["rows"] for v in per.values()), "bytes": sum(v["bytes"] for v in per.values())}
    if as_json:
        click.echo(json.dumps({**total, "by_folder": per}, indent=2))
        return
    for name, summary in per.items():
        click.echo(f"{name}: {summary['rows']} rows in {summary['shards']} shard(s), classes {summary['classes']}, "
                   f"captions per image {summary['captions_per_image']}, rejects {summary['rejects']}")
    click.echo(f"total: {total['rows']} rows in {total['shards']} shard(s) of {total['folders']} folder(s), "
               f"{total['bytes']} bytes")


def _summary(directory: Path) -> dict:
    """One shard folder's summary (scene shards, or chip shards: their labels count as classes)."""
    import pyarrow.parquet as pq

    from d2c.shards import REJECTS, iter_rows, read_metadata, shard_paths

    paths = shard_paths(directory)
    if not paths:
        raise FileNotFoundError(f"{directory}: no shard files (*.parquet)")
    meta = read_metadata(paths[0])
    names = set(pq.read_schema(paths[0]).names)
    columns = [c for c in ("width", "height", "captions", "counts", "image", "label") if c in names]
    classes: Counter[str] = Counter()
    caps: Counter[int] = Counter()
    rows = embedded = 0
    sizes: list[tuple[int, int]] = []
    for row in iter_rows(directory, columns=columns):
        rows += 1
        if "captions" in row:
            caps[len(row["captions"] or [])] += 1
        for c in row.get("counts") or []:
            classes[c["category"]] += c["count"]
        if row.get("label"):
            classes[row["label"]] += 1
        embedded += (row["image"] or {}).get("bytes") is not None
        if row["width"] and row["height"]:
            sizes.append((row["width"], row["height"]))
    rejects_file = directory / REJECTS
    rejects = Counter(json.loads(line)["code"] for line in rejects_file.read_text("utf-8").splitlines()
                      if line.strip()) if rejects_file.is_file() else Counter()
    return {
        "schema_version": meta.get("schema_version"), "tool_version": meta.get("tool_version"),
        "source": meta.get("source"), "seed": meta.get("seed"), "images_mode": meta.get("images_mode"),
        "shards": len(paths), "rows": rows, "embedded_images": embedded,
        "bytes": sum(p.stat().st_size for p in paths),
        "classes": dict(sorted(classes.items())), "captions_per_image": dict(sorted(caps.items())),
        "width_range": [min(w for w, _ in sizes), max(w for w, _ in sizes)] if sizes else None,
        "height_range": [min(h for _, h in sizes), max(h for _, h in sizes)] if sizes else None,
        "rejects": dict(sorted(rejects.items())),
    }


@click.command("verify")
@click.argument("directory", type=DIR)
def verify_cmd(directory: Path) -> None:
    """Recompute every shard's sha256, size and row count against _manifest.json; exit 1 on any mismatch.

    DIRECTORY is a shard folder or a dataset root (an mmsar build output): then every shard folder below it
    is verified, and the root's _manifest.json row counts against them.

    \b
    Example:
      d2c verify shards/             d2c verify mmsar-out/
    """
    from d2c.shards import verify_tree

    problems, checked = verify_tree(directory)
    for p in problems:
        click.echo(f"d2c verify: {p}", err=True)
    if problems:
        sys.exit(1)
    shards = sum(len(m["shards"]) for _, m in checked)
    rows = sum(m["rows"] for _, m in checked)
    where = f" in {len(checked)} folders" if len(checked) > 1 or checked[0][0] != directory else ""
    click.echo(f"ok: {shards} shard(s){where}, {rows} rows, checksums match")


@click.command("export")
@click.argument("directory", type=DIR)
@click.option("--to", "to", required=True,
              type=click.Choice(["coco", "dota", "voc", "yolo", "yolo-obb", "openclip-csv", "webdataset"]),
              help="coco/dota/voc/yolo/yolo-obb: detection annotations (+ images); openclip-csv: tab-separated "
                   "filepath/title CSV, one line per caption; webdataset: tars of one sample per image "
                   "({key}.png|jpg, {key}.txt, {key}.json) + sizes.json, for open_clip_train.")
@click.option("--samples-per-tar", type=click.IntRange(1), default=1000, show_default=True,
              help="webdataset: samples (images) per tar.")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
def export_cmd(directory: Path, to: str, samples_per_tar: int, out: Path) -> None:
    """Write the shards in DIRECTORY out as detection annotations or open_clip training files in OUT.

    \b
    Example:
      d2c export shards/train --to webdataset wds/train
      open_clip_train --train-data 'wds/train/SOURCE-train-{000000..000009}.tar'   (sizes.json gives the count)
    """
    from d2c.export import export

    try:
        counts = export(directory, to, out, samples_per_tar=samples_per_tar)
    except D2CError as exc:
        _fail("export", exc, exc.exit_code)
    except (OSError, ValueError) as exc:
        _fail("export", exc, 1)
    click.echo(f"exported to {out} ({to}): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
