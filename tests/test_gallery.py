"""The gallery (d2c.gallery): a grid of sample images per source and class with boxes and captions, drawn
by ``d2c inspect --gallery``; checked on its pixels (boxes where the objects are), not only its existence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from d2c.cli import main
from d2c.convert import convert
from d2c.gallery import PALETTE, GalleryOptions, draw_gallery
from d2c.options import ConvertOptions

GREY = 90
BOXES = {  # image -> (class, x0, y0, x1, y1) in original pixels
    "P0": ("ship", 20, 20, 60, 40),
    "P1": ("aircraft", 50, 10, 90, 70),
}


def _dota(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    for name, (cls, x0, y0, x1, y1) in BOXES.items():
        Image.fromarray(np.full((80, 100), GREY, np.uint8)).save(root / "images" / f"{name}.png")
        (root / "labelTxt" / f"{name}.txt").write_text(f"{x0} {y0} {x1} {y0} {x1} {y1} {x0} {y1} {cls} 0\n")
    return root


def _has_colour(px: np.ndarray, x: float, y: float, colour: tuple[int, int, int]) -> bool:
    """Whether ``colour`` is at (x, y) or a pixel next to it (a 2-px line straddles the coordinate)."""
    xi, yi = round(x), round(y)
    window = px[yi - 1: yi + 2, xi - 1: xi + 2].reshape(-1, 3)
    return any(tuple(int(v) for v in p) == colour for p in window)


def _check(gallery, png: Path) -> None:
    px = np.asarray(Image.open(png).convert("RGB"))
    assert px.shape[:2] == (gallery.size[1], gallery.size[0])
    colour = {c: PALETTE[i] for i, c in enumerate(gallery.classes)}
    assert {s.category for s in gallery.samples} == {"ship", "aircraft"}
    for s in gallery.samples:
        cls, x0, y0, x1, y1 = BOXES[s.key.rsplit("/", 1)[-1]]
        assert s.category == cls and s.caption
        ox, oy = s.origin
        gx0, gy0, gx1, gy1 = ox + x0 * s.scale, oy + y0 * s.scale, ox + x1 * s.scale, oy + y1 * s.scale
        for t in (0.25, 0.5, 0.75):  # along all four edges: the class colour
            assert _has_colour(px, gx0 + t * (gx1 - gx0), gy0, colour[cls])
            assert _has_colour(px, gx0 + t * (gx1 - gx0), gy1, colour[cls])
            assert _has_colour(px, gx0, gy0 + t * (gy1 - gy0), colour[cls])
            assert _has_colour(px, gx1, gy0 + t * (gy1 - gy0), colour[cls])
        inside = px[round((gy0 + gy1) / 2), round((gx0 + gx1) / 2)]
        outside = px[round(oy + 2), round(ox + 2)]
        assert abs(int(inside[0]) - GREY) <= 2 and abs(int(outside[0]) - GREY) <= 2  # the image, no box
        assert s.scale == 224 / 100  # the long side fills the thumbnail


def test_gallery_draws_boxes_where_the_objects_are(tmp_path):
    root = _dota(tmp_path / "ds")
    convert(root, tmp_path / "s", ConvertOptions(format="dota", images_mode="embed", source="toy",
                                                 progress=False))
    g = draw_gallery([tmp_path / "s"], tmp_path / "g.png", GalleryOptions(per_class=1))
    assert g.sources == ["toy"] and g.classes == ["aircraft", "ship"] and len(g.samples) == 2
    opts = GalleryOptions()
    assert g.size == (opts.label_width + 2 * (opts.thumb + opts.pad) + opts.pad,
                      22 + opts.thumb + 14 * opts.caption_lines + 2 * opts.pad + opts.pad)
    _check(g, tmp_path / "g.png")
    again = draw_gallery([tmp_path / "s"], tmp_path / "g2.png", GalleryOptions(per_class=1))
    assert again.size == g.size and (tmp_path / "g2.png").read_bytes() == (tmp_path / "g.png").read_bytes()


def test_gallery_of_reference_shards_reads_the_image_files(tmp_path):
    root = _dota(tmp_path / "ds")
    convert(root, tmp_path / "s", ConvertOptions(format="dota", images_mode="reference", progress=False))
    g = draw_gallery([tmp_path / "s"], tmp_path / "g.png", GalleryOptions(per_class=1))
    _check(g, tmp_path / "g.png")


def test_inspect_gallery_cli(tmp_path):
    root = _dota(tmp_path / "ds")
    convert(root, tmp_path / "s", ConvertOptions(format="dota", images_mode="embed", progress=False))
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "s"), "--gallery", str(tmp_path / "g.png"),
                                    "--per-class", "2"])
    assert res.exit_code == 0, res.output
    assert "gallery:" in res.output and "2 images, 1 source(s) x 2 class(es)" in res.output
    px = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    # two columns per class: the second of each is empty (one image per class), drawn in the empty grey
    assert px.shape[1] == 130 + 4 * (224 + 8) + 8
    assert (px == (235, 235, 235)).all(axis=2).sum() > 2 * 200 * 200


def test_small_grid_takes_more_samples_per_cell(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    for i in range(5):
        Image.fromarray(np.full((80, 100), GREY, np.uint8)).save(root / "images" / f"S{i}.png")
        (root / "labelTxt" / f"S{i}.txt").write_text("20 20 60 20 60 40 20 40 ship 0\n")
    convert(root, tmp_path / "s", ConvertOptions(format="dota", images_mode="embed", progress=False))
    g = draw_gallery([tmp_path / "s"], tmp_path / "g.png", GalleryOptions(per_class=1, min_images=4))
    assert [s.key.rsplit("/", 1)[-1] for s in g.samples] == ["S0", "S1", "S2", "S3"]
    assert g.size[0] == 130 + 4 * (224 + 8) + 8
    few = draw_gallery([tmp_path / "s"], tmp_path / "f.png", GalleryOptions(per_class=1, min_images=8))
    assert len(few.samples) == 5  # as many as there are, no empty slots
