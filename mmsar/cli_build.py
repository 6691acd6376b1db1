"""``mmsar build --config mmsar.toml``: a thin wrapper over :func:`mmsar.build.build`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from d2c.errors import D2CError
from mmsar.options import MIN_UNIT_SCENES, TASKS_PER_WORKER


def _fail(message: str, code: int) -> None:
    click.echo(f"mmsar build: error: {message}", err=True)
    sys.exit(code)


@click.command("build")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="The build config (mmsar.toml; see docs/mmsar.md).")
@click.option("--out", default=None, help="Output folder or fsspec URL such as memory://b/mmsar (overrides `out`).")
@click.option("--distributor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where the tasks run: a local process pool, or Dask (a LocalCluster unless --scheduler).")
@click.option("--scheduler", default=None, help="Dask scheduler address (with --distributor dask).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (local pool, or the Dask LocalCluster's); default min(4, CPUs).")
@click.option("--unit-scenes", type=click.IntRange(min=1), default=None,
              help=f"Scenes (plan units) per staging task; default the config's unit_scenes, else auto: {TASKS_PER_WORKER} tasks per worker, at least {MIN_UNIT_SCENES} scenes each.")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Extra attempts of a task whose worker died or that failed unexpectedly.")
def build_cmd(config_path: Path, out: str | None, distributor: str, scheduler: str | None,
              workers: int | None, unit_scenes: int | None, retries: int) -> None:
    """Assemble MMSAR from the sources in a config: convert, dedupe, split, SARCount, chips, card.

    Each source's input is cut into tasks of --unit-scenes scenes, spread over the workers; the output
    is byte-identical whatever the distributor, workers and task size (only _tasks.json, the per-task
    timings, differs). Writes the split folders, SARCount, chips, README.md (the dataset card),
    gallery.png and plots/; staging goes beside OUT (OUT.work/, reused by the next build). OUT and the
    config's inputs may be fsspec URLs (memory://, s3://, gs://, file://; see docs/mmsar.md).
    Exit codes: 0 built (rejects are reported, not fatal), 1 failure, 2 bad config or options.

    \b
    Example:
      mmsar build --config examples/mmsar.toml --out mmsar-out --workers 4
      mmsar build --config examples/mmsar.toml --distributor dask --workers 2 --unit-scenes 1000
      mmsar build --config examples/mmsar.toml --distributor dask --scheduler tcp://10.0.0.5:8786
    """
    import logging

    from mmsar.build import build
    from mmsar.config import load_config
    from mmsar.options import BuildOptions

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(config_path, out=out)
        result = build(cfg, BuildOptions(distributor=distributor, scheduler=scheduler, workers=workers,
                                         unit_scenes=unit_scenes, retries=retries, progress=None))
    except D2CError as exc:
        _fail(str(exc), exc.exit_code)
    except (OSError, ValueError) as exc:
        _fail(str(exc), 1)
    total = result.stats["total"]
    folders = result.manifest["folders"]
    click.echo(
        f"built {result.url or result.out}: train {folders['train']['rows']}, val {folders['val']['rows']}, "
        f"test {folders['test']['rows']} scenes; SARCount {folders['sarcount']['rows']} items; "
        f"{sum(folders[f'chips/{s}']['rows'] for s in ('train', 'val', 'test'))} chips; "
        f"{total['exact_duplicates']['scenes']} duplicates dropped, {total['rejects']} rejects; "
        f"sources converted {', '.join(result.converted) or '-'}, reused {', '.join(result.reused) or '-'}"
    )
