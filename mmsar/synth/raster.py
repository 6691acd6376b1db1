"""Image files: 8-bit PNG (dB-scaled) or uint16 / float32 GeoTIFF with a geotransform and the gsd.

Files go to a temporary name beside the target and are renamed when complete.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from mmsar.synth.clutter import to_db8, to_uint16

EXTENSIONS = {"uint8": ".png", "uint16": ".tif", "float32": ".tif"}
CRS = "EPSG:32631"  # a UTM zone: metres, so the geotransform's pixel size is the gsd
ORIGIN = (500000.0, 5000000.0)


def _tmp_beside(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_png(path: Path, intensity: np.ndarray) -> None:
    tmp = _tmp_beside(path)
    try:
        Image.fromarray(to_db8(intensity), mode="L").save(tmp, format="PNG", compress_level=0)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_geotiff(path: Path, intensity: np.ndarray, dtype: str, gsd: float, looks: int) -> None:
    """uint16: amplitude ``DN = 2000 * sqrt(I)``; float32: linear intensity itself."""
    import rasterio
    from affine import Affine

    data = to_uint16(intensity) if dtype == "uint16" else intensity.astype(np.float32, copy=False)
    h, w = data.shape
    tmp = _tmp_beside(path)
    try:
        with rasterio.open(
            tmp,
            "w",
            driver="GTiff",
            width=w,
            height=h,
            count=1,
            dtype=dtype,
            crs=CRS,
            transform=Affine(gsd, 0.0, ORIGIN[0], 0.0, -gsd, ORIGIN[1]),
            compress="deflate",
            zlevel=1,
            tiled=True,
            blockxsize=256,
            blockysize=256,
        ) as dst:
            dst.write(data, 1)
            dst.update_tags(
                GSD=f"{gsd:g}",
                LOOKS=str(looks),
                QUANTITY=("amplitude DN = 2000*sqrt(intensity)" if dtype == "uint16" else "linear intensity"),
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_image(path: Path, intensity: np.ndarray, dtype: str, gsd: float, looks: int) -> None:
    if dtype == "uint8":
        write_png(path, intensity)
    else:
        write_geotiff(path, intensity, dtype, gsd, looks)
