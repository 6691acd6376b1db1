"""``sarclip-train eval``, ``predict`` and ``embed``: evaluation and inference for users.

Models are SARCLIP checkpoints (``--checkpoint``) or any open_clip model (``--openclip ARCH[:WEIGHTS]``,
WEIGHTS a local file or a tag already in open_clip's cache), so baselines are evaluated the same way.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import click

from d2c.errors import D2CError

log = logging.getLogger(__name__)


def _fail(exc: Exception) -> None:
    """A user-facing failure: one line, no traceback, exit 2 for usage errors and 1 otherwise."""
    code = getattr(exc, "exit_code", 1)
    click.echo(f"error: {exc}", err=True)
    raise SystemExit(code)


_USER_ERRORS = (D2CError, FileNotFoundError, ValueError, OSError, KeyError)


def _model_specs(checkpoints: Sequence[str], openclips: Sequence[str]) -> list[str]:
    specs = [str(c) for c in checkpoints] + [f"openclip:{o}" for o in openclips]
    if not specs:
        raise click.UsageError("give at least one --checkpoint or --openclip model")
    return specs


def _load(spec: str, device: str | None):
    from sarclip_train.eval import as_eval_model

    return as_eval_model(spec, device)


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


model_options = [
    click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(exists=True, dir_okay=False),
                 help="SARCLIP checkpoint (repeatable)."),
    click.option("--openclip", "openclips", multiple=True, metavar="ARCH[:WEIGHTS]",
                 help="An open_clip model, weights from a local file or a cached tag (repeatable)."),
    click.option("--device", default=None, help="torch device (default: cuda when available, else cpu)."),
]


def with_models(f):
    for opt in reversed(model_options):
        f = opt(f)
    return f


@click.command("eval")
@with_models
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="An `mmsar build` output folder.")
@click.option("--imagefolder", "imagefolders", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="ImageFolder set (class folders, optionally under train/ val/ test/); repeatable.")
@click.option("--tasks", default="retrieval,zeroshot,fewshot,linear,counting", show_default=True,
              help="Comma-separated tasks: retrieval and counting need --data; zeroshot, fewshot and linear run "
                   "on the chips of --data and on every --imagefolder.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("eval-out"),
              show_default=True, help="Folder for results.json, report.md and plots (one sub-folder per model "
                                      "when several are given).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the few-shot draws and probes.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True, help="Images per batch.")
@click.option("--prompts", type=click.Path(exists=True, dir_okay=False), help="Zero-shot templates TOML.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Feature cache (default: OUT/.feature-cache).")
@click.option("--fewshot-k", default="1,2,4,8,16", show_default=True, help="Shots per class, comma-separated.")
@click.option("--fewshot-seeds", type=click.IntRange(1), default=3, show_default=True,
              help="Few-shot repeats (seeds SEED, SEED+1, ...).")
@click.option("--name", "names", multiple=True,
              help="Model name in reports, one per model in the order --checkpoint ... then --openclip ... "
                   "(default: the run folder of RUN/checkpoints/final.pt, else the file or folder name).")
def eval_cmd(checkpoints, openclips, device, data, imagefolders, tasks, out, seed, batch_size, prompts, cache_dir,
             fewshot_k, fewshot_seeds, names):
    """Evaluate one or more models and write results.json, report.md and plots to OUT (plus one flat JSON
    per data set, model and task under OUT/clip_benchmark/, as CLIP_benchmark writes them).

    \b
    Example:
      sarclip-train eval --checkpoint runs/sarclip/checkpoints/final.pt --openclip ViT-B-32 --data mmsar-out --out eval-out
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from sarclip_train.eval import evaluate, parse_tasks
    from sarclip_train.eval.report import compare, write_comparison

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    specs = _model_specs(checkpoints, openclips)
    if data is None and not imagefolders:
        raise click.UsageError("give --data and/or --imagefolder")
    if names and len(names) != len(specs):
        raise click.BadParameter(f"{len(names)} names for {len(specs)} models; give one per model",
                                 param_hint="--name")
    if data is not None:
        _check_build_folder(data)
    try:
        task_list = parse_tasks(tasks)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tasks") from None
    try:
        ks = sorted({int(k) for k in fewshot_k.split(",") if k.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise click.BadParameter(f"expected positive integers like 1,2,4, got {fewshot_k!r}", param_hint="--fewshot-k")
    cache = cache_dir or out / ".feature-cache"
    results, taken, seen = [], set(), {}
    try:
        for i, spec in enumerate(specs):
            model = _load(spec, device)
            if names:
                model.name = model.info["name"] = names[i]
            if model.name in seen:
                raise click.UsageError(f"{seen[model.name]} and {spec} are both named {model.name!r} in the "
                                       "reports; name each model with --name (one per model, in order)")
            seen[model.name] = spec
            target = out if len(specs) == 1 else out / _slug(model.name, taken)
            results.append(evaluate(model, data, task_list, target, imagefolders=imagefolders, seed=seed,
                                    cache_dir=cache, batch_size=batch_size, prompts=prompts, fewshot_ks=ks,
                                    fewshot_seeds=[seed + i for i in range(fewshot_seeds)]))
            click.echo(f"{model.name}: {target / 'results.json'}")
            if not results[-1]["results"]:
                reasons = "; ".join(f"{k}: {v}" for k, v in sorted(results[-1]["skipped"].items()))
                raise click.ClickException(f"no task could run for {model.name} ({reasons})")
    except _USER_ERRORS as exc:
        _fail(exc)
    if len(results) > 1:
        write_comparison(results, out)
    click.echo(compare(results), nl=False)


def _check_build_folder(data: Path) -> None:
    """``--data`` is an ``mmsar build`` folder; a shard folder given instead (one split) is a usage error
    naming the folder to give, not an evaluation with every task skipped."""
    from sarclip_train.eval.datasets import shard_files

    if shard_files(data):
        parent = data.resolve().parent
        hint = f" (here probably {parent})" if any((parent / d).is_dir() for d in ("test", "chips", "sarcount")) \
            else ""
        raise click.UsageError(f"--data {data}: this is a shard folder (one split); --data takes an `mmsar build` "
                               f"output folder, the one holding test/, chips/ and sarcount/{hint}")


@click.command("predict")
@with_models
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", required=True, help="Comma-separated class names, e.g. ship,aircraft,car.")
@click.option("--prompts", type=click.Path(exists=True, dir_okay=False), help="Zero-shot templates TOML.")
@click.option("--top", type=click.IntRange(1), default=3, show_default=True, help="Labels printed per image.")
def predict_cmd(checkpoints, openclips, device, images, labels, prompts, top):
    """Zero-shot labels with scores for PNG/JPEG/GeoTIFF images of any size.

    Prints one line per image and label: path, label, probability (softmax of 100 x cosine) and cosine.

    \b
    Example:
      sarclip-train predict --checkpoint runs/sarclip/checkpoints/final.pt --labels ship,aircraft,car scene.tif
    """
    import numpy as np

    from sarclip_train.eval.datasets import read_image_file
    from sarclip_train.eval.zeroshot import class_weights, load_templates

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    specs = _model_specs(checkpoints, openclips)
    if len(specs) != 1:
        raise click.UsageError("predict takes exactly one model")
    names = [s.strip() for s in labels.split(",") if s.strip()]
    if not names:
        raise click.BadParameter("no class names", param_hint="--labels")
    try:
        model = _load(specs[0], device)
        weights = class_weights(model.encode_texts, names, load_templates(prompts))
    except _USER_ERRORS as exc:
        _fail(exc)
    failed = 0
    for path in images:
        try:
            emb = model.encode_images([read_image_file(Path(path))])[0]
        except Exception as exc:  # noqa: BLE001 - report the file and go on with the others
            click.echo(f"error: {path}: {exc}", err=True)
            failed += 1
            continue
        cos = weights @ emb
        prob = np.exp(100 * (cos - cos.max()))
        prob /= prob.sum()
        for i in np.argsort(-cos, kind="stable")[:top]:
            click.echo(f"{path}\t{names[i]}\t{prob[i]:.4f}\t{cos[i]:.4f}")
    if failed:
        raise SystemExit(1)


def _embed_folders(data: Path) -> list[Path]:
    """``data`` itself when it holds shards, else every shard folder below it (sorted)."""
    from sarclip_train.eval.datasets import shard_files

    if shard_files(data):
        return [data]
    return sorted({p.parent for p in data.rglob("*.parquet") if not p.name.startswith(".")})


@click.command("embed")
@with_models
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A shard folder, or a build folder (every shard folder below it).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Parquet file to write (e.g. emb.parquet): columns set, key, embedding; the model in its "
                   "metadata.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True, help="Images per batch.")
def embed_cmd(checkpoints, openclips, device, data, out, batch_size):
    """Write image embeddings keyed like the shards: columns set, key, embedding.

    \b
    Example:
      sarclip-train embed --checkpoint runs/sarclip/checkpoints/final.pt --data mmsar-out --out emb.parquet
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from sarclip_train.eval.embed import write_embeddings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    specs = _model_specs(checkpoints, openclips)
    if len(specs) != 1:
        raise click.UsageError("embed takes exactly one model")
    try:
        folders = _embed_folders(data)
        if not folders:
            raise FileNotFoundError(f"{data}: no .parquet shards")
        n = write_embeddings(_load(specs[0], device), data, folders, out, batch_size)
    except _USER_ERRORS as exc:
        _fail(exc)
    click.echo(f"{out}: {n} embeddings")
