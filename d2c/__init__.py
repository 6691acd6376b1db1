"""d2c: detection annotations to captioned vision-language shards (the D2C algorithm of SARCLIP).

Public API (the CLIs are thin wrappers over these):

- :func:`read` yields :class:`Scene` and :class:`Reject` objects from COCO, DOTA or VOC annotations;
- :func:`convert` runs read -> caption -> Parquet shards (see ``d2c.convert``), with the settings of a
  :class:`ConvertOptions` (see ``d2c.options``).
"""

from __future__ import annotations

from typing import Any

from d2c.model import Instance, Provenance, Reject, Scene, scene_key, scene_seed

__version__ = "0.1.0"
__all__ = ["Instance", "Provenance", "Reject", "Scene", "scene_key", "scene_seed", "read", "convert",
           "ConvertOptions", "__version__"]


def read(input: Any, format: str = "auto", **options: Any):
    """Iterate the Scenes and Rejects of a dataset (lazy import keeps ``import d2c`` light)."""
    from d2c.readers import read as _read

    return _read(input, format=format, **options)


# Imported eagerly on purpose: the submodule d2c.convert would otherwise replace this name with the
# module the first time anything imports it, and `d2c.convert(...)` would stop being callable.
from d2c.convert import convert  # noqa: E402
from d2c.options import ConvertOptions  # noqa: E402
