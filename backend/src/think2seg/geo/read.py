"""Read windows of any GDAL raster into :class:`~think2seg.tile.Tile` objects.

A window is snapped outward to whole pixels of the read grid, so the tile's transform is exactly
the grid's transform at the window's offset (scaled when the window is read decimated). The grid is
the raster's own, or one of a chosen ground resolution (``resolution_m``) over the same origin.
Rasters may be local files, URLs, web services or STAC items (:mod:`think2seg.geo.remote`). Nodata,
alpha and NaN pixels are marked invalid and excluded from the stretch statistics.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from think2seg.errors import BoundsError, InputError, MissingCRSError, RasterError, RasterNotFoundError
from think2seg.geo.bands import StretchLimits, choose_bands, finite_mask, stretch_limits, to_rgb
from think2seg.geo.remote import (
    NATIVE_GRID,
    SERVICE_DRIVERS,
    RasterLocation,
    ReadGrid,
    check_resolution_m,
    locate,
    open_error,
    read_error,
    read_grid,
    short_name,
)
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
    resolution_m: float | None = None,
    stac_asset: str | None = None,
) -> Tile:
    """Read ``bounds`` (minx, miny, maxx, maxy in the raster's CRS) or the whole raster.

    ``path`` is a local file, an http(s) URL or ``/vsi`` path, a GDAL WMS/WMTS description (``.xml``,
    ``WMTS:...``) or a STAC Item JSON (``stac_asset`` picks its asset; see
    :func:`~think2seg.geo.remote.locate`). ``resolution_m`` (ground metres per pixel; required for
    web services) reads the window on a grid of that resolution, converted into map units at the
    centre of ``bounds`` (see :class:`RasterSource`). Windows whose longer side exceeds
    ``max_side_px`` are read decimated (average resampling) with the transform scaled to match. With
    ``pixel_coords`` the raster's georeference is ignored and map coordinates are source pixel
    coordinates (x = column, y = row, y down); bounds are then given in those coordinates too.
    Raises :class:`RasterError`, :class:`MissingCRSError`, :class:`BoundsError` or
    :class:`InputError` with a message that says what to do.
    """
    at_xy = None
    if bounds is not None and resolution_m is not None:
        minx, miny, maxx, maxy = check_bounds(bounds)
        at_xy = ((minx + maxx) / 2, (miny + maxy) / 2)
    with RasterSource(
        path, pixel_coords=pixel_coords, resolution_m=resolution_m, stac_asset=stac_asset, resolution_at_xy=at_xy
    ) as source:
        window, notes = source.window_for(bounds)
        return source.read(window, max_side_px=max_side_px, notes=notes)


@dataclass(frozen=True)
class RasterSpec:
    """What :class:`RasterSource` was opened with, so another thread or process can open the same
    raster on the same read grid (picklable: plain values)."""

    path: str | os.PathLike[str]
    pixel_coords: bool = False
    resolution_m: float | None = None
    stac_asset: str | None = None
    resolution_at_xy: tuple[float, float] | None = None

    def open(self) -> RasterSource:
        return RasterSource(
            self.path,
            pixel_coords=self.pixel_coords,
            resolution_m=self.resolution_m,
            stac_asset=self.stac_asset,
            resolution_at_xy=self.resolution_at_xy,
        )


class RasterSource:
    """An open raster for repeated window reads. Not thread-safe: read from one thread at a time.

    ``transform`` maps pixel corners of the read grid to map coordinates in ``crs`` (identity and
    None when the caller accepted pixel coordinates). The read grid is the raster's own, or with
    ``resolution_m`` a grid of that ground resolution over the same extent and origin (converted
    into map units at ``resolution_at_xy``, default the raster's centre; see
    :func:`~think2seg.geo.remote.read_grid`): ``width``, ``height``, windows and tiles are then in
    its pixels. Web services (WMS/WMTS/XYZ) need ``resolution_m`` (a STAC item's ``gsd`` stands in).
    ``location`` says where the raster is (:func:`~think2seg.geo.remote.locate`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        pixel_coords: bool = False,
        resolution_m: float | None = None,
        stac_asset: str | None = None,
        resolution_at_xy: tuple[float, float] | None = None,
    ) -> None:
        if resolution_m is not None:
            resolution_m = check_resolution_m(resolution_m)
            if pixel_coords:
                raise InputError("--resolution-m needs a georeferenced raster: drop it or --pixel-coords")
        self.spec = RasterSpec(path, pixel_coords, resolution_m, stac_asset, resolution_at_xy)
        self.location = locate(path, stac_asset=stac_asset)
        self._env_options = self.location.gdal_options()
        self._dataset = _open(self.location, self._env_options)
        try:
            grid = self._check(pixel_coords, resolution_m, resolution_at_xy)
        except (RasterError, MissingCRSError, InputError):
            self._dataset.close()
            raise
        self._grid = grid
        native = Affine.identity() if pixel_coords else self._dataset.transform
        self.transform = native @ Affine.scale(*grid.scale_xy)
        self.crs = None if pixel_coords else self._dataset.crs
        fx, fy = grid.scale_xy
        self.width = max(1, math.floor(self._dataset.width / fx + _SNAP_TOLERANCE_PX))
        self.height = max(1, math.floor(self._dataset.height / fy + _SNAP_TOLERANCE_PX))
        self.dtypes = tuple(self._dataset.dtypes)
        self._bands = choose_bands(self._dataset.colorinterp)
        stac = (self.location.stac.note,) if self.location.stac else ()
        self.notes: tuple[str, ...] = stac + ((grid.note,) if grid.note else ())
        """Remarks on every tile: the STAC asset read, the resolution chosen."""

    def _check(self, pixel_coords: bool, resolution_m: float | None, at_xy: tuple[float, float] | None) -> ReadGrid:
        """Check the raster and return the grid it is read at."""
        service = self._dataset.driver in SERVICE_DRIVERS
        if not service:
            _probe(self._dataset, self.location)
        if not pixel_coords:
            _check_georeference(self._dataset, self.location.label)
        if service and resolution_m is None:
            resolution_m = self.location.stac.gsd_m if self.location.stac else None
            if resolution_m is None:
                raise InputError(
                    f"{self.location.label} is a {self._dataset.driver} web service: its tiles come at every zoom "
                    "level and it has no ground resolution of its own, so add --resolution-m M (metres per pixel "
                    "of the window read, e.g. --resolution-m 1) and --bounds around the area"
                )
        if resolution_m is None:
            return NATIVE_GRID
        src = self._dataset
        centre = at_xy or tuple(src.transform @ (src.width / 2, src.height / 2))
        return read_grid(src.transform, src.crs, resolution_m=resolution_m, at_xy=centre, service=service)

    @property
    def path(self) -> Path:
        """The local raster file. A URL, a service or a remote STAC asset has none: use ``location``."""
        if not self.location.is_local:
            raise RasterError(
                f"{self.location.label} is not a local file: this step needs a raster on disk; download it first"
            )
        return Path(self.location.gdal_path)

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
        return window_for_bounds(bounds, self.transform, self.width, self.height, self.location.name)

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
        bands, valid = self._read_bands(window, out_w, out_h)
        colormap = self._dataset.colormap(1) if self._bands.palette else None
        pixels = to_rgb(bands, self._bands, valid, colormap=colormap, limits=limits)
        scale = (window.width / out_w, window.height / out_h)
        transform = self.transform @ Affine.translation(window.col_off, window.row_off) @ Affine.scale(*scale)
        notes = self.notes + notes
        if scale != (1.0, 1.0):
            notes = notes + (decimation_note("window", window, (out_w, out_h), max_side_px),)
        return Tile(pixels, valid, transform, self.crs, self.location.label, window, scale, notes)

    def stretch_limits(self, window: Window, *, sample_side_px: int = 1024) -> StretchLimits:
        """Stretch limits of ``window`` from a decimated read, so every tile of a run shares them.

        Empty for 8-bit and palette rasters, which are not stretched (nothing is read then).
        """
        if self._bands.palette or all(self.dtypes[i - 1] == "uint8" for i in self._bands.unique):
            return {}
        out_w, out_h = decimated_shape(window, sample_side_px)
        bands, valid = self._read_bands(window, out_w, out_h)
        return stretch_limits(bands, valid)

    def _read_bands(self, window: Window, out_w: int, out_h: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
        """Bands and validity of ``window`` (read-grid pixels) at (out_h, out_w)."""
        source = self._source_window(window)
        indexes = self._bands.unique
        try:
            with _read_env(self._env_options):
                data = self._dataset.read(
                    indexes,
                    window=source,
                    out_shape=(len(indexes), out_h, out_w),
                    resampling=_resampling(source, out_w, out_h),
                )
                valid = self._dataset.dataset_mask(window=source, out_shape=(out_h, out_w)) > 0
        except RasterioError as exc:
            if self.location.is_local and self._dataset.driver not in SERVICE_DRIVERS:
                raise RasterError(
                    f"cannot read {self.location.label}: {exc}; the file may be damaged, check it with gdalinfo"
                ) from exc
            raise read_error(self.location, exc) from exc
        valid &= finite_mask(data)
        return dict(zip(indexes, data)), valid

    def _source_window(self, window: Window) -> Window:
        """``window`` of the read grid in source pixels (fractional when the grid is resampled)."""
        if self._grid.is_native:
            return window
        fx, fy = self._grid.scale_xy
        col, row = window.col_off * fx, window.row_off * fy
        width = min(window.width * fx, self._dataset.width - col)
        height = min(window.height * fy, self._dataset.height - row)
        return Window(col, row, width, height)


def _resampling(source: Window, out_w: int, out_h: int) -> Resampling:
    """Average when any axis is reduced, bilinear when both are enlarged, else pixels as they are."""
    if out_w < source.width - _SNAP_TOLERANCE_PX or out_h < source.height - _SNAP_TOLERANCE_PX:
        return Resampling.average
    if out_w > source.width + _SNAP_TOLERANCE_PX or out_h > source.height + _SNAP_TOLERANCE_PX:
        return Resampling.bilinear
    return Resampling.nearest


def _read_env(remote: dict[str, str]) -> rasterio.Env:
    """Decode blocks on all cores; keep GDAL's block cache small (tiles are read about once), so
    memory does not grow with the raster; with ``remote``'s HTTP settings. An explicit GDAL_CACHEMAX
    in the environment wins."""
    options: dict[str, str | int] = {"GDAL_NUM_THREADS": "ALL_CPUS", **remote}
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
    minx, miny, maxx, maxy = check_bounds(bounds)
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


def _open(location: RasterLocation, env_options: dict[str, str]) -> rasterio.DatasetReader:
    path = Path(location.gdal_path)
    if location.is_local and not path.exists():
        what = "the STAC asset " if location.stac else ""
        raise RasterNotFoundError(f"{what}{path} does not exist: check the path")
    if location.is_local and path.is_dir():
        raise RasterError(f"{path} is a folder: give the path of a raster file (GeoTIFF, JPEG2000, VRT...)")
    try:
        with warnings.catch_warnings(), rasterio.Env(**env_options):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(location.gdal_path)
    except RasterioError as exc:
        if not location.is_local or path.suffix.lower() == ".xml":
            raise open_error(location, exc) from exc
        raise RasterError(
            f"{path} is not a raster GDAL can read ({_first_line(exc)}): give a GeoTIFF or another GDAL raster"
        ) from exc


def _check_georeference(src: rasterio.DatasetReader, label: str) -> None:
    pixels_instead = "or accept pixel coordinates with --pixel-coords"
    name = short_name(label)
    if src.gcps[0]:
        raise MissingCRSError(
            f"{label} is georeferenced by ground control points only: warp it first "
            f"(gdalwarp -t_srs EPSG:XXXX {name} warped.tif) {pixels_instead}"
        )
    if src.crs is None:
        raise MissingCRSError(f"{label} has no CRS: assign one (gdal_edit.py -a_srs EPSG:XXXX {name}) {pixels_instead}")
    if src.transform.is_identity:
        raise MissingCRSError(
            f"{label} has a CRS but no geotransform, so its pixels have no map position: "
            f"georeference it (gdal_edit.py -a_ullr ULX ULY LRX LRY {name}) {pixels_instead}"
        )


def _probe(src: rasterio.DatasetReader, location: RasterLocation) -> None:
    """Read the first and last pixel, so a truncated or damaged file fails here with a clear message."""
    if src.count == 0:
        raise RasterError(f"{location.label} holds no raster bands: give a raster with 1, 3 or 4 bands")
    try:
        with rasterio.Env(**location.gdal_options()):
            for col, row in ((0, 0), (src.width - 1, src.height - 1)):
                src.read(1, window=Window(col, row, 1, 1))
    except RasterioError as exc:
        if not location.is_local:
            raise read_error(location, exc) from exc
        raise RasterError(
            f"{location.label} is damaged ({_first_line(exc)}): check it with gdalinfo, or re-export it"
        ) from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_bounds(bounds: Sequence[float]) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) as floats; a :class:`BoundsError` unless four finite numbers with min < max."""
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
