"""Image bytes for shards: find, sniff, stretch and encode one scene's image.

Why: 8-bit PNG/JPEG files are stored byte for byte (no re-encoding loss, and the sha256 stays that of the
file). Other rasters (uint16 / float32 GeoTIFF, complex SLC) cannot be shown or fed to a vision encoder
as they are, so they are read with rasterio and turned into an 8-bit PNG by a documented stretch:

1. complex samples become amplitude ``|z|``;
2. optionally (``StretchConfig.db``) ``10 * log10(max(x, eps))``;
3. per channel, the ``low_pct``..``high_pct`` percentiles (default 2..98, over finite pixels) are mapped
   linearly to 0..255 and clipped.

Band to channel rule (``StretchConfig.dual_pol``): 1 band -> grey in all three channels; 2 bands
(dual-pol VV, VH) -> ``"vv,vh,mean"`` (default: R=VV, G=VH, B=mean of the two stretched channels) or
``"vv,vh,ratio"`` (B = VV/VH in dB terms: stretched difference VV - VH) or ``"vv,vv,vh"``;
3 bands -> as they are; more -> the first three. One-band rasters are stored as greyscale PNG.
The parameters actually used are stored as JSON in the row's ``stretch`` column and the source dtype in
``orig_dtype``. PNGs are written with zlib level 1 (speckle hardly compresses; higher levels cost 5-10x).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from d2c.errors import D2CError, ImageTooLargeError, UnsafePathError
from d2c.images import sniff_format
from d2c.model import Scene
from d2c.rows import ImageRecord

DEFAULT_MAX_PIXELS = 1 << 30
DUAL_POL_RULES = ("vv,vh,mean", "vv,vh,ratio", "vv,vv,vh")
PNG_COMPRESS_LEVEL = 1  # SAR speckle hardly compresses: higher levels cost 5-10x the time for a few %
JPEG_QUALITY = 95


class ImageReadError(D2CError):
    """An image file that exists but cannot be read or decoded."""


@dataclass(frozen=True, slots=True)
class StretchConfig:
    """How non-8-bit rasters become 8-bit: optional dB, then a percentile clip, then a band rule."""

    db: bool = False
    low_pct: float = 2.0
    high_pct: float = 98.0
    dual_pol: str = "vv,vh,mean"
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_pct < self.high_pct <= 100.0:
            raise ValueError(f"need 0 <= low_pct < high_pct <= 100, got {self.low_pct}, {self.high_pct}")
        if self.dual_pol not in DUAL_POL_RULES:
            raise ValueError(f"dual_pol must be one of {DUAL_POL_RULES}, got {self.dual_pol!r}")


def _png_is_8bit(data: bytes) -> bool:
    # IHDR: 8 signature + 4 length + 4 type + 4 width + 4 height, then bit depth, colour type.
    return len(data) > 25 and data[24] == 8 and data[25] in (0, 2, 3, 4, 6)


@functools.lru_cache(maxsize=64)
def _real_root(root: str) -> str:
    return os.path.realpath(root)


def image_path_of(scene: Scene) -> Path:
    """The scene's image file, refused if it leaves the dataset root (``..``, absolute, symlink escape)."""
    root = _real_root(scene.root)
    rel = scene.image_path.replace("\\", "/")
    if rel.startswith("/") or ".." in rel.split("/"):
        raise UnsafePathError(f"{scene.provenance}: image path {scene.image_path!r} leaves the dataset root")
    real = os.path.realpath(os.path.join(root, rel))
    if not real.startswith(root.rstrip(os.sep) + os.sep):
        raise UnsafePathError(f"{scene.provenance}: image path {scene.image_path!r} resolves outside {root}")
    return Path(real)


def _check_pixels(width: int, height: int, max_pixels: int, where: str) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(f"{where}: {width}x{height} pixels exceeds the cap of {max_pixels}")


