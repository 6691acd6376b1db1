"""The ``sarclip-train`` command line: run, eval, export, predict, embed."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sarclip-toolkit")
def main() -> None:
    """sarclip-train: train SARCLIP with AnyReader on MMSAR shards and evaluate it.

    \b
    Example:
      sarclip-train run --config examples/tiny_train.toml
      sarclip-train eval --checkpoint runs/sarclip/checkpoints/final.pt --data mmsar-out --out eval-out
    """


# Commands register below, one line each.
from sarclip_train.cli_eval import embed_cmd, eval_cmd, predict_cmd  # noqa: E402

main.add_command(eval_cmd)
main.add_command(predict_cmd)
main.add_command(embed_cmd)
from sarclip_train.cli_train import export_cmd, run_cmd  # noqa: E402

main.add_command(run_cmd)
main.add_command(export_cmd)


if __name__ == "__main__":  # python -m sarclip_train.cli (torchrun uses this form)
    main()
