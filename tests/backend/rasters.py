"""Small generated rasters for the tests (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp

UTM_TRANSFORM = Affine(0.5, 0, 512000.0, 0, -0.5, 5262000.0)


def scene(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """(3, H, W) uint8 smooth RGB content."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)), (xx + yy) % 256])
    return (base + rng.integers(0, 8, base.shape)).clip(0, 255).astype(np.uint8)


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:32633",
    transform: Affine = UTM_TRANSFORM,
    nodata: float | None = None,
    colorinterp: list[ColorInterp] | None = None,
    **profile: object,
) -> Path:
    """Write a (bands, H, W) array as a GeoTIFF."""
    if data.ndim == 2:
        data = data[np.newaxis]
    options = {
        "driver": "GTiff",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype,
        "transform": transform,
        "nodata": nodata,
    }
    if crs is not None:
        options["crs"] = crs
    options.update(profile)
    with rasterio.open(path, "w", **options) as dst:
        dst.write(data)
        if colorinterp is not None:
            dst.colorinterp = colorinterp
    return path
