"""What a batch run covers: the raster, optional bounds, and an optional area of interest (AOI)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import pyogrio
import shapely
from pyogrio.errors import DataSourceError
from rasterio.crs import CRS
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from think2seg.errors import BoundsError, InputError
from think2seg.geo.read import RasterSource, window_for_bounds


def load_aoi(path: str | os.PathLike[str], raster_crs: CRS | None) -> BaseGeometry:
    """The union of the polygons in a vector file (GeoPackage, GeoJSON, ...), in the raster's CRS.

    The AOI is reprojected when its CRS differs (it is an input, not an output).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"the AOI file {path} does not exist: give a GeoPackage or GeoJSON with polygons")
    try:
        frame = pyogrio.read_dataframe(path)
    except DataSourceError as exc:
        raise InputError(f"cannot read the AOI {path} ({exc}): give a GeoPackage or GeoJSON with polygons") from exc
    polygons = frame[frame.geometry.notna() & frame.geom_type.isin(["Polygon", "MultiPolygon"])]
    if polygons.empty:
        raise InputError(f"the AOI {path} holds no polygons: draw the area of interest as polygons")
    if raster_crs is not None:
        if polygons.crs is None:
            raise InputError(f"the AOI {path} has no CRS: save it with one (the raster's is {raster_crs.to_string()})")
        polygons = polygons.to_crs(raster_crs.to_wkt())
    aoi = shapely.make_valid(polygons.geometry.union_all())
    if aoi.is_empty or aoi.area == 0:
        raise InputError(f"the AOI {path} has no area")
    return aoi


def batch_region(
    source: RasterSource, *, bounds: Sequence[float] | None = None, aoi: BaseGeometry | None = None
) -> Window:
    """The window a batch run covers: the raster, cut to ``bounds`` and to the AOI's extent."""
    region = source.full_window
    if bounds is not None:
        region, _notes = source.window_for(bounds)
    if aoi is not None:
        aoi_window, _notes = window_for_bounds(aoi.bounds, source.transform, source.width, source.height, "the raster")
        region = _intersection(region, aoi_window)
    return region


def _intersection(a: Window, b: Window) -> Window:
    col0, row0 = max(a.col_off, b.col_off), max(a.row_off, b.row_off)
    col1 = min(a.col_off + a.width, b.col_off + b.width)
    row1 = min(a.row_off + a.height, b.row_off + b.height)
    if col1 <= col0 or row1 <= row0:
        raise BoundsError("the AOI does not overlap the requested bounds: give bounds and an AOI that meet")
    return Window(col0, row0, col1 - col0, row1 - row0)


def aoi_fingerprint(aoi: BaseGeometry | None) -> str | None:
    """A short, stable identity of the AOI for comparing runs (hash of its normalized WKT)."""
    if aoi is None:
        return None
    wkt = shapely.to_wkt(shapely.normalize(aoi), rounding_precision=6)
    return hashlib.sha256(wkt.encode()).hexdigest()[:16]
