"""``d2c formats``: which annotation formats this installation reads, and where each reader comes from.

Built-in readers live in ``d2c.readers``; plug-ins come from the ``d2c.readers`` entry-point group of an
installed distribution, so the listing names that distribution and its version (the first thing to check
when a plug-in misbehaves).
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points

import click


def reader_sources() -> list[dict[str, str]]:
    """One entry per registered format: ``{"format", "kind": "built-in"|"plug-in", "source", "module"}``."""
    from d2c.readers import ENTRY_POINT_GROUP, REGISTRY, load_plugins

    load_plugins()
    eps = []  # (entry-point name, module of its target, where it comes from)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        origin = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
        eps.append((ep.name, ep.value.split(":")[0].strip(), f"{origin} (entry point {ep.name} = {ep.value})"))
    out = []
    for name in sorted(REGISTRY):
        module = type(REGISTRY[name]).__module__
        if module == "d2c" or module.startswith("d2c."):
            kind, source = "built-in", module
        else:
            kind = "plug-in"
            hits = [o for n, _, o in eps if n == name] or [o for _, m, o in eps if module.startswith(m)]
            source = hits[0] if hits else f"module {module}"
        out.append({"format": name, "kind": kind, "source": source, "module": module})
    return out


@click.command("formats")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def formats_cmd(as_json: bool) -> None:
    """List the annotation formats d2c can read: built-in readers and installed plug-ins.

    \b
    Example:
      d2c formats --json
    """
    try:
        rows = reader_sources()
    except Exception as exc:  # an import problem in a reader: one line, no traceback
        click.echo(f"d2c formats: error: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["format"]) for r in rows), default=6)
    for r in rows:
        click.echo(f"{r['format']:<{width}}  {r['kind']:<8}  {r['source']}")
