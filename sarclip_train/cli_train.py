"""``sarclip-train run`` and ``sarclip-train export`` (registered on the group in sarclip_train/cli.py)."""

from __future__ import annotations

import logging
import sys

import click

from d2c.errors import D2CError


def _fail(e: Exception) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(getattr(e, "exit_code", 1))


def _keys_epilog() -> str:
    """The config keys with their defaults and help, generated from sarclip_train/config.py."""
    from sarclip_train.config import config_keys

    lines = ["\b", "Config keys (TOML [section] key = value, or --set section.key=value; default, then what it does):"]
    lines += [f"  {key:<26} {default:<12} {text}" for key, default, text in config_keys()]
    return "\n".join(lines)


@click.command("run", epilog=_keys_epilog())
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="TOML config file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set run.batch_size=64 (repeatable).")
@click.option("--resume", default=None, help="'latest' or a checkpoint path (same as --set run.resume=...).")
def run_cmd(config_path: str | None, overrides: tuple[str, ...], resume: str | None) -> None:
    """Train SARCLIP on MMSAR shards (torchrun for several processes).

    \b
    Example:
      sarclip-train run --config examples/tiny_train.toml --set run.batch_size=64 --set run.max_steps=500
      torchrun --nproc-per-node 2 -m sarclip_train.cli run --config examples/tiny_train.toml
    """
    from sarclip_train.config import load_config
    from sarclip_train.train import run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(config_path, list(overrides))
        if resume:
            cfg.run.resume = resume
        result = run(cfg)
    except (D2CError, FileNotFoundError) as e:
        _fail(e)
        return
    click.echo(f"trained {result.steps} steps; checkpoint {result.checkpoint}; log {result.log}"
               + (f"; {result.decode_errors} rows failed to decode" if result.decode_errors else ""))
    if cfg.eval.data and _is_main_process():
        report = _evaluate_after_training(cfg, result.checkpoint)
        click.echo(f"evaluation report: {report}")


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _evaluate_after_training(cfg, checkpoint) -> str:
    """The evaluation step that closes a run: the trained checkpoint on the [eval] data."""
    from pathlib import Path

    from sarclip_train.eval import evaluate

    out = Path(cfg.eval.out) if cfg.eval.out else Path(cfg.run.out) / "eval"
    try:
        evaluate(str(checkpoint), cfg.eval.data, cfg.eval.tasks, out, imagefolders=cfg.eval.imagefolders,
                 seed=cfg.run.seed)
    except (D2CError, FileNotFoundError, ValueError) as e:
        _fail(e)
    return str(out / "report.md")


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(),
              help="Output folder (open_clip format) or file (state-dict format).")
@click.option("--format", "fmt", type=click.Choice(["open_clip", "state-dict"]), default="open_clip",
              show_default=True,
              help="open_clip: a folder open_clip loads as local-dir:OUT; state-dict: one weights file + OUT.json.")
def export_cmd(checkpoint: str, out: str, fmt: str) -> None:
    """Write the backbone of a SARCLIP checkpoint for plain open_clip.

    \b
    Example:
      sarclip-train export runs/sarclip/checkpoints/final.pt --out sarclip-openclip
      then in Python: open_clip.create_model_and_transforms("local-dir:sarclip-openclip")
    """
    from sarclip_train.export import export_open_clip, export_state_dict

    try:
        path, note = (export_open_clip if fmt == "open_clip" else export_state_dict)(checkpoint, out)
    except D2CError as e:
        _fail(e)
        return
    if fmt == "open_clip":
        click.echo(f"wrote {path} (load with open_clip.create_model_and_transforms('local-dir:{path}'))")
    else:
        click.echo(f"wrote {path} and {path}.json (open_clip.create_model(arch, pretrained='{path}') once the "
                   "model_cfg in the .json is registered)")
    if note:
        click.echo(f"note: {note}")
