"""Detection-format writers, the inverse of :mod:`d2c.readers`: Scenes out as COCO JSON, DOTA labelTxt or
Pascal VOC XML. They write annotations only (image files are the caller's business) and every file goes
to a temporary name first and is renamed when complete, so nothing half-written ever has a final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from d2c.model import Scene

__all__ = ["atomic_write_bytes", "fmt_num", "image_name", "write_coco", "write_dota", "write_per_scene", "write_voc",
           "write_yolo"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fmt_num(value: float) -> str:
    """Exact, shortest text for a coordinate: ``12`` for 12.0, else Python's round-tripping ``repr``.

    Exactness matters: fewer digits can turn a square into a near-square whose oriented-box angle is no
    longer folded, so the box read back would differ from the one written.
    """
    v = float(value)
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def image_name(scene: Scene) -> str:
    """The scene's image file name (posix, no folders): what DOTA and VOC files refer to."""
    return PurePosixPath(scene.image_path.replace("\\", "/")).name


def write_per_scene(
    scenes: Iterable[Scene], folder: Path, suffix: str, render: Callable[[Scene], bytes]
) -> Path:
    """Write ``render(scene)`` to ``folder/{image stem}{suffix}`` for each scene (atomically); returns
    ``folder``.

    Formats with one annotation file per image name it by the image's stem, so two scenes whose images
    share a stem would overwrite each other's file: that is refused (ValueError naming both scenes).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seen: dict[str, str] = {}
    for scene in scenes:
        stem = PurePosixPath(image_name(scene)).stem
        if stem in seen:
            raise ValueError(f"{scene.key}: image stem {stem!r} already written for scene {seen[stem]}")
        seen[stem] = scene.key
        atomic_write_bytes(folder / f"{stem}{suffix}", render(scene))
    return folder


def write_coco(scenes: Iterable[Scene], out_json: Path, images_dir: Path | None = None) -> Path:
    """Write ``scenes`` as one COCO JSON file (see :mod:`d2c.writers.coco`)."""
    from d2c.writers.coco import write_coco as _write

    return _write(scenes, out_json, images_dir)


def write_dota(scenes: Iterable[Scene], out_dir: Path) -> Path:
    """Write ``scenes`` as DOTA ``labelTxt/*.txt`` under ``out_dir`` (see :mod:`d2c.writers.dota`)."""
    from d2c.writers.dota import write_dota as _write

    return _write(scenes, out_dir)


def write_voc(scenes: Iterable[Scene], out_dir: Path) -> Path:
    """Write ``scenes`` as VOC ``Annotations/*.xml`` under ``out_dir`` (see :mod:`d2c.writers.voc`)."""
    from d2c.writers.voc import write_voc as _write

    return _write(scenes, out_dir)


def write_yolo(scenes: Iterable[Scene], out_dir: Path, obb: bool = False, **options) -> Path:
    """Write ``scenes`` as YOLO (or YOLO-OBB) ``labels/*.txt`` plus ``classes.txt`` (see :mod:`d2c.writers.yolo`)."""
    from d2c.writers.yolo import write_yolo as _write

    return _write(scenes, out_dir, obb=obb, **options)
