"""The ``mmsar`` command line: ``mmsar build`` and ``mmsar synth``. Thin wrappers over the library."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sarclip-toolkit")
def main() -> None:
    """mmsar: build the MMSAR dataset from detection sources, or synthesise SAR scenes.

    \b
    Example:
      mmsar synth --out synth/ --images 20
      mmsar build --config examples/mmsar.toml --out mmsar-out
    """


# Commands register below, one line each.
from mmsar.cli_build import build_cmd  # noqa: E402

main.add_command(build_cmd)
from mmsar.cli_synth import synth  # noqa: E402

main.add_command(synth)


if __name__ == "__main__":  # python -m mmsar.cli (torchrun uses this form)
    main()
