"""COCO reader streams: instances are built a chunk of images at a time, and the chunking changes nothing."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

import d2c
import d2c.readers.coco as coco
from d2c.model import Reject, Scene


def _file(tmp_path: Path, n_images: int = 12) -> Path:
    """Sizes in the annotation (no image files needed), a mix of geometry kinds and bad records."""
    images = [{"id": i, "file_name": f"{i:03d}.png", "width": 100, "height": 80} for i in range(n_images)]
    images += [{"id": 3, "file_name": "dup.png", "width": 100, "height": 80}, {"id": 99, "file_name": None}]
    anns = []
    for i in range(n_images):
        anns.append({"id": 10 * i, "image_id": i, "category_id": 1, "bbox": [i, 2, 10, 5]})
        anns.append({"id": 10 * i + 1, "image_id": i, "category_id": 2, "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]]})
        anns.append({"id": 10 * i + 2, "image_id": i, "category_id": 1,
                     "segmentation": [[1, 1, 9, 1, 9, 5, 5, 9, 1, 5]]})  # 5 points: the general path
        if i % 4 == 0:
            anns.append({"id": 10 * i + 3, "image_id": i, "category_id": 1, "bbox": [90, 70, 20, 20]})  # clipped
            anns.append({"id": 10 * i + 4, "image_id": i, "category_id": 7, "bbox": [1, 1, 2, 2]})  # unknown cat
            anns.append({"id": 10 * i + 5, "image_id": i, "category_id": 1, "bbox": [1, 1, -2, 2]})  # zero area
    anns.append({"id": 5000, "image_id": 12345, "category_id": 1, "bbox": [1, 1, 2, 2]})  # no such image
    anns.append({"id": 5001, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2]})  # its image is bad
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "ship"}, {"id": 2, "name": "plane"}]}
    path = tmp_path / "coco.json"
    path.write_bytes(orjson.dumps(data))
    return path


def _items(path: Path) -> list[str]:
    return [repr(x) for x in d2c.read(path, format="coco")]


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_chunk_size_changes_nothing(tmp_path, monkeypatch, chunk):
    path = _file(tmp_path)
    whole = _items(path)
    monkeypatch.setattr(coco, "CHUNK_OBJECTS", chunk)
    assert _items(path) == whole
    items = list(d2c.read(path, format="coco"))
    scenes = [i for i in items if isinstance(i, Scene)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [s.key for s in scenes] == [f"coco/{i:03d}" for i in range(12)]
    assert sum(len(s.instances) for s in scenes) == 36 + 3  # 3 per image + the 3 clipped ones
    assert sum(s.clipped for s in scenes) == 3
    assert sorted((r.code, r.record) for r in rejects) == sorted(
        [("unknown_image_id", "annotation 5000"), ("duplicate_image", "image 3"), ("bad_record", "image entry 13")]
        + [("unknown_category_id", f"annotation {10 * i + 4}") for i in (0, 4, 8)]
        + [("zero_area", f"annotation {10 * i + 5}") for i in (0, 4, 8)]
    )
    # every annotation counted once: in = out + rejected
    assert sum(len(s.instances) for s in scenes) + sum(r.instances for r in rejects) == 36 + 3 * 3 + 2


def test_first_scene_before_the_rest_is_built(tmp_path, monkeypatch):
    path = _file(tmp_path, n_images=40)
    built: list[int] = []
    real = coco.InstanceBatch.build

    def spy(batch):
        built.append(len(batch))
        return real(batch)

    monkeypatch.setattr(coco.InstanceBatch, "build", spy)
    monkeypatch.setattr(coco, "CHUNK_OBJECTS", 6)
    it = d2c.read(path, format="coco")
    first = next(x for x in it if isinstance(x, Scene))
    assert first.key == "coco/000"
    assert sum(built) <= 6 + 6  # one chunk: at most CHUNK_OBJECTS plus one image's objects
    rest = [x for x in it if isinstance(x, Scene)]
    assert len(rest) == 39
    assert sum(built) == 40 * 3 + 10 * 3  # every kept image's objects, each built exactly once
    assert max(built) <= 6 + 6
