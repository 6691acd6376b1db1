"""Readers: annotation files -> :class:`d2c.model.Scene` and :class:`d2c.model.Reject`, nothing else.

Built-in formats are ``coco``, ``dota``, ``voc`` and ``yolo`` / ``yolo_obb``; plug-ins add more through the ``d2c.readers``
entry-point group (the entry point loads a Reader object, or a class that builds one).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import fields
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from d2c.errors import UsageError
from d2c.limits import check_limits
from d2c.model import Reject, Scene
from d2c.readers.base import Reader, ReadOptions
from d2c.readers.plan import ReadPlan

log = logging.getLogger(__name__)

__all__ = ["REGISTRY", "ReadOptions", "ReadPlan", "Reader", "detect_format", "load_plugins", "plan", "read"]

BUILTIN_MODULES = ("coco", "dota", "voc", "yolo")  # each defines READER or READERS


def _builtin_readers() -> dict[str, Reader]:
    out: dict[str, Reader] = {}
    for mod_name in BUILTIN_MODULES:
        mod = import_module(f"d2c.readers.{mod_name}")
        for reader in getattr(mod, "READERS", None) or (mod.READER,):
            out[reader.name] = reader
    return out


REGISTRY: dict[str, Reader] = _builtin_readers()
_PLUGINS_LOADED = False
ENTRY_POINT_GROUP = "d2c.readers"


def load_plugins() -> None:
    """Register readers from the ``d2c.readers`` entry-point group (once); a broken plug-in is logged."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            reader = obj() if isinstance(obj, type) else obj
        except Exception as exc:  # a plug-in's bug must not stop the built-in readers
            log.warning("reader plug-in %s could not be loaded: %s", ep.name, exc)
            continue
        if not isinstance(reader, Reader):
            log.warning("reader plug-in %s has no name/detect/read: ignored", ep.name)
            continue
        REGISTRY.setdefault(reader.name or ep.name, reader)


def detect_format(path: Path | str) -> str:
    """The one format whose reader recognises ``path``; UsageError when none or several do."""
    load_plugins()
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    found = [name for name, reader in REGISTRY.items() if reader.detect(path)]
    if not found:
        raise UsageError(f"{path}: cannot tell the annotation format; give --format (one of {sorted(REGISTRY)})")
    if len(found) > 1:
        raise UsageError(
            f"{path}: holds several annotation formats ({', '.join(found)}); choose one with --format "
            f"or point at one file or folder"
        )
    log.info("%s: detected format %s", path, found[0])
    return found[0]


def read(input: Path | str, format: str = "auto", **options: Any) -> Iterator[Scene | Reject]:
    """Iterate the Scenes and Rejects of ``input``. ``options`` are :class:`ReadOptions` fields.

    Usage errors (unknown format or option, missing input, ambiguous auto-detection) raise UsageError at
    the call; bad data never raises: it comes out as Rejects.
    """
    reader, path, opts = _resolve(input, format, options)
    return reader.read(path, opts)


def plan(input: Path | str, format: str = "auto", **options: Any) -> ReadPlan | None:
    """A :class:`~d2c.readers.plan.ReadPlan` of ``input`` (what :func:`read` gives, split into units that
    workers can read on their own), or None when the format's reader cannot split its input."""
    reader, path, opts = _resolve(input, format, options)
    make = getattr(reader, "plan", None)
    return make(path, opts) if make is not None else None


def _resolve(input: Path | str, format: str, options: dict[str, Any]) -> tuple[Reader, Path, ReadOptions]:
    """The reader, path and options of a :func:`read` call, or UsageError."""
    load_plugins()
    known = {f.name for f in fields(ReadOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"unknown read option(s) {unknown}; expected some of {sorted(known)}")
    opts = ReadOptions(**options)
    if isinstance(opts.class_map, (str, Path)):
        from d2c.classes import ClassMap

        opts.class_map = ClassMap.load(opts.class_map)
    path = Path(input)
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    name = detect_format(path) if format == "auto" else format
    if name not in REGISTRY:
        raise UsageError(f"unknown format {name!r}; expected 'auto' or one of {sorted(REGISTRY)}")
    try:
        check_limits(opts.max_vertices, opts.max_parts)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if opts.unknown_classes not in ("keep", "reject"):
        raise UsageError(f"unknown_classes must be 'keep' or 'reject', got {opts.unknown_classes!r}")
    return REGISTRY[name], path, opts
