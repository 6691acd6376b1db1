"""Scenes some of whose objects were rejected ("partial" scenes): left out whole, or kept and flagged.

Why: a reader keeps the valid objects of an image and rejects the others, but a caption of what is left
("two ships", "no annotated targets", "only ships") may then claim a total it cannot know. By default such a
scene becomes one more Reject (code ``partial_scene``) that takes its kept objects with it; with
``keep=True`` it is written, flagged :data:`PARTIAL_FLAG`, and captioned only by templates whose
``scenes`` metadata is ``partial`` or ``any`` (see docs/templates.md).

Readers yield a scene's per-object Rejects (which carry its ``scene_key``) before the Scene itself
(:func:`d2c.readers.base.assemble_scene`), so the stream is settled in one pass with no look-ahead, item
for item: positions in the stream do not change, which ``--resume`` and the workers' spans rely on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from d2c.model import Reject, Scene

PARTIAL_FLAG = "objects_rejected"
PARTIAL_CODE = "partial_scene"


def settle(items: Iterable[Any], keep: bool) -> Iterator[Any]:
    """``items`` (Scenes, Rejects and anything else, passed through) with each partial Scene replaced by
    its Reject, or with ``keep`` flagged :data:`PARTIAL_FLAG`."""
    rejected: Counter[str] = Counter()  # code -> objects rejected, of the scene whose Rejects came last
    key: str | None = None
    for item in items:
        if isinstance(item, Reject):
            if item.scene_key is not None and item.instances:
                if item.scene_key != key:
                    key, rejected = item.scene_key, Counter()
                rejected[item.code] += item.instances
            yield item
            continue
        if isinstance(item, Scene) and rejected and item.key == key:
            item = _settled(item, rejected, keep)
        key, rejected = None, Counter()
        yield item


def _settled(scene: Scene, rejected: Counter[str], keep: bool) -> Scene | Reject:
    if keep:
        scene.add_flag(PARTIAL_FLAG)
        return scene
    lost = sum(rejected.values())
    codes = ", ".join(f"{n} {code}" for code, n in sorted(rejected.items()))
    reason = (f"{lost} of its {lost + scene.num_instances} annotated objects were rejected ({codes}): the scene "
              f"is left out whole so that no caption claims a total it cannot know (fix those objects, or "
              f"pass --keep-partial-scenes to keep it flagged {PARTIAL_FLAG})")
    return Reject.of_scene(scene, PARTIAL_CODE, reason)
