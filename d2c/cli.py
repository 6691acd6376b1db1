"""The ``d2c`` command line. Thin: every command calls the library API.

Each command lives in its own module and is registered here with one line.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sarclip-toolkit")
def main() -> None:
    """d2c: turn detection annotations of SAR imagery (COCO, DOTA, VOC, YOLO / YOLO-OBB) into captioned
    Parquet shards, and inspect, verify or export them.

    \b
    Example:
      d2c convert data/SSDD --out shards/ --images-mode embed
      d2c inspect shards/ --gallery gallery.png
    """


# Commands register below, one line each (keep this list sorted).
from d2c.cli_convert import convert_cmd  # noqa: E402
from d2c.cli_formats import formats_cmd  # noqa: E402
from d2c.cli_shards import export_cmd, inspect_cmd, verify_cmd  # noqa: E402
from d2c.cli_templates import captions_group, templates_group  # noqa: E402

main.add_command(captions_group)
main.add_command(convert_cmd)
main.add_command(export_cmd)
main.add_command(formats_cmd)
main.add_command(inspect_cmd)
main.add_command(templates_group)
main.add_command(verify_cmd)


if __name__ == "__main__":  # python -m d2c.cli (torchrun uses this form)
    main()
