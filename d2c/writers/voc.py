"""Pascal VOC writer: ``Annotations/{image stem}.xml`` with ``<filename>``, ``<size>`` and per object
``<name>``, ``<difficult>``, the axis-aligned ``<bndbox>`` and roLabelImg's ``<robndbox>``.

``robndbox`` is ``cx, cy, w, h, angle`` with the angle in radians from +x towards +y: the Foundation
oriented box with its angle converted from degrees (the inverse of
:func:`d2c.geometry.rotated_rect_from_radians`). VOC keeps oriented boxes, not general polygons.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET  # writing only: parsing untrusted XML goes through defusedxml
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from d2c.model import Instance, Scene
from d2c.writers import fmt_num, image_name, write_per_scene


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = text
    return el


def _object(parent: ET.Element, inst: Instance) -> None:
    obj = _sub(parent, "object")
    _sub(obj, "type", "robndbox")
    _sub(obj, "name", inst.category)
    _sub(obj, "pose", "Unspecified")
    _sub(obj, "truncated", "0")
    _sub(obj, "difficult", str(int(inst.difficult)))
    box = _sub(obj, "bndbox")
    for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), inst.hbb, strict=True):
        _sub(box, tag, fmt_num(v))
    rob = _sub(obj, "robndbox")
    cx, cy, w, h, angle = inst.obb
    for tag, v in (("cx", cx), ("cy", cy), ("w", w), ("h", h), ("angle", math.radians(angle))):
        _sub(rob, tag, fmt_num(v))


def voc_xml(scene: Scene) -> bytes:
    """The XML document of one scene."""
    root = ET.Element("annotation")
    _sub(root, "folder", PurePosixPath(scene.image_path.replace("\\", "/")).parent.name or "images")
    _sub(root, "filename", image_name(scene))
    src = _sub(root, "source")
    _sub(src, "database", scene.source)
    if scene.image_source:
        _sub(src, "image", scene.image_source)
    if scene.gsd is not None:
        _sub(root, "gsd", fmt_num(scene.gsd))
    if scene.width is not None and scene.height is not None:
        size = _sub(root, "size")
        _sub(size, "width", str(int(scene.width)))
        _sub(size, "height", str(int(scene.height)))
        _sub(size, "depth", "1")
    _sub(root, "segmented", "0")
    for inst in scene.instances:
        _object(root, inst)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_voc(scenes: Iterable[Scene], out_dir: Path) -> Path:
    """Write one XML per scene into ``out_dir/Annotations/``; returns that folder."""
    return write_per_scene(scenes, Path(out_dir) / "Annotations", ".xml", voc_xml)
