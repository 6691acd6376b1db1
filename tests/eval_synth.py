"""Synthetic evaluation data in the `mmsar build` layout and a fake model whose answers are known.

Each image is a solid colour: red = 10 * class index + 5, green = 10 * count + 5. The fake model embeds an
image as one-hot(class) + one-hot(count) and a text as one-hot of the class and number words it contains,
so every metric of a correct pipeline is exactly 1.0.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from d2c.schema import CHIP_SCHEMA, SCHEMA
from sarclip_train.eval.counting import WORDS
from sarclip_train.eval.features import EvalModel

CLASSES = ["aircraft", "car", "ship"]
PLURAL = {"aircraft": "aircraft", "car": "cars", "ship": "ships"}
TEMPLATE = "There are {n} in the image."


def png(cls: int, count: int, size=(24, 16)) -> bytes:
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[..., 0] = 10 * cls + 5
    arr[..., 1] = 10 * count + 5
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _write(folder: Path, rows: list[dict], schema: pa.Schema, per_shard: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(rows), per_shard):
        pq.write_table(pa.Table.from_pylist(rows[i:i + per_shard], schema=schema),
                       folder / f"synth-{i // per_shard:05d}.parquet")


def _scene(key: str, cls: int, count: int, captions: list[str]) -> dict:
    name = CLASSES[cls]
    return {"key": key, "source": "synth", "split": "test", "image": {"bytes": png(cls, count), "path": None},
            "image_format": "png", "width": 24, "height": 16, "captions": captions,
            "counts": [{"category": name, "count": count}]}


def caption(cls: int, count: int, words: bool = True) -> str:
    name = CLASSES[cls]
    noun = name if count == 1 else PLURAL[name]
    return TEMPLATE.format(n=f"{WORDS[count - 1] if words else count} {noun}")


def write_build(root: Path, per_class: int = 6) -> Path:
    """test/ (retrieval), chips/{train,val,test}/, sarcount/ and sarcount_train/ under ``root``."""
    scenes = []
    for cls in range(len(CLASSES)):
        for j in range(per_class):
            count = 1 + (j * 3 + cls) % 10
            scenes.append(_scene(f"synth/s{cls}_{j}", cls, count,
                                 [caption(cls, count), f"a SAR scene with {PLURAL[CLASSES[cls]]}."]))
    _write(root / "test", scenes, SCHEMA)
    for split, n in (("train", 8), ("val", 3), ("test", 4)):
        chips = [{"key": f"synth/{split}{cls}_{j}#0", "parent_key": f"synth/{split}{cls}_{j}", "split": split,
                  "image": {"bytes": png(cls, 1 + j % 3), "path": None}, "image_format": "png",
                  "label": CLASSES[cls]} for cls in range(len(CLASSES)) for j in range(n)]
        _write(root / "chips" / split, chips, CHIP_SCHEMA)
    for name, n in (("sarcount", 2), ("sarcount_train", 3)):
        rows, items = [], []
        for count in range(1, 11):
            for j in range(n):
                cls = (count + j) % len(CLASSES)
                key = f"synth/{name}_{count}_{j}"
                rows.append(_scene(key, cls, count, [caption(cls, count)]))
                items.append({"key": key, "split": "test", "class": CLASSES[cls], "count": count,
                              "template": TEMPLATE, "singular": CLASSES[cls], "plural": PLURAL[CLASSES[cls]]})
        _write(root / name, rows, SCHEMA)
        (root / name / "_index.json").write_text(json.dumps(items))
    return root


def write_imagefolder(root: Path, n: int = 3) -> Path:
    for cls, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            (root / name / f"{j}.png").write_bytes(png(cls, 1 + j))
    return root


_NUM = {w: i + 1 for i, w in enumerate(WORDS)} | {str(i): i for i in range(1, 11)}
_CLS = {w: i for i, c in enumerate(CLASSES) for w in (c, PLURAL[c])}


def fake_embed_image(img) -> np.ndarray:
    arr = np.asarray(img)
    e = np.zeros(len(CLASSES) + 10)
    e[int(arr[0, 0, 0]) // 10] = 1.0
    e[len(CLASSES) + int(arr[0, 0, 1]) // 10 - 1] = 1.0
    return e / np.linalg.norm(e)


def fake_embed_text(text: str) -> np.ndarray:
    e = np.full(len(CLASSES) + 10, 1e-3)
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        if w in _CLS:
            e[_CLS[w]] = 1.0
        if w in _NUM:
            e[len(CLASSES) + _NUM[w] - 1] = 1.0
    return e / np.linalg.norm(e)


class FakeModel:
    """Counts calls so tests can see the feature cache at work."""

    def __init__(self) -> None:
        self.image_calls = 0

    def images(self, batch) -> np.ndarray:
        self.image_calls += len(batch)
        return np.stack([fake_embed_image(b) for b in batch]).astype(np.float32)

    def eval_model(self, name: str = "fake") -> EvalModel:
        return EvalModel(name, self.images, lambda t: np.stack([fake_embed_text(x) for x in t]),
                         f"fake:{name}", {"name": name, "kind": "fake"})
