"""Write the binary mask as a GeoTIFF aligned with the window that was read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from think2seg.errors import OutputError
from think2seg.output.atomic import atomic_output
from think2seg.result import SegmentationResult

MASK_NODATA = 255
"""Value of nodata pixels in the mask file; target pixels are 1, background 0."""


def write_mask_geotiff(result: SegmentationResult, path: Path, *, overwrite: bool = False) -> None:
    """Write ``result.mask`` (1 target, 0 background, 255 nodata) with the tile's transform and CRS."""
    tile = result.tile
    data = np.where(tile.valid, result.mask.astype(np.uint8), MASK_NODATA).astype(np.uint8)
    profile = {
        "driver": "GTiff",
        "width": tile.width,
        "height": tile.height,
        "count": 1,
        "dtype": "uint8",
        "nodata": MASK_NODATA,
        "transform": tile.transform,
        "crs": tile.crs,
        "compress": "deflate",
    }
    if tile.width >= 256 and tile.height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with atomic_output(path, overwrite=overwrite) as temporary:
        try:
            with rasterio.open(temporary, "w", **profile) as dst:
                dst.write(data, 1)
                dst.update_tags(question=result.question, status=result.status.value, model=result.model)
        except (RasterioError, OSError) as exc:
            raise OutputError(f"cannot write {path}: {exc}") from exc
