"""Image lookup, format sniffing, header-only sizes, the pixel cap, and the run accounting."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from d2c.accounting import Stats, render_summary
from d2c.errors import ImageTooLargeError, UnsafePathError
from d2c.images import image_size, resolve_image, safe_join, sniff_format
from d2c.model import Instance, Reject, Scene


def test_safe_join(tmp_path):
    (tmp_path / "a").mkdir()
    assert safe_join(tmp_path, "a\\b.png") == tmp_path / "a" / "b.png"
    for bad in ("../x.png", "/etc/passwd", "C:\\x.png", "a/../../x"):
        with pytest.raises(UnsafePathError):
            safe_join(tmp_path, bad)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "link")
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(tmp_path, "link/x.png")


def test_resolve_by_name_then_stem(tmp_path):
    Image.new("RGB", (4, 3)).save(tmp_path / "x.png")
    assert resolve_image(tmp_path, None, "x.png") == resolve_image(tmp_path, tmp_path, "x.png")
    assert resolve_image(tmp_path, None, "x.png").found_by_stem is False
    r = resolve_image(tmp_path, None, "x.jpg")
    assert r.path == tmp_path / "x.png" and r.found_by_stem
    assert resolve_image(tmp_path, None, "x").found_by_stem
    assert resolve_image(tmp_path, None, "y.png").path is None


def test_sniff_and_size(tmp_path):
    Image.new("RGB", (7, 5)).save(tmp_path / "j.png", format="JPEG")
    Image.new("L", (9, 4)).save(tmp_path / "t.tif", format="TIFF")
    assert sniff_format((tmp_path / "j.png").read_bytes()[:16]) == "jpeg"
    assert sniff_format(b"\x89PNG\r\n\x1a\n....") == "png" and sniff_format(b"BM....") == "bmp"
    assert sniff_format(b"II*\x00") == "tiff" and sniff_format(b"hello") is None
    assert image_size(tmp_path / "j.png") == (7, 5)
    assert image_size(tmp_path / "t.tif") == (9, 4)
    with pytest.raises(ImageTooLargeError, match="exceeds the cap"):
        image_size(tmp_path / "j.png", max_pixels=20)


def _scene(n: int, clipped: int = 0) -> Scene:
    inst = [Instance.from_hbb(0, 0, 2, 2, "ship") for _ in range(n)]
    return Scene(key=f"s/{n}", source="s", image_path=f"{n}.png", root="/r", width=4, height=4, instances=inst,
                 clipped=clipped)


def test_stats_invariant_merge_and_render():
    a = Stats.of([_scene(3, clipped=1), Reject("f", "line 2", "bad", "zero_area", 1)])
    assert a.to_dict()["instances_in"] == 4 and a.instances_clipped == 1
    a.check_invariant()
    b = Stats()
    s = _scene(2)
    b.add(s)  # read but not written, then refused later (e.g. unreadable image): counted once
    b.add_reject(Reject("g", None, "image", "image_unreadable", 2, s.key), already_in=True)
    b.check_invariant()
    a.merge(b)
    assert a.rejects == {"zero_area": 1, "image_unreadable": 1} and a.instances_in == 6
    assert Stats.from_dict(a.to_dict()).to_dict() == a.to_dict()
    a.check_invariant()
    a.instances_out -= 1
    with pytest.raises(AssertionError, match="1 unaccounted"):
        a.check_invariant()
    text = render_summary(a)
    assert "rejected: zero_area" in text and "instances clipped" in text
