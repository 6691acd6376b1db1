"""The ``d2c`` command line. Thin: every command calls the library API.

Each command lives in its own module and is registered here with one line.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sarclip-toolkit")
def main() -> None:
    """d2c: turn detection annotations of SAR imagery (COCO, DOTA, VOC) into captioned Parquet shards."""


# Commands register below, one line each (keep this list sorted).
