"""Build a :class:`~think2seg.tile.Tile` from an in-memory array and its georeference."""

from __future__ import annotations

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from think2seg.errors import InputError, MissingCRSError
from think2seg.geo.bands import BandChoice, finite_mask, to_rgb
from think2seg.tile import Tile


def tile_from_array(
    array: np.ndarray,
    *,
    transform: Affine,
    crs: CRS | str | int | None,
    valid: np.ndarray | None = None,
    nodata: float | None = None,
    pixel_coords: bool = False,
    source: str = "<array>",
) -> Tile:
    """Wrap an image array as a tile.

    ``array`` is channels-last: (H, W) or (H, W, 1) grey, (H, W, 3) RGB, or (H, W, 4) where the
    fourth channel is alpha for uint8 data and ignored otherwise. Any dtype; non-uint8 data is
    stretched like a raster's bands. ``transform`` maps pixel corners to map coordinates in ``crs``
    (a CRS, WKT/"EPSG:n" string or EPSG code). ``valid`` (H, W) bool and ``nodata`` mark missing
    pixels; NaN is always missing. ``crs=None`` needs ``pixel_coords=True``.
    """
    data = _channels_first(np.asarray(array))
    parsed_crs = _parse_crs(crs, pixel_coords)
    mask = finite_mask(data)
    if valid is not None:
        if valid.shape != data.shape[1:]:
            raise InputError(f"valid mask shape {valid.shape} does not match the image {data.shape[1:]}")
        mask &= valid.astype(bool)
    if nodata is not None:
        mask &= ~np.all(data == nodata, axis=0)
    channels = data.shape[0]
    if channels == 4 and data.dtype == np.uint8:
        mask &= data[3] > 0
    choice = BandChoice((1, 2, 3)) if channels >= 3 else BandChoice((1, 1, 1))
    bands = {index: data[index - 1] for index in choice.unique}
    pixels = to_rgb(bands, choice, mask)
    return Tile(pixels, mask, Affine(*transform[:6]), parsed_crs, source)


def _channels_first(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array[np.newaxis]
    if array.ndim == 3 and array.shape[2] in (1, 2, 3, 4):
        return np.moveaxis(array, -1, 0)
    raise InputError(f"expected an (H, W) or (H, W, C) image with C in 1..4, got shape {array.shape}")


def _parse_crs(crs: CRS | str | int | None, pixel_coords: bool) -> CRS | None:
    if pixel_coords:
        return None
    if crs is None:
        raise MissingCRSError("the array has no CRS: pass crs=... or accept pixel coordinates with pixel_coords=True")
    if isinstance(crs, CRS):
        return crs
    try:
        return CRS.from_epsg(crs) if isinstance(crs, int) else CRS.from_user_input(crs)
    except CRSError as exc:
        raise InputError(f"cannot understand the CRS {crs!r}: give an EPSG code or WKT ({exc})") from exc
