"""One grid for two dates: BEFORE's pixels over the extent both rasters cover, AFTER resampled onto it.

Change is measured on BEFORE's own grid (its CRS, transform and resolution), restricted to the
common extent: the whole-pixel window of BEFORE that covers AFTER's footprint (densified and
transformed into BEFORE's CRS) intersected with BEFORE's. AFTER is resampled onto exactly that
window through a GDAL warped VRT (:func:`write_after_vrt`), whatever its CRS, so both dates'
polygons come out in BEFORE's CRS on the same pixel edges. The resampling method and the grid go
into the output's ``runs`` table (:meth:`Alignment.describe`): the reprojection is explicit, never
silent.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry import Polygon

from think2seg.errors import BoundsError, InputError, MissingCRSError, RasterError
from think2seg.geo.read import RasterSource, check_bounds, window_for_bounds
from think2seg.geo.reproject import Reprojection, crs_label

RESAMPLING_METHODS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode")
DEFAULT_RESAMPLING = "bilinear"
"""Bilinear: continuous imagery without the ringing of cubic/lanczos; on an identical grid it copies pixels exactly."""
_DENSIFY_POINTS_PER_SIDE = 64  # a footprint's straight edges bend when transformed into another CRS


@dataclass(frozen=True)
class RasterFrame:
    """Where a raster's pixels lie: its path, CRS, transform (pixel corners to map) and size in pixels."""

    path: Path
    crs: CRS
    transform: Affine
    width: int
    height: int

    @classmethod
    def open(cls, path: str | os.PathLike[str], role: str) -> RasterFrame:
        """The frame of the ``role`` ("BEFORE", "AFTER") raster; refuses a missing, unreadable or
        ungeoreferenced one (:class:`RasterError`, :class:`MissingCRSError`)."""
        try:
            with RasterSource(path) as source:
                if source.crs is None:  # RasterSource refuses that already; kept for the type checker
                    raise MissingCRSError(f"{source.path} has no CRS")
                return cls(source.path, source.crs, source.transform, source.width, source.height)
        except MissingCRSError as exc:
            reason = str(exc).split(": ", 1)[0]
            raise MissingCRSError(
                f"{role} raster: {reason}: change aligns the two dates by their georeference, so georeference "
                "it first (gdal_edit.py -a_srs EPSG:XXXX, or gdalwarp -t_srs EPSG:XXXX)"
            ) from exc

    def outline(self) -> Polygon:
        """The raster's footprint in its own CRS, densified so that it can be transformed."""
        corners = [self.transform @ xy for xy in ((0, 0), (self.width, 0), (self.width, self.height), (0, self.height))]
        square = Polygon(corners)
        step = max(square.length / 4 / _DENSIFY_POINTS_PER_SIDE, 1e-12)
        return shapely.segmentize(square, step)

    def extent(self) -> list[float]:
        """(minx, miny, maxx, maxy) in the raster's CRS, for messages."""
        return [round(v, 6) for v in self.outline().bounds]


