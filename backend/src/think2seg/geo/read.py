"""Read a window of any GDAL raster into a :class:`~think2seg.tile.Tile`.

The window is snapped outward to whole source pixels, so the tile's transform is exactly the
source transform at the window's offset (scaled when the window is read decimated). Nodata, alpha
and NaN pixels are marked invalid and excluded from the stretch statistics.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from think2seg.errors import BoundsError, InputError, MissingCRSError, RasterError
from think2seg.geo.bands import choose_bands, finite_mask, to_rgb
from think2seg.tile import Tile

DEFAULT_MAX_SIDE_PX = 2048
_SNAP_TOLERANCE_PX = 1e-6


def read_tile(
    path: str | os.PathLike[str],
    *,
    bounds: Sequence[float] | None = None,
    max_side_px: int = DEFAULT_MAX_SIDE_PX,
    pixel_coords: bool = False,
) -> Tile:
    """Read ``bounds`` (minx, miny, maxx, maxy in the raster's CRS) or the whole raster.

    Windows whose longer side exceeds ``max_side_px`` are read decimated (average resampling) with
    the transform scaled to match. With ``pixel_coords`` the raster's georeference is ignored and
    map coordinates are source pixel coordinates (x = column, y = row, y down); bounds are then
    given in those coordinates too. Raises :class:`RasterError`, :class:`MissingCRSError` or
    :class:`BoundsError` with a message that says what to do.
    """
    if max_side_px < 1:
        raise InputError(f"max_side_px must be at least 1, got {max_side_px}")
    path = Path(path)
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), _open(path) as src:  # parallel block decoding
        _probe(src, path)
        if not pixel_coords:
            _check_georeference(src, path)
        base = Affine.identity() if pixel_coords else src.transform
        crs = None if pixel_coords else src.crs
        window, notes = _window(bounds, base, src.width, src.height, path)
        out_w, out_h = _out_shape(window, max_side_px)
        try:
            return _read(src, window, (out_w, out_h), base, crs, str(path), notes, max_side_px)
        except RasterioError as exc:
            raise RasterError(f"cannot read {path}: {exc}; the file may be damaged, check it with gdalinfo") from exc


def _open(path: Path) -> rasterio.DatasetReader:
    if not path.exists():
        raise RasterError(f"{path} does not exist: check the path")
    if path.is_dir():
        raise RasterError(f"{path} is a folder: give the path of a raster file (GeoTIFF, JPEG2000, VRT...)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as exc:
        raise RasterError(
            f"{path} is not a raster GDAL can read ({_first_line(exc)}): give a GeoTIFF or another GDAL raster"
        ) from exc


def _check_georeference(src: rasterio.DatasetReader, path: Path) -> None:
    pixels_instead = "or accept pixel coordinates with --pixel-coords"
    if src.gcps[0]:
        raise MissingCRSError(
            f"{path} is georeferenced by ground control points only: warp it first "
            f"(gdalwarp -t_srs EPSG:XXXX {path.name} warped.tif) {pixels_instead}"
        )
    if src.crs is None:
        raise MissingCRSError(f"{path} has no CRS: assign one (gdal_edit.py -a_srs EPSG:XXXX {path.name}) {pixels_instead}")
    if src.transform.is_identity:
        raise MissingCRSError(
            f"{path} has a CRS but no geotransform, so its pixels have no map position: "
            f"georeference it (gdal_edit.py -a_ullr ULX ULY LRX LRY {path.name}) {pixels_instead}"
        )


def _probe(src: rasterio.DatasetReader, path: Path) -> None:
    """Read the first and last pixel, so a truncated or damaged file fails here with a clear message."""
    if src.count == 0:
        raise RasterError(f"{path} holds no raster bands: give a raster with 1, 3 or 4 bands")
    try:
        for col, row in ((0, 0), (src.width - 1, src.height - 1)):
            src.read(1, window=Window(col, row, 1, 1))
    except RasterioError as exc:
        raise RasterError(f"{path} is damaged ({_first_line(exc)}): check it with gdalinfo, or re-export it") from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _window(
    bounds: Sequence[float] | None, transform: Affine, width: int, height: int, path: Path
) -> tuple[Window, tuple[str, ...]]:
    if bounds is None:
        return Window(0, 0, width, height), ()
    minx, miny, maxx, maxy = _check_bounds(bounds)
    inverse = ~transform
    cols, rows = zip(*(inverse @ (x, y) for x in (minx, maxx) for y in (miny, maxy)))
    col0 = math.floor(min(cols) + _SNAP_TOLERANCE_PX)
    row0 = math.floor(min(rows) + _SNAP_TOLERANCE_PX)
    col1 = math.ceil(max(cols) - _SNAP_TOLERANCE_PX)
    row1 = math.ceil(max(rows) - _SNAP_TOLERANCE_PX)
    c0, r0, c1, r1 = max(col0, 0), max(row0, 0), min(col1, width), min(row1, height)
    if c1 <= c0 or r1 <= r0:
        extent = _extent(transform, width, height)
        raise BoundsError(
            f"bounds {list(bounds)} lie outside {path.name}, whose extent is {extent} in its CRS: "
            "give bounds that overlap the raster"
        )
    notes = ()
    if (c0, r0, c1, r1) != (col0, row0, col1, row1):
        notes = ("the bounds reach past the raster's edge; the window was clipped to the raster",)
    return Window(c0, r0, c1 - c0, r1 - r0), notes


def _check_bounds(bounds: Sequence[float]) -> tuple[float, float, float, float]:
    values = list(bounds)
    if len(values) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise BoundsError(f"bounds must be four finite numbers MINX MINY MAXX MAXY, got {values}")
    minx, miny, maxx, maxy = (float(v) for v in values)
    if maxx <= minx or maxy <= miny:
        raise BoundsError(f"bounds must have MINX < MAXX and MINY < MAXY, got {values}")
    return minx, miny, maxx, maxy


def _extent(transform: Affine, width: int, height: int) -> list[float]:
    xs, ys = zip(*(transform @ (c, r) for c in (0, width) for r in (0, height)))
    return [round(v, 6) for v in (min(xs), min(ys), max(xs), max(ys))]


def _out_shape(window: Window, max_side_px: int) -> tuple[int, int]:
    width, height = int(window.width), int(window.height)
    factor = max(width, height) / max_side_px
    if factor <= 1:
        return width, height
    return max(1, round(width / factor)), max(1, round(height / factor))


def _read(
    src: rasterio.DatasetReader,
    window: Window,
    out_wh: tuple[int, int],
    base: Affine,
    crs: CRS | None,
    source: str,
    notes: tuple[str, ...],
    max_side_px: int,
) -> Tile:
    out_w, out_h = out_wh
    scale = (window.width / out_w, window.height / out_h)
    decimated = scale != (1.0, 1.0)
    choice = choose_bands(src.colorinterp)
    data = src.read(
        choice.unique,
        window=window,
        out_shape=(len(choice.unique), out_h, out_w),
        resampling=Resampling.average if decimated else Resampling.nearest,
    )
    valid = src.dataset_mask(window=window, out_shape=(out_h, out_w)) > 0
    valid &= finite_mask(data)
    colormap = src.colormap(1) if choice.palette else None
    pixels = to_rgb(dict(zip(choice.unique, data)), choice, valid, colormap)
    transform = base @ Affine.translation(window.col_off, window.row_off) @ Affine.scale(*scale)
    if decimated:
        notes = notes + (
            f"the {int(window.width)}x{int(window.height)} px window is larger than max_side_px "
            f"{max_side_px}: read decimated to {out_w}x{out_h} px ({scale[0]:.3g}x coarser)",
        )
    return Tile(pixels, valid, transform, crs, source, window, scale, notes)
