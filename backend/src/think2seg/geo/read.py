"""Read windows of any GDAL raster into :class:`~think2seg.tile.Tile` objects.

A window is snapped outward to whole source pixels, so the tile's transform is exactly the source
transform at the window's offset (scaled when the window is read decimated). Nodata, alpha and NaN
pixels are marked invalid and excluded from the stretch statistics.
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
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from think2seg.errors import BoundsError, InputError, MissingCRSError, RasterError, RasterNotFoundError
from think2seg.geo.bands import StretchLimits, choose_bands, finite_mask, stretch_limits, to_rgb
from think2seg.options import MAX_SIDE_PX
from think2seg.tile import Tile

DEFAULT_MAX_SIDE_PX = MAX_SIDE_PX.default
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
    with RasterSource(path, pixel_coords=pixel_coords) as source:
        window, notes = source.window_for(bounds)
        return source.read(window, max_side_px=max_side_px, notes=notes)


class RasterSource:
    """An open raster for repeated window reads. Not thread-safe: read from one thread at a time.

    ``transform`` maps source pixel corners to map coordinates in ``crs`` (identity and None when
    the caller accepted pixel coordinates).
    """

    def __init__(self, path: str | os.PathLike[str], *, pixel_coords: bool = False) -> None:
        self.path = Path(path).expanduser().absolute()
        self._dataset = _open(self.path)
        try:
            _probe(self._dataset, self.path)
            if not pixel_coords:
                _check_georeference(self._dataset, self.path)
        except RasterError:
            self._dataset.close()
            raise
        self.transform = Affine.identity() if pixel_coords else self._dataset.transform
        self.crs = None if pixel_coords else self._dataset.crs
        self.width, self.height = self._dataset.width, self._dataset.height
        self.dtypes = tuple(self._dataset.dtypes)
        self._bands = choose_bands(self._dataset.colorinterp)

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._dataset.close()

    @property
    def full_window(self) -> Window:
        return Window(0, 0, self.width, self.height)

    def window_for(self, bounds: Sequence[float] | None) -> tuple[Window, tuple[str, ...]]:
        """The whole-pixel window covering ``bounds`` (or the raster), and notes about clipping."""
        if bounds is None:
            return self.full_window, ()
        return window_for_bounds(bounds, self.transform, self.width, self.height, self.path.name)

    def read(
        self,
        window: Window,
        *,
        max_side_px: int | None = None,
        limits: StretchLimits | None = None,
        notes: tuple[str, ...] = (),
    ) -> Tile:
        """Read ``window`` (decimated beyond ``max_side_px``); ``limits`` fixes the stretch."""
        out_w, out_h = decimated_shape(window, max_side_px)
        try:
            with _read_env():
                bands, valid = self._read_bands(window, out_w, out_h)
        except RasterioError as exc:
            raise RasterError(
                f"cannot read {self.path}: {exc}; the file may be damaged, check it with gdalinfo"
            ) from exc
        colormap = self._dataset.colormap(1) if self._bands.palette else None
        pixels = to_rgb(bands, self._bands, valid, colormap=colormap, limits=limits)
        scale = (window.width / out_w, window.height / out_h)
        transform = self.transform @ Affine.translation(window.col_off, window.row_off) @ Affine.scale(*scale)
        if scale != (1.0, 1.0):
            notes = notes + (decimation_note("window", window, (out_w, out_h), max_side_px),)
        return Tile(pixels, valid, transform, self.crs, str(self.path), window, scale, notes)

    def stretch_limits(self, window: Window, *, sample_side_px: int = 1024) -> StretchLimits:
        """Stretch limits of ``window`` from a decimated read, so every tile of a run shares them.

        Empty for 8-bit and palette rasters, which are not stretched (nothing is read then).
        """
        if self._bands.palette or all(self.dtypes[i - 1] == "uint8" for i in self._bands.unique):
            return {}
        out_w, out_h = decimated_shape(window, sample_side_px)
        with _read_env():
            bands, valid = self._read_bands(window, out_w, out_h)
        return stretch_limits(bands, valid)

    def _read_bands(self, window: Window, out_w: int, out_h: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
        decimated = (out_w, out_h) != (int(window.width), int(window.height))
        indexes = self._bands.unique
        data = self._dataset.read(
            indexes,
            window=window,
            out_shape=(len(indexes), out_h, out_w),
            resampling=Resampling.average if decimated else Resampling.nearest,
        )
        valid = self._dataset.dataset_mask(window=window, out_shape=(out_h, out_w)) > 0
        valid &= finite_mask(data)
        return dict(zip(indexes, data)), valid


def _read_env() -> rasterio.Env:
    """Decode blocks on all cores; keep GDAL's block cache small (tiles are read about once), so
    memory does not grow with the raster. An explicit GDAL_CACHEMAX in the environment wins."""
    options: dict[str, str | int] = {"GDAL_NUM_THREADS": "ALL_CPUS"}
    if "GDAL_CACHEMAX" not in os.environ:
        options["GDAL_CACHEMAX"] = READ_CACHE_BYTES
    return rasterio.Env(**options)


READ_CACHE_BYTES = 128 * 2**20  # rasterio passes integers to GDAL as bytes


def window_for_bounds(
    bounds: Sequence[float], transform: Affine, width: int, height: int, name: str
) -> tuple[Window, tuple[str, ...]]:
    """The window of whole pixels covering ``bounds`` (map units), clipped to the raster.

    Raises :class:`BoundsError` when the bounds are malformed or miss the raster.
    """
    minx, miny, maxx, maxy = _check_bounds(bounds)
    inverse = ~transform
    cols, rows = zip(*(inverse @ (x, y) for x in (minx, maxx) for y in (miny, maxy)))
    col0 = math.floor(min(cols) + _SNAP_TOLERANCE_PX)
    row0 = math.floor(min(rows) + _SNAP_TOLERANCE_PX)
    col1 = math.ceil(max(cols) - _SNAP_TOLERANCE_PX)
    row1 = math.ceil(max(rows) - _SNAP_TOLERANCE_PX)
    c0, r0, c1, r1 = max(col0, 0), max(row0, 0), min(col1, width), min(row1, height)
    if c1 <= c0 or r1 <= r0:
        raise BoundsError(
            f"bounds {list(bounds)} lie outside {name}, whose extent is {_extent(transform, width, height)} "
            "in its CRS: give bounds that overlap the raster"
        )
    notes: tuple[str, ...] = ()
    if (c0, r0, c1, r1) != (col0, row0, col1, row1):
        notes = ("the bounds reach past the raster's edge; the window was clipped to the raster",)
    return Window(c0, r0, c1 - c0, r1 - r0), notes


def _open(path: Path) -> rasterio.DatasetReader:
    if not path.exists():
        raise RasterNotFoundError(f"{path} does not exist: check the path")
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
        raise MissingCRSError(
            f"{path} has no CRS: assign one (gdal_edit.py -a_srs EPSG:XXXX {path.name}) {pixels_instead}"
        )
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


def decimation_note(what: str, window: Window, shape: tuple[int, int], max_side_px: int | None) -> str:
    """The note telling the user that ``window`` (a window, an upload) was read at ``shape``."""
    width, height = int(window.width), int(window.height)
    return (
        f"the {width}x{height} px {what} is larger than max_side_px {max_side_px}: read decimated to "
        f"{shape[0]}x{shape[1]} px ({width / shape[0]:.3g}x coarser)"
    )


def decimated_shape(window: Window, max_side_px: int | None) -> tuple[int, int]:
    """(width, height) of ``window`` read with its longer side at most ``max_side_px``."""
    width, height = int(window.width), int(window.height)
    if max_side_px is None:
        return width, height
    if max_side_px < 1:
        raise InputError(f"max_side_px must be at least 1, got {max_side_px}")
    factor = max(width, height) / max_side_px
    if factor <= 1:
        return width, height
    return max(1, round(width / factor)), max(1, round(height / factor))
