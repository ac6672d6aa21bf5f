"""Write the binary mask as a GeoTIFF aligned with the window that was read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from think2seg.errors import OutputError
from think2seg.output.atomic import atomic_output
from think2seg.result import SegmentationResult

MASK_NODATA = 255
"""Value of nodata pixels in the mask file; target pixels are 1, background 0."""


def write_mask_geotiff(
    result: SegmentationResult | Sequence[SegmentationResult], path: Path, *, overwrite: bool = False
) -> None:
    """Write ``result.mask`` (1 target, 0 background, 255 nodata) with the tile's transform and CRS;
    several results of one tile (one per class) become one band each, described by its class."""
    results = [result] if isinstance(result, SegmentationResult) else list(result)
    tile = results[0].tile
    data = np.stack([np.where(tile.valid, r.mask.astype(np.uint8), MASK_NODATA).astype(np.uint8) for r in results])
    profile = {
        "driver": "GTiff",
        "width": tile.width,
        "height": tile.height,
        "count": len(results),
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
                dst.write(data)
                first = results[0]
                dst.update_tags(question=first.question, status=first.status.value, model=first.model)
                for band, r in enumerate(results, start=1):
                    dst.set_band_description(band, r.class_name or r.question)
                    dst.update_tags(band, question=r.question, status=r.status.value)
        except (RasterioError, OSError) as exc:
            raise OutputError(f"cannot write {path}: {exc}") from exc
