"""YOLO / YOLO-OBB writer: ``labels/{sub}/{stem}.txt`` with normalised coordinates, plus ``classes.txt`` and a
``data.yaml`` whose ``names:`` list the YOLO reader (and Ultralytics) read back.

``obb=False`` writes ``class cx cy w h`` from each instance's axis-aligned box; ``obb=True`` writes
``class x1 y1 ... x4 y4``: the polygon when it has 4 points, else the corners of its oriented box. Class
indices follow ``classes`` when given, else the sorted canonical categories of the scenes. YOLO has no
``difficult`` flag: it is not written. ``{sub}`` is the image's path below an ``images/`` folder (so splits
such as ``images/train`` keep their layout), else nothing. Images are the caller's business unless
``copy_images`` is set.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from d2c.images import safe_join
from d2c.model import Instance, Scene
from d2c.writers import atomic_write_bytes, fmt_num
from d2c.writers.dota import quad_of


def image_rel(scene: Scene) -> PurePosixPath:
    """The image's path inside the output ``images/`` folder."""
    p = PurePosixPath(scene.image_path.replace("\\", "/"))
    parts = p.parts
    if "images" in parts[:-1]:
        cut = len(parts) - 1 - parts[::-1].index("images")
        return PurePosixPath(*parts[cut + 1 :])
    return PurePosixPath(p.name)


def yolo_line(inst: Instance, index: int, width: int, height: int, obb: bool) -> str:
    """One label line, coordinates divided by the image size."""
    if obb:
        quad = quad_of(inst).copy()
        quad[:, 0] /= width
        quad[:, 1] /= height
        return " ".join([str(index), *(fmt_num(v) for v in quad.reshape(-1))])
    x0, y0, x1, y1 = inst.hbb
    vals = ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height)
    return " ".join([str(index), *(fmt_num(v) for v in vals)])


def write_yolo(
    scenes: Iterable[Scene],
    out_dir: Path,
    obb: bool = False,
    *,
    classes: list[str] | None = None,
    copy_images: bool = False,
) -> Path:
    """Write one label file per scene under ``out_dir/labels``; returns ``out_dir``.

    Raises ValueError (naming the scene) for a scene without a size, a category missing from ``classes``,
    or two scenes that would write the same label file.
    """
    out_dir = Path(out_dir)
    scenes = list(scenes)
    names = (
        list(classes) if classes is not None else sorted({i.category for s in scenes for i in s.instances})
    )
    index = {name: i for i, name in enumerate(names)}
    seen: dict[PurePosixPath, str] = {}
    for scene in scenes:
        if scene.width is None or scene.height is None:
            raise ValueError(
                f"{scene.key}: YOLO coordinates are normalised, and this scene has no image size"
            )
        rel = image_rel(scene)
        label_rel = rel.with_suffix(".txt")
        if label_rel in seen:
            raise ValueError(
                f"{scene.key}: label file {label_rel} already written for scene {seen[label_rel]}"
            )
        seen[label_rel] = scene.key
        lines = []
        for inst in scene.instances:
            if inst.category not in index:
                raise ValueError(f"{scene.key}: category {inst.category!r} is not in classes {names}")
            lines.append(yolo_line(inst, index[inst.category], scene.width, scene.height, obb))
        text = "".join(line + "\n" for line in lines)
        atomic_write_bytes(out_dir / "labels" / label_rel, text.encode("utf-8"))
        if copy_images:
            _copy_image(scene, out_dir / "images" / rel)
    atomic_write_bytes(out_dir / "classes.txt", "".join(n + "\n" for n in names).encode("utf-8"))
    yaml = "path: .\ntrain: images\nnames:\n" + "".join(
        f"  {i}: {_yaml_scalar(n)}\n" for i, n in enumerate(names)
    )
    atomic_write_bytes(out_dir / "data.yaml", yaml.encode("utf-8"))
    return out_dir


def _yaml_scalar(name: str) -> str:
    """Quote a name when plain YAML would misread it."""
    if (
        name
        and all(c.isalnum() or c in "-_. " for c in name)
        and not name[0].isdigit()
        and name.strip() == name
    ):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _copy_image(scene: Scene, dest: Path) -> None:
    src = safe_join(Path(scene.root), scene.image_path)
    if not src.is_file():
        raise ValueError(f"{scene.key}: image {src} not found, cannot copy it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)
