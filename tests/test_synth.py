"""mmsar synth: exact annotations in three formats, SAR statistics, learnable targets, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image, ImageDraw

import d2c
from d2c.geometry import obb_to_polygon
from d2c.model import Reject, Scene
from mmsar.cli import main as mmsar_main
from mmsar.synth import CLASSES, generate, layout, render

METRES = {
    "ship": (20, 400),
    "aircraft": (15, 75 * 1.05),
    "tank": (12, 80),
    "car": (3.8, 6),
    "harbor": (150, 1200),
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synth")
    return generate(out, images=24, size_range=(256, 700), seed=7)


def _by_name(path: Path, fmt: str, **kw) -> dict[str, Scene]:
    items = list(d2c.read(path, format=fmt, **kw))
    assert not [r for r in items if isinstance(r, Reject)]
    return {Path(s.image_path).name: s for s in items}


def test_round_trip_same_instances_in_every_format(synth) -> None:
    out = synth.out
    assert synth.images == 24 and set(synth.counts) == set(CLASSES) and synth.instances >= 40
    readers = {
        "coco": _by_name(out / "coco.json", "coco", images=out / "images"),
        "dota": _by_name(out, "dota"),
        "voc": _by_name(out, "voc"),
    }
    for fmt, scenes in readers.items():
        assert len(scenes) == synth.images, fmt
        for want in synth.scenes:
            got = scenes[Path(want.image_path).name]
            assert (got.width, got.height) == (want.width, want.height)
            assert [i.category for i in got.instances] == [i.category for i in want.instances], fmt
            for g, w in zip(got.instances, want.instances, strict=True):
                assert g.difficult == w.difficult
                assert np.allclose(g.polygon, w.polygon, atol=1e-6), (fmt, want.key)
                assert np.allclose(g.obb, w.obb, atol=1e-6), (fmt, want.key)
    assert all(
        s.gsd == w.gsd
        for s, w in zip(
            (readers["dota"][Path(w.image_path).name] for w in synth.scenes), synth.scenes, strict=True
        )
    )


def test_counts_heavy_tailed_and_overlap_bounded(synth) -> None:
    from shapely.geometry import Polygon

    rng = np.random.default_rng(0)
    counts = np.array([layout.draw_count(rng, 50) for _ in range(3000)])
    assert (counts <= 3).mean() > 0.6 and 0.05 < (counts >= 20).mean() < 0.2 and counts.max() == 50
    for scene in synth.scenes:
        shapes = [(i.category, Polygon(i.polygon)) for i in scene.instances]
        for k, (ca, a) in enumerate(shapes):
            for cb, b in shapes[k + 1 :]:
                if "harbor" in (ca, cb) and ca != cb:
                    continue  # ships may lie in a harbour
                assert a.intersection(b).area <= layout.MAX_OVERLAP * min(a.area, b.area) + 1e-6


@pytest.mark.parametrize("looks", [1, 2, 4])
def test_speckle_statistics_on_flat_sea(looks: int) -> None:
    """The float intensity of an untextured, empty sea scene: mean = level, variance = level^2 / L."""
    rng = np.random.default_rng(looks)
    spec = layout.SceneSpec(
        width=512, height=512, gsd=5.0, looks=looks, kind="sea", sea_level=0.03, land_level=0.2, nu=None
    )
    sigma, water = render.background(rng, spec)
    assert water.all()
    intensity = render.intensity(rng, spec, sigma) / 0.03
    assert intensity.dtype == np.float32
    assert abs(intensity.mean() - 1.0) < 0.01
    assert abs(intensity.var() * looks - 1.0) < 0.05


def _masks(inst, others, shape):
    h, w = shape

    def fill(polys):
        im = Image.new("L", (w, h))
        draw = ImageDraw.Draw(im)
        for p in polys:
            draw.polygon([tuple(v) for v in p], fill=1)
        return np.asarray(im, dtype=bool)

    cx, cy, ow, oh, a = inst.obb
    m = max(3.0, 0.5 * oh)
    foot = fill([inst.polygon])
    ring = fill([obb_to_polygon((cx, cy, ow + 2 * m, oh + 2 * m, a))]) & ~fill([o.polygon for o in others])
    return foot, ring


def test_every_target_is_brighter_than_its_surroundings(synth) -> None:
    checked = 0
    for scene in synth.scenes:
        img = np.asarray(Image.open(synth.out / scene.image_path), dtype=np.float32)
        for inst in scene.instances:
            foot, ring = _masks(inst, scene.instances, img.shape)
            if ring.sum() < 10:  # a ship moored inside a harbour: no clutter of its own around it
                continue
            checked += 1
            margin = img[foot].mean() - img[ring].mean()
            assert margin > 15, (scene.key, inst.category, margin)
    assert checked >= 0.9 * synth.instances


def test_sizes_honour_gsd(synth, tmp_path: Path) -> None:
    fixed = generate(tmp_path, images=6, size=512, gsd=2.0, seed=3, formats=("dota",))
    for scene in synth.scenes + fixed.scenes:
        for inst in scene.instances:
            w, h = inst.obb[2], inst.obb[3]
            if inst.category == "bridge":
                assert 8 - 1e-6 <= h * scene.gsd <= 30 + 1e-6
                continue
            lo, hi = METRES[inst.category]
            assert lo - 1e-6 <= w * scene.gsd <= hi + 1e-6, (scene.key, inst.category, w, scene.gsd)
    assert all(s.gsd == 2.0 for s in fixed.scenes)
    assert all(
        f.read_text().startswith("imagesource:synthetic\ngsd:2\n") for f in (tmp_path / "labelTxt").iterdir()
    )


def test_same_seed_same_bytes_whatever_workers(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", images=6, size_range=(128, 384), seed=5, workers=1)
    b = generate(tmp_path / "b", images=6, size_range=(128, 384), seed=5, workers=2)
    c = generate(tmp_path / "c", images=6, size_range=(128, 384), seed=6, workers=1)
    files_a = sorted(p.relative_to(a.out) for p in a.out.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b.out) for p in b.out.rglob("*") if p.is_file())
    assert len(files_a) == 6 * 3 + 1
    for rel in files_a:
        assert (a.out / rel).read_bytes() == (b.out / rel).read_bytes(), rel
    assert (a.out / "coco.json").read_bytes() != (c.out / "coco.json").read_bytes()


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_geotiff_has_gsd_and_geotransform(tmp_path: Path, dtype: str) -> None:
    res = generate(tmp_path, images=2, size=96, dtype=dtype, gsd=2.5, seed=1, formats=("dota",))
    for scene in res.scenes:
        with rasterio.open(tmp_path / scene.image_path) as src:
            assert src.dtypes == (dtype,) and (src.width, src.height) == (96, 96)
            assert src.transform.a == 2.5 and src.transform.e == -2.5 and src.crs is not None
            assert float(src.tags()["GSD"]) == 2.5
            data = src.read(1)
        assert data.std() > 0
    back = _by_name(tmp_path, "dota")
    assert {s.gsd for s in back.values()} == {2.5} and {s.width for s in back.values()} == {96}


def test_large_scene(tmp_path: Path) -> None:
    res = generate(tmp_path, images=1, size=4096, classes=["ship"], gsd=10.0, seed=2, formats=("dota",))
    with Image.open(tmp_path / res.scenes[0].image_path) as im:
        assert im.size == (4096, 4096) and im.mode == "L"
    assert all(20 <= i.obb[2] * 10 <= 400 for i in res.scenes[0].instances)


def test_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(
        mmsar_main,
        [
            "synth",
            "--out",
            str(out),
            "--images",
            "3",
            "--size-range",
            "96:160",
            "--format",
            "voc",
            "--classes",
            "ship,tank",
            "--seed",
            "2",
            "--workers",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "synth: 3 images" in r.output
    assert len(list((out / "Annotations").glob("*.xml"))) == 3 and not (out / "coco.json").exists()
    names = {i.category for s in _by_name(out, "voc").values() for i in s.instances}
    assert names <= {"ship", "tank"}
    bad = runner.invoke(mmsar_main, ["synth", "--out", str(out), "--images", "1", "--classes", "boat"])
    assert bad.exit_code == 2 and "unknown class 'boat'" in bad.output
    assert set(CLASSES) == {"ship", "aircraft", "tank", "car", "bridge", "harbor"}


def test_aspect_draws_strips_within_the_ratio() -> None:
    from mmsar.synth.generate import scene_size

    rng = np.random.default_rng(3)
    sides = [scene_size(rng, (512, 1024), 6.0) for _ in range(400)]
    ratios = np.array([max(w, h) / min(w, h) for w, h in sides])
    assert all(512 <= max(w, h) <= 1024 for w, h in sides)
    assert ratios.max() <= 6.0 * 1.01 and np.mean(ratios > 3) > 0.25  # log-uniform in [1, 6]: P(> 3) = 0.39
    wide = np.mean([w > h for w, h in sides])
    assert 0.4 < wide < 0.6  # both orientations
    near_square = [scene_size(np.random.default_rng(3), (512, 1024)) for _ in range(50)]
    assert all(max(w, h) / min(w, h) <= 1.34 for w, h in near_square)


def test_aspect_through_the_cli_and_its_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "strips"
    args = ["synth", "--out", str(out), "--images", "6", "--size-range", "256:384", "--format", "dota",
            "--classes", "ship", "--seed", "4"]
    r = runner.invoke(mmsar_main, [*args, "--aspect", "5"])
    assert r.exit_code == 0, r.output
    scenes = _by_name(out, "dota")
    for s in scenes.values():
        with Image.open(out / s.image_path) as im:
            assert im.size == (s.width, s.height)
    assert max(max(s.width, s.height) / min(s.width, s.height) for s in scenes.values()) > 1.5
    bad = runner.invoke(mmsar_main, [*args, "--aspect", "0.5"])
    assert bad.exit_code == 2 and "--aspect must be a ratio >= 1" in bad.output
    square = runner.invoke(mmsar_main, ["synth", "--out", str(out), "--images", "1", "--aspect", "2"])
    assert square.exit_code == 2 and "--aspect needs --size-range" in square.output
