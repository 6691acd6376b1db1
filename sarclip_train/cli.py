"""The ``sarclip-train`` command line: run, eval, export, predict, embed."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sarclip-toolkit")
def main() -> None:
    """sarclip-train: train SARCLIP with AnyReader on MMSAR shards and evaluate it."""


# Commands register below, one line each.
