"""load_image_record / decode_image: 8-bit kept byte for byte, other rasters stretched as documented."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
import rasterio
from PIL import Image

from d2c.errors import ImageTooLargeError, UnsafePathError
from d2c.imageio import StretchConfig, decode_image, load_image_record, stretch_to_rgb
from d2c.model import Scene


def _scene(root, name, width=None, height=None) -> Scene:
    return Scene(key=f"t/{name.rsplit('.', 1)[0]}", source="t", image_path=name, root=str(root), width=width,
                 height=height)


def _png(root, name="a.png", size=(40, 30)) -> bytes:
    arr = (np.arange(size[0] * size[1] * 3) % 251).astype(np.uint8).reshape(size[1], size[0], 3)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    (root / name).write_bytes(buf.getvalue())
    return buf.getvalue()


def _tif(root, name, data: np.ndarray) -> None:
    bands = data if data.ndim == 3 else data[None]
    with rasterio.open(root / name, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1],
                       count=bands.shape[0], dtype=bands.dtype) as ds:
        ds.write(bands)


def test_8bit_png_and_jpeg_named_png_stored_as_is(tmp_path):
    data = _png(tmp_path)
    scene = _scene(tmp_path, "a.png")
    rec = load_image_record(scene, mode="embed")
    assert rec.bytes == data and rec.format == "png" and rec.orig_dtype == "uint8" and rec.stretch is None
    assert rec.sha256 == hashlib.sha256(data).hexdigest() and rec.scale == 1.0
    assert (scene.width, scene.height) == (40, 30)  # filled from the header
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="JPEG")
    (tmp_path / "j.png").write_bytes(buf.getvalue())  # JPEG bytes behind a .png name, as in SSDD
    rec = load_image_record(_scene(tmp_path, "j.png"), mode="embed")
    assert rec.format == "jpeg" and rec.bytes == buf.getvalue()
    assert decode_image(rec.bytes).shape == (8, 8, 3)


def test_reference_mode_and_missing_image(tmp_path):
    data = _png(tmp_path)
    rec = load_image_record(_scene(tmp_path, "a.png"), mode="reference")
    assert rec.bytes is None and rec.path == "a.png" and rec.sha256 == hashlib.sha256(data).hexdigest()
    missing = load_image_record(_scene(tmp_path, "nope.png", 10, 10), mode="embed")
    assert missing.bytes is None and missing.sha256 is None and missing.path == "nope.png"


def test_uint16_geotiff_stretched_with_recorded_parameters(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 4000, size=(32, 48), dtype=np.uint16)
    raw[0, 0] = 60000  # an outlier the 98th percentile clips away
    _tif(tmp_path, "s.tif", raw)
    rec = load_image_record(_scene(tmp_path, "s.tif"), mode="embed")
    assert rec.format == "png" and rec.orig_dtype == "uint16"
    params = json.loads(rec.stretch)
    lo, hi = np.percentile(raw.astype(float), [2, 98])
    assert params["low_pct"] == 2.0 and params["high_pct"] == 98.0
    assert params["lows"] == [pytest.approx(lo)] and params["highs"] == [pytest.approx(hi)]
    img = decode_image(rec.bytes)
    assert img.shape == (32, 48, 3) and img[0, 0, 0] == 255
    expected = np.rint(np.clip((raw.astype(float) - lo) / (hi - lo) * 255, 0, 255)).astype(np.uint8)
    assert np.array_equal(img[..., 0], expected) and np.array_equal(img[..., 1], expected)


def test_complex_slc_amplitude_db_and_dual_pol_rule(tmp_path):
    rng = np.random.default_rng(1)
    slc = (rng.normal(size=(2, 16, 16)) + 1j * rng.normal(size=(2, 16, 16))).astype(np.complex64)
    _tif(tmp_path, "slc.tif", slc)
    cfg = StretchConfig(db=True, dual_pol="vv,vh,mean")
    rec = load_image_record(_scene(tmp_path, "slc.tif"), mode="embed", stretch=cfg)
    params = json.loads(rec.stretch)
    assert rec.orig_dtype == "complex64" and params["db"] is True and params["band_rule"] == "vv,vh,mean"
    img = decode_image(rec.bytes).astype(int)
    assert np.all(np.abs(img[..., 2] - (img[..., 0] + img[..., 1]) / 2) <= 1)  # B = mean(VV, VH)
    rgb, p = stretch_to_rgb(np.abs(slc), StretchConfig(dual_pol="vv,vv,vh"))
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and p["bands"] == 2


def test_max_side_stores_reduced_copy(tmp_path):
    data = _png(tmp_path, size=(200, 100))
    scene = _scene(tmp_path, "a.png")
    rec = load_image_record(scene, mode="embed", max_side=50)
    assert rec.scale == pytest.approx(0.25) and decode_image(rec.bytes).shape == (25, 50, 3)
    assert rec.sha256 == hashlib.sha256(data).hexdigest() and (scene.width, scene.height) == (200, 100)


def test_pixel_cap_and_path_escape_refused(tmp_path):
    _png(tmp_path, size=(100, 100))
    with pytest.raises(ImageTooLargeError, match="exceeds the cap"):
        load_image_record(_scene(tmp_path, "a.png"), mode="embed", max_pixels=5000)
    with pytest.raises(ImageTooLargeError):
        decode_image((tmp_path / "a.png").read_bytes(), max_pixels=5000)
    with pytest.raises(UnsafePathError, match="leaves the dataset root"):
        load_image_record(_scene(tmp_path, "../outside.png"), mode="embed")


def test_bad_stretch_config_refused():
    with pytest.raises(ValueError, match="dual_pol"):
        StretchConfig(dual_pol="hh")
    with pytest.raises(ValueError, match="low_pct"):
        StretchConfig(low_pct=90, high_pct=10)
