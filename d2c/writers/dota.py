"""DOTA labelTxt writer: ``labelTxt/{image stem}.txt`` with ``imagesource:`` / ``gsd:`` header lines and one
``x1 y1 x2 y2 x3 y3 x4 y4 class difficult`` line per instance.

DOTA holds quadrilaterals only: 4-point polygons are written as they are (canonical order), any other
polygon as the corners of its oriented box. Class names are the canonical categories with spaces turned
into hyphens (the format splits on whitespace).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from d2c.geometry import obb_to_polygon
from d2c.model import Instance, Scene
from d2c.writers import fmt_num, write_per_scene


def quad_of(inst: Instance) -> np.ndarray:
    """The 4 corners DOTA stores for ``inst``."""
    if inst.polygon.shape[0] == 4:
        return inst.polygon
    return obb_to_polygon(inst.obb)


def dota_lines(scene: Scene) -> list[str]:
    """The text lines of one scene's label file."""
    lines: list[str] = []
    if scene.image_source:
        lines.append(f"imagesource:{scene.image_source}")
    if scene.gsd is not None:
        lines.append(f"gsd:{fmt_num(scene.gsd)}")
    for inst in scene.instances:
        coords = " ".join(fmt_num(v) for v in quad_of(inst).reshape(-1))
        name = "-".join(inst.category.split())
        lines.append(f"{coords} {name} {int(inst.difficult)}")
    return lines


def write_dota(scenes: Iterable[Scene], out_dir: Path) -> Path:
    """Write one label file per scene into ``out_dir/labelTxt/``; returns that folder.

    Two scenes whose images share a stem would overwrite each other's labels: that is refused.
    """
    return write_per_scene(scenes, Path(out_dir) / "labelTxt", ".txt",
                           lambda scene: ("\n".join(dota_lines(scene)) + "\n").encode("utf-8"))
