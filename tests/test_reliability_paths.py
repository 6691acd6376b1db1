"""Paths and image files an attacker controls: traversal, absolute paths and symlinks leaving the dataset
root are refused; a decompression bomb is refused from its header, before any decoding; a truncated or
corrupt image is a Reject in embed mode, and the good images beside them are converted."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageFile

import d2c
from d2c.cli import main
from d2c.model import Reject, Scene
from d2c.shards import iter_rows

pytestmark = pytest.mark.timeout(60)


def _encode(fmt: str, size=(64, 48), seed=0, dtype=np.uint8) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 250, size=size[::-1]).astype(dtype)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 100-byte PNG whose header declares ``width x height`` 8-bit grey pixels (10^10 by default)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        _chunk(b"IEND", b"")


def _coco(root: Path, names: list[str], sizes: bool = True) -> Path:
    images = [{"id": i, "file_name": n, **({"width": 64, "height": 48} if sizes else {})}
              for i, n in enumerate(names)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 20, 8]} for i in range(len(names))]
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}))
    return path


def _by_name(items: list) -> dict[str, Scene | Reject]:
    out = {}
    for it in items:
        assert isinstance(it, (Scene, Reject))
        if isinstance(it, Scene):
            out[Path(it.image_path).name] = it
        else:
            out[it.record] = it
    return out


def test_traversal_absolute_and_symlinks_are_refused(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_encode("PNG", seed=9))
    (root / "images" / "good.png").write_bytes(_encode("PNG"))
    os.symlink(outside / "secret.png", root / "images" / "link.png")  # a file link leaving the root
    os.symlink(outside, root / "images" / "sub")  # a folder link leaving the root
    os.symlink(root / "images" / "good.png", root / "images" / "inside.png")  # a link that stays inside: fine
    names = ["good.png", "../../etc/passwd", "/etc/passwd", "images/../../outside/secret.png", "link.png",
             "sub/secret.png", "..\\..\\secret.png", "C:\\Windows\\win.ini", "inside.png", "good.png\x00.txt"]
    items = list(d2c.read(_coco(root, names), format="coco"))
    got = _by_name(items)
    for i in (*range(1, 8), 9):  # 9: a NUL byte (os calls would raise ValueError on it)
        rej = got[f"image {i}"]
        assert isinstance(rej, Reject) and rej.code == "unsafe_path" and rej.instances == 1, (names[i], rej)
        assert rej.file == "ann.json" and "\n" not in rej.reason
    assert isinstance(got["good.png"], Scene) and isinstance(got["inside.png"], Scene)
    assert not any("secret" in s.image_path or "passwd" in s.image_path for s in items if isinstance(s, Scene))

    # the same through the CLI in embed mode: the secret's bytes never reach a shard
    result = CliRunner().invoke(main, ["convert", str(root / "ann.json"), "--out", str(tmp_path / "out"),
                                       "--images-mode", "embed", "--format", "coco"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    secret = (outside / "secret.png").read_bytes()
    rows = list(iter_rows(tmp_path / "out", columns=["key", "image"]))
    assert sorted(r["key"] for r in rows) == ["ann/good", "ann/inside"]
    assert all(r["image"]["bytes"] != secret for r in rows)
    stats = json.loads((tmp_path / "out" / "_stats.json").read_text())
    assert stats["rejects"]["unsafe_path"] == 8 and stats["invariant_holds"]


def test_image_folder_link_leaving_the_root_is_refused(tmp_path):
    """DOTA finds images by stem in images/: a symlinked images/ folder that leaves the root is refused."""
    root, outside = tmp_path / "ds", tmp_path / "elsewhere"
    (root / "labelTxt").mkdir(parents=True)
    outside.mkdir()
    (outside / "P1.png").write_bytes(_encode("PNG"))
    os.symlink(outside, root / "images")
    (root / "labelTxt" / "P1.txt").write_text("1 1 20 1 20 9 1 9 ship 0\n")
    (rej,) = list(d2c.read(root, format="dota"))
    assert isinstance(rej, Reject) and rej.code == "unsafe_path" and rej.instances == 1
    assert rej.file == "labelTxt/P1.txt"


def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    (root / "labelTxt").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "images" / "bomb.png").write_bytes(png_bomb())
    (root / "images" / "ok.png").write_bytes(_encode("PNG"))
    for stem in ("bomb", "ok"):
        (root / "labelTxt" / f"{stem}.txt").write_text("1 1 20 1 20 9 1 9 ship 0\n")
    decoded: list[str] = []
    real_load = ImageFile.ImageFile.load

    def spy(self):  # records any pixel decoding of the bomb
        if getattr(self, "size", (0, 0))[0] >= 100_000:
            decoded.append(str(getattr(self, "filename", "?")))
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    got = {Path(i.file).stem if isinstance(i, Reject) else Path(i.image_path).stem: i
           for i in d2c.read(root, format="dota")}
    assert isinstance(got["bomb"], Reject) and got["bomb"].code == "image_too_large", got["bomb"]
    assert "100000" in got["bomb"].reason or "pixel" in got["bomb"].reason
    assert isinstance(got["ok"], Scene) and decoded == []

    # a small cap refuses a normal image from its header too
    (rej,) = [i for i in d2c.read(root / "labelTxt" / "ok.txt", format="dota", max_pixels=1000)
              if isinstance(i, Reject)]
    assert rej.code == "image_too_large" and "exceeds the cap of 1000" in rej.reason

    # COCO that lies about the size (64 x 48) of a bomb: embed mode still refuses it before decoding
    _coco(root / "images", ["bomb.png", "ok.png"])
    result = CliRunner().invoke(main, ["convert", str(root / "images" / "ann.json"), "--format", "coco",
                                       "--out", str(tmp_path / "out"), "--images-mode", "embed"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    rejects = [json.loads(line) for line in (tmp_path / "out" / "_rejects.jsonl").read_text().splitlines()]
    assert [r["scene_key"] for r in rejects] == ["ann/bomb"] and "pixels" in rejects[0]["reason"]
    assert decoded == []


def _tiff16(size=(64, 48)) -> bytes:
    arr = np.random.default_rng(3).integers(0, 60000, size=size[::-1]).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="TIFF")
    return buf.getvalue()


def test_truncated_or_corrupt_images_are_rejects_in_embed_mode(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    png, jpg, tif = _encode("PNG"), _encode("JPEG", seed=1), _tiff16()
    corrupt = bytearray(png)
    corrupt[len(png) // 2 : len(png) // 2 + 40] = b"\0" * 40
    files = {
        "good.png": png, "good.jpg.png": jpg, "good16.tif": tif,
        "trunc_png.png": png[: len(png) // 2], "trunc_jpg.jpg": jpg[: len(jpg) // 2],
        "trunc_tif.tif": tif[: len(tif) // 3], "corrupt.png": bytes(corrupt),
        "garbage.png": b"not an image at all" * 20, "empty.png": b"", "header_only.png": png[:33],
    }
    for name, data in files.items():
        (root / "images" / name).write_bytes(data)
    ann = _coco(root, list(files), sizes=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", str(ann), "--format", "coco", "--out", str(out),
                                       "--images-mode", "embed", "--shard-rows", "2"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    rejects = {r["record"]: r for r in map(json.loads, (out / "_rejects.jsonl").read_text().splitlines())}
    bad = [n for n in files if not n.startswith("good")]
    assert sorted(rejects) == sorted(f"image {list(files).index(n)}" for n in bad)
    for r in rejects.values():
        assert r["file"] == "ann.json" and r["instances"] == 1 and r["code"].startswith("image"), r
    rows = list(iter_rows(out, columns=["key", "image"]))
    assert sorted(r["key"] for r in rows) == ["ann/good", "ann/good.jpg", "ann/good16"]
    assert next(r for r in rows if r["key"] == "ann/good")["image"]["bytes"] == png
    stats = json.loads((out / "_stats.json").read_text())
    assert stats["instances_in"] == len(files) and stats["invariant_holds"]


def test_export_of_a_hostile_shard_reads_nothing_outside_its_root(tmp_path):
    """Shards are input too: a reference-mode row naming ``../secret.png`` or ``/etc/passwd`` is left out of
    a webdataset/openclip export (with a warning), never read from outside the dataset root."""
    from d2c.model import Instance
    from d2c.rows import ImageRecord, scene_to_row
    from d2c.shards import ShardWriter

    root, shards = tmp_path / "root", tmp_path / "shards"
    (root / "images").mkdir(parents=True)
    (root / "images" / "ok.png").write_bytes(_encode("PNG", seed=4))
    secret = _encode("PNG", seed=5)
    (tmp_path / "secret.png").write_bytes(secret)
    writer = ShardWriter(shards, "evil", shard_rows=10, metadata={"dataset_root": str(root)})
    for i, rel in enumerate(["images/ok.png", "../secret.png", str(tmp_path / "secret.png")]):
        scene = Scene(key=f"evil/s{i}", source="evil", image_path=rel, root=str(root), width=64, height=48,
                      instances=[Instance.from_hbb(2, 2, 20, 9, "ship")])
        writer.write(scene_to_row(scene, ["a ship."], ["t"], ImageRecord(None, rel, "png", None)), item=i)
    writer.close()
    for to in ("webdataset", "openclip-csv"):
        out = tmp_path / to
        result = CliRunner().invoke(main, ["export", str(shards), str(out), "--to", to])
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        written = [p.read_bytes() for p in out.rglob("*.png")]
        for tar in out.glob("*.tar"):
            import tarfile

            with tarfile.open(tar) as tf:
                written += [tf.extractfile(m).read() for m in tf.getmembers() if m.name.endswith(".png")]
        if to == "openclip-csv":  # the CSV points at files: only the one inside the root
            lines = (out / "captions.csv").read_text().splitlines()[1:]
            assert [line.split("\t")[0] for line in lines] == [str((root / "images" / "ok.png").resolve())]
        else:
            assert written == [(root / "images" / "ok.png").read_bytes()], to
        assert all(secret != w for w in written)


@pytest.mark.timeout(20)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need POSIX")
def test_a_named_pipe_among_annotations_is_a_reject_not_a_hang(tmp_path):
    """A FIFO named like an annotation file (a tarball can carry one) would block a read for ever."""
    img = _encode("PNG")
    layouts = {
        "coco": ("ann", "evil.json", "ok.json"),
        "dota": ("labelTxt", "evil.txt", "ok.txt"),
        "voc": ("Annotations", "evil.xml", "ok.xml"),
        "yolo": ("labels", "evil.txt", "ok.txt"),
    }
    good = {
        "coco": json.dumps({"images": [{"id": 1, "file_name": "ok.png", "width": 64, "height": 48}],
                            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 9, 5]}],
                            "categories": [{"id": 1, "name": "ship"}]}),
        "dota": "2 2 11 2 11 7 2 7 ship 0\n",
        "voc": "<annotation><filename>ok.png</filename><object><name>ship</name><bndbox><xmin>2</xmin>"
               "<ymin>2</ymin><xmax>11</xmax><ymax>7</ymax></bndbox></object></annotation>",
        "yolo": "0 0.2 0.2 0.1 0.1\n",
    }
    for fmt, (folder, evil, ok) in layouts.items():
        root = tmp_path / fmt
        (root / folder).mkdir(parents=True)
        for sub in ("images", "ann"):
            (root / sub).mkdir(exist_ok=True)
        for stem in ("ok", "evil"):
            (root / "images" / f"{stem}.png").write_bytes(img)
        (root / "ann" / "ok.png").write_bytes(img)
        (root / folder / ok).write_text(good[fmt])
        os.mkfifo(root / folder / evil)
        if fmt == "yolo":
            (root / "classes.txt").write_text("ship\n")
        target = root / "ann" if fmt == "coco" else root
        items = list(d2c.read(target, format=fmt))
        rejects = [i for i in items if isinstance(i, Reject) and "evil" in i.file]
        assert len(rejects) == 1 and "not a regular file" in rejects[0].reason, (fmt, items)
        assert sum(i.num_instances for i in items if isinstance(i, Scene)) == 1, (fmt, items)