@dataclass(frozen=True)
class Alignment:
    """BEFORE's grid over the common extent (``window`` of BEFORE's pixels), and the area both
    rasters cover (``footprint``, a polygon in BEFORE's CRS, inside the window)."""

    before: RasterFrame
    after: RasterFrame
    window: Window
    footprint: Polygon
    resampling: str = DEFAULT_RESAMPLING

    @property
    def crs(self) -> CRS:
        return self.before.crs

    @property
    def transform(self) -> Affine:
        """Maps the window's pixel corners (col, row) to BEFORE's CRS."""
        return self.before.transform @ Affine.translation(self.window.col_off, self.window.row_off)

    @property
    def width(self) -> int:
        return int(self.window.width)

    @property
    def height(self) -> int:
        return int(self.window.height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the window in BEFORE's CRS."""
        corners = [self.transform @ (c, r) for c in (0, self.width) for r in (0, self.height)]
        xs, ys = zip(*corners)
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def pixel_size(self) -> float:
        """The side of one grid pixel in BEFORE's map units (the square root of its area)."""
        return math.sqrt(abs(self.before.transform.determinant))

    @property
    def same_grid(self) -> bool:
        """Whether AFTER is already on BEFORE's grid (same CRS and pixel edges): resampling copies it."""
        if self.after.crs != self.before.crs:
            return False
        offset = ~self.after.transform @ (self.before.transform @ (0, 0))
        same_pixels = self.after.transform.almost_equals(
            self.before.transform @ Affine.translation(-offset[0], -offset[1])
        )
        return same_pixels and all(abs(v - round(v)) < 1e-6 for v in offset)

    def describe(self) -> dict[str, Any]:
        """The grid and the resampling as the ``runs`` table records them."""
        return {
            "resampling": self.resampling,
            "grid_crs": crs_label(self.crs),
            "grid_crs_wkt": self.crs.to_wkt(),
            "grid_transform": json.dumps([round(v, 12) for v in tuple(self.transform)[:6]]),
            "grid_width": self.width,
            "grid_height": self.height,
            "grid_col_off": int(self.window.col_off),
            "grid_row_off": int(self.window.row_off),
            "common_bounds": json.dumps([round(v, 9) for v in self.footprint.bounds]),
            "before_crs": crs_label(self.before.crs),
            "after_crs": crs_label(self.after.crs),
            "after_on_same_grid": int(self.same_grid),
        }


def align(
    before: str | os.PathLike[str],
    after: str | os.PathLike[str],
    *,
    resampling: str = DEFAULT_RESAMPLING,
    bounds: Sequence[float] | None = None,
) -> Alignment:
    """BEFORE's grid over the extent both rasters cover; with ``bounds`` (minx, miny, maxx, maxy in
    BEFORE's CRS), over the part of that extent inside them.

    Raises :class:`RasterNotFoundError`/:class:`RasterError` for a missing or unreadable raster,
    :class:`MissingCRSError` for one without georeference, :class:`InputError` for an unknown
    ``resampling``, and :class:`BoundsError` (naming both extents and CRSs) when they do not overlap,
    or when ``bounds`` are malformed or miss their common extent.
    """
    check_resampling(resampling)
    box_xyxy = check_bounds(bounds) if bounds is not None else None
    first, second = RasterFrame.open(before, "BEFORE"), RasterFrame.open(after, "AFTER")
    footprint = _common_footprint(first, second)
    if box_xyxy is not None:
        footprint = _inside(footprint, box_xyxy, first)
    window, _notes = window_for_bounds(footprint.bounds, first.transform, first.width, first.height, first.path.name)
    return Alignment(first, second, window, footprint, resampling)


def check_resampling(method: str) -> str:
    if method not in RESAMPLING_METHODS:
        raise InputError(f"unknown resampling {method!r}: choose one of {', '.join(RESAMPLING_METHODS)}")
    return method


def _inside(common: Polygon, box_xyxy: tuple[float, float, float, float], before: RasterFrame) -> Polygon:
    """The part of the common extent inside the box (BEFORE's CRS); a :class:`BoundsError` when there is none."""
    clipped = shapely.intersection(common, shapely.box(*box_xyxy))
    parts = [p for p in shapely.get_parts(clipped) if p.geom_type == "Polygon" and p.area > 0]
    if not parts:
        raise BoundsError(
            f"the bounds {[round(v, 6) for v in box_xyxy]} miss the extent both rasters cover, "
            f"{[round(v, 6) for v in common.bounds]} in {crs_label(before.crs)} (BEFORE's CRS): "
            "give bounds where BEFORE and AFTER overlap"
        )
    return max(parts, key=lambda p: p.area)


def _common_footprint(before: RasterFrame, after: RasterFrame) -> Polygon:
    """The area both rasters cover, in BEFORE's CRS; a :class:`BoundsError` when there is none."""
    moved = Reprojection(after.crs, before.crs)(np.array([after.outline()], dtype=object))[0]
    coordinates = shapely.get_coordinates(moved)
    common = None
    if len(coordinates) and np.isfinite(coordinates).all():
        common = shapely.intersection(shapely.make_valid(moved), before.outline())
        parts = [p for p in shapely.get_parts(common) if p.geom_type == "Polygon" and p.area > 0]
        common = max(parts, key=lambda p: p.area) if parts else None
    if common is None:
        raise BoundsError(
            f"the rasters do not overlap: BEFORE {before.path.name} covers {before.extent()} in "
            f"{crs_label(before.crs)}, AFTER {after.path.name} covers {after.extent()} in {crs_label(after.crs)}"
            + (f" ({[round(v, 6) for v in moved.bounds]} in BEFORE's CRS)" if np.isfinite(coordinates).all() else "")
            + ": give two rasters of the same place"
        )
    return common


def write_after_vrt(alignment: Alignment, path: Path) -> Path:
    """Write AFTER resampled onto the alignment's grid as a GDAL warped VRT at ``path``.

    Pixels of the grid that AFTER does not cover are masked: by AFTER's own alpha band or nodata
    value when it has one, else by NaN (floating-point data) or an added alpha band.
    """
    try:
        with rasterio.open(alignment.after.path) as source:
            masking = _masking(source)
            with WarpedVRT(
                source,
                crs=alignment.crs,
                transform=alignment.transform,
                width=alignment.width,
                height=alignment.height,
                resampling=Resampling[alignment.resampling],
                **masking,
            ) as warped:
                rasterio.shutil.copy(warped, path, driver="VRT")
    except RasterioError as exc:
        raise RasterError(
            f"cannot resample AFTER {alignment.after.path} onto BEFORE's grid ({exc}): check both with gdalinfo"
        ) from exc
    return path


def _masking(source: rasterio.DatasetReader) -> dict[str, Any]:
    """How the warped VRT marks the pixels outside AFTER: nothing to add when AFTER has alpha or nodata."""
    if ColorInterp.alpha in source.colorinterp or source.nodata is not None:
        return {}
    if np.issubdtype(np.dtype(source.dtypes[0]), np.floating):
        return {"nodata": float("nan")}
    return {"add_alpha": True}