def load_image_record(
    scene: Scene,
    *,
    mode: str = "embed",
    max_side: int | None = None,
    stretch: StretchConfig = StretchConfig(),
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageRecord:
    """What the shard stores for ``scene``'s image.

    ``reference`` mode stores the path (relative to the dataset root) and the file's sha256; ``embed``
    stores the bytes. A missing image gives a record with no bytes and no checksum (the reader flags the
    scene; convert rejects it in embed mode). When the scene has no size, the image header's size is
    written into ``scene.width``/``scene.height``.
    """
    if mode not in ("embed", "reference"):
        raise ValueError(f"mode must be 'embed' or 'reference', got {mode!r}")
    rel = scene.image_path.replace("\\", "/")
    if "image_missing" in scene.flags:  # the reader looked already: no need to touch the disk again
        return ImageRecord(bytes=None, path=rel, format=scene.image_format, sha256=None)
    path = image_path_of(scene)
    if not path.is_file():
        return ImageRecord(bytes=None, path=rel, format=scene.image_format, sha256=None)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    fmt = sniff_format(data[:16])
    if mode == "reference":
        if scene.width is None or scene.height is None:
            _fill_size(scene, data, path, max_pixels)
        return ImageRecord(bytes=None, path=rel, format=fmt, sha256=digest)
    if fmt in ("png", "jpeg") and (fmt == "jpeg" or _png_is_8bit(data)):
        return _embed_8bit(scene, data, fmt, digest, rel, max_side, max_pixels, path)
    return _embed_stretched(scene, path, digest, rel, max_side, stretch, max_pixels)


def _fill_size(scene: Scene, data: bytes, path: Path, max_pixels: int) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Exception as exc:  # PIL raises many types for bad files
        raise ImageReadError(f"{path}: cannot read the image header ({exc})") from None
    _check_pixels(w, h, max_pixels, str(path))
    if scene.width is None or scene.height is None:
        scene.width, scene.height = int(w), int(h)
    return w, h


def _embed_8bit(
    scene: Scene, data: bytes, fmt: str, digest: str, rel: str, max_side: int | None, max_pixels: int,
    path: Path,
) -> ImageRecord:
    w, h = _fill_size(scene, data, path, max_pixels)
    _check_complete(data, fmt, path)
    if max_side is None or max(w, h) <= max_side:
        return ImageRecord(bytes=data, path=rel, format=fmt, sha256=digest, orig_dtype="uint8")
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        small, scale = _reduce(im, max_side)
    out = io.BytesIO()
    if fmt == "jpeg":
        small.convert("RGB" if small.mode not in ("L", "RGB") else small.mode).save(
            out, format="JPEG", quality=JPEG_QUALITY)
    else:
        small.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return ImageRecord(bytes=out.getvalue(), path=rel, format=fmt, sha256=digest, orig_dtype="uint8",
                       scale=scale)


def _check_complete(data: bytes, fmt: str, path: Path) -> None:
    """Refuse a truncated or corrupt file that would be stored as is (its header alone looks fine), cheaply:
    PNG chunks are CRC-checked without decoding; a JPEG needs an end-of-image marker after its last scan."""
    if fmt == "jpeg":
        eoi = data.rfind(b"\xff\xd9")
        if eoi < 0 or eoi < data.rfind(b"\xff\xda"):
            raise ImageReadError(f"{path}: truncated JPEG (no end-of-image marker after the last scan)")
        return
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error ... for broken chunks
        raise ImageReadError(f"{path}: truncated or corrupt PNG ({exc})") from None


def _reduce(im: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    scale = max_side / max(im.size)
    size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
    return im.resize(size, Image.Resampling.LANCZOS), scale


def _embed_stretched(
    scene: Scene, path: Path, digest: str, rel: str, max_side: int | None, cfg: StretchConfig,
    max_pixels: int,
) -> ImageRecord:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                _check_pixels(ds.width, ds.height, max_pixels, str(path))
                bands = ds.read()
                dtype = str(ds.dtypes[0])
    except RasterioIOError as exc:
        raise ImageReadError(f"{path}: cannot read the raster ({exc})") from None
    if scene.width is None or scene.height is None:
        scene.width, scene.height = int(bands.shape[2]), int(bands.shape[1])
    rgb, params = stretch_to_rgb(bands, cfg)
    params["orig_dtype"] = dtype
    # one band: store a greyscale PNG (a third of the bytes); decode_image gives (H, W, 3) either way
    im = Image.fromarray(rgb[..., 0], mode="L") if params["bands"] == 1 else Image.fromarray(rgb, mode="RGB")
    scale = 1.0
    if max_side is not None and max(im.size) > max_side:
        im, scale = _reduce(im, max_side)
    out = io.BytesIO()
    im.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return ImageRecord(bytes=out.getvalue(), path=rel, format="png", sha256=digest, orig_dtype=dtype,
                       stretch=json.dumps(params, sort_keys=True), scale=scale)


def stretch_to_rgb(bands: np.ndarray, cfg: StretchConfig = StretchConfig()) -> tuple[np.ndarray, dict]:
    """(bands, H, W) raster of any dtype -> (H, W, 3) uint8 and the parameters used (see module doc)."""
    if bands.ndim == 2:
        bands = bands[None]
    lows: list[float] | None = None
    highs: list[float] | None = None
    if bands.dtype == np.uint8:
        chans = [band.astype(np.float64) for band in bands[:3]]
    else:
        chans, lows, highs = [], [], []
        for band in bands[:3]:  # one band at a time: a float64 copy of the whole raster is never made
            x = np.abs(band) if np.iscomplexobj(band) else band
            x = x.astype(np.float64)
            if cfg.db:
                x = 10.0 * np.log10(np.maximum(x, cfg.eps))
            lo, hi = _percentiles(x, cfg)
            lows.append(lo)
            highs.append(hi)
            if hi > lo:
                x -= lo
                x *= 255.0 / (hi - lo)
                np.clip(x, 0.0, 255.0, out=x)
                x[np.isnan(x)] = 0.0
            else:
                x = np.zeros_like(x)
            chans.append(x)
    rule = None
    if len(chans) == 2:
        rule = cfg.dual_pol
        vv, vh = chans
        third = {"vv,vh,mean": lambda: (vv + vh) / 2.0, "vv,vh,ratio": lambda: np.clip(vv - vh + 127.5, 0, 255)}
        chans = [vv, vv, vh] if rule == "vv,vv,vh" else [vv, vh, third[rule]()]
    u8 = [np.rint(c).astype(np.uint8) for c in chans[:3]]
    rgb = np.stack(u8 * 3 if len(u8) == 1 else u8, axis=-1)
    params = asdict(cfg)
    params.update({"lows": lows, "highs": highs, "bands": int(bands.shape[0]), "band_rule": rule})
    if lows is None:
        params.update({"db": False, "low_pct": None, "high_pct": None})
    return rgb, params


def _percentiles(band: np.ndarray, cfg: StretchConfig) -> tuple[float, float]:
    finite = np.isfinite(band)
    values = band if finite.all() else band[finite]
    if values.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(values, [cfg.low_pct, cfg.high_pct])
    return float(lo), float(hi)


def decode_image(image_bytes: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Stored image bytes -> (H, W, 3) uint8, refusing more than ``max_pixels`` before decoding."""
    try:
        with Image.open(io.BytesIO(image_bytes)) as im:
            _check_pixels(im.size[0], im.size[1], max_pixels, "image bytes")
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except ImageTooLargeError:
        raise
    except Exception as exc:
        raise ImageReadError(f"cannot decode image bytes ({exc})") from None
