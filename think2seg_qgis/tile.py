"""What to send for the visible part of a raster layer, and how.

Three ways, best first:

- ``reference``: a raster file on the backend's machine is sent as path + bounds and read by the
  backend at native resolution;
- ``pixels``: any other GDAL raster (a file the backend may not read, a zipped or remote file) is
  read here at its own pixel grid and uploaded as a GeoTIFF, so the polygons still follow the
  raster's pixels;
- ``render``: layers without pixels of their own (XYZ, WMS, WMTS, ...) are fetched on a
  :class:`RenderGrid` of a stated ground resolution (Settings, metres per pixel), not at the
  screen's: zooming the canvas changes how much is fetched, not how finely. They are rendered by
  QGIS and uploaded as PNG with their georeference (see :mod:`.upload`); the plan's note says the
  resolution and the service.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsDataSourceUri,
    QgsDistanceArea,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsUnitTypes,
)
from qgis.gui import QgsMapCanvas

from .errors import TileError
from .settings import Settings

REFERENCE, PIXELS, RENDER = "reference", "pixels", "render"
UPLOAD_MAX_SIDE_PX = 4096  # the backend's default upload limit is 4096 x 4096 pixels
EPSILON_PX = 1e-6
GRID_SLACK_PX = 1e-3  # a render grid may leave this much of a pixel of the view out (no column for 1e-5 px)
MEASURE_SEGMENTS = 16  # a view's middle lines are measured in pieces: one geodesic would cut a wide view short
OVERSAMPLE_MAX = 4.0  # a geographic CRS's render (square in degrees) may have up to this x max_side_px
DEFAULT_ELLIPSOID = "EPSG:7030"  # WGS 84, for a CRS that names none
METRES = Qgis.DistanceUnit.Meters if hasattr(Qgis, "DistanceUnit") else QgsUnitTypes.DistanceUnit.DistanceMeters
UNKNOWN_UNIT = (
    Qgis.DistanceUnit.Unknown if hasattr(Qgis, "DistanceUnit") else QgsUnitTypes.DistanceUnit.DistanceUnknownUnit
)
ADVICE = "zoom in, set a coarser web layer resolution in Settings, or start a batch job for big areas"
SERVICES = {"arcgismapserver": "ArcGIS MapServer", "wcs": "WCS"}  # web providers besides wms (XYZ, WMS, WMTS)


@dataclass(frozen=True)
class PixelWindow:
    """A window of whole source pixels: ``extent`` (map units of the layer's CRS) covers columns
    ``col_off`` .. ``col_off + width`` and rows ``row_off`` .. ``row_off + height``; ``pixel_size``
    is the raster's own (x, y) pixel size."""

    col_off: int
    row_off: int
    width: int
    height: int
    extent: QgsRectangle
    pixel_size: tuple[float, float]

    def output_size(self, max_side_px: int = UPLOAD_MAX_SIDE_PX) -> tuple[int, int]:
        """The size to read it at: its own, or decimated so that the longer side is ``max_side_px``."""
        longer = max(self.width, self.height)
        if longer <= max_side_px:
            return self.width, self.height
        scale = longer / max_side_px
        return max(1, round(self.width / scale)), max(1, round(self.height / scale))


@dataclass(frozen=True)
class RenderGrid:
    """The pixels a layer without pixels of its own is fetched on: ``width`` x ``height`` pixels covering
    ``extent`` (map units of the layer's CRS) exactly, each ``resolution_m`` x ``resolution_m`` metres on
    the ground at the extent's centre. ``pixel_size`` is (x, y) in map units: equal in a projected CRS,
    different in a geographic one (a degree of longitude is shorter on the ground than one of latitude)."""

    extent: QgsRectangle
    width: int
    height: int
    pixel_size: tuple[float, float]
    resolution_m: float

    @property
    def transform(self) -> list[float]:
        """The grid's affine transform, GDAL order (a, b, c, d, e, f), pixel corners, in the layer's CRS."""
        size_x, size_y = self.pixel_size
        return [size_x, 0.0, self.extent.xMinimum(), 0.0, -size_y, self.extent.yMaximum()]

    def render_size(self) -> tuple[int, int]:
        """The size QGIS renders ``extent`` at: square pixels in map units (all its renderer draws), of the
        finer of the two pixel sides; :class:`~.upload.TileRender` scales that image to ``width`` x ``height``
        (a no-op but in a geographic CRS)."""
        side = min(self.pixel_size)
        return max(1, round(self.extent.width() / side)), max(1, round(self.extent.height() / side))


@dataclass(frozen=True)
class TilePlan:
    """The layer's visible window: ``bounds`` in the layer's CRS, and how it is sent (``mode``)."""

    layer: QgsRasterLayer
    bounds: QgsRectangle
    crs: QgsCoordinateReferenceSystem
    mode: str
    raster_path: str | None = None  # mode reference: the file the backend reads
    window: PixelWindow | None = None  # modes reference and pixels: the bounds snapped to whole pixels
    grid: RenderGrid | None = None  # mode render: the pixels fetched (bounds is its extent)
    note: str = ""  # why the plan is not the best one (e.g. the backend may not read the file)

    @property
    def by_reference(self) -> bool:
        return self.mode == REFERENCE

    def reference_body(self) -> dict:
        b = self.bounds
        return {
            "raster_path": self.raster_path,
            "bounds": [b.xMinimum(), b.yMinimum(), b.xMaximum(), b.yMaximum()],
            "bounds_crs": crs_text(self.crs),
        }

    def as_pixels(self, note: str) -> TilePlan:
        """The same window read here and uploaded (the backend may not read the file): ``note`` says why."""
        if self.window is None:
            raise TileError(f"the layer {self.layer.name()} has no pixels of its own to upload")
        return replace(self, mode=PIXELS, raster_path=None, note=note)


def crs_text(crs: QgsCoordinateReferenceSystem) -> str:
    """EPSG:n when the CRS has one, else its WKT."""
    authid = crs.authid()
    return authid if authid.upper().startswith("EPSG:") else crs.toWkt()


def plan_tile(canvas: QgsMapCanvas, layer: QgsRasterLayer | None, settings: Settings) -> TilePlan:
    """The visible extent intersected with ``layer``, in the layer's CRS; raises :class:`TileError`."""
    if layer is None or not layer.isValid():
        raise TileError("choose a raster layer in the Think2Seg panel")
    crs = layer.crs()
    if not crs.isValid():
        raise TileError(f"the layer {layer.name()} has no CRS: set it in Layer Properties > Source")
    extent = visible_extent(canvas, crs)
    bounds = extent.intersect(layer.extent())
    if bounds.isEmpty() or bounds.width() <= 0 or bounds.height() <= 0:
        raise TileError(f"the layer {layer.name()} is not in view: pan or zoom to it")
    if layer.providerType() != "gdal":
        return render_plan(layer, bounds, settings)
    window = pixel_window(layer, bounds)
    path = local_file(layer) if settings.backend_is_local() else None
    if path is not None:
        return TilePlan(layer, bounds, crs, REFERENCE, raster_path=path, window=window)
    return TilePlan(layer, bounds, crs, PIXELS, window=window)


def visible_extent(canvas: QgsMapCanvas, crs: QgsCoordinateReferenceSystem) -> QgsRectangle:
    """The canvas's extent in ``crs``."""
    canvas_crs = canvas.mapSettings().destinationCrs()
    extent = canvas.extent()
    if canvas_crs != crs:
        extent = QgsCoordinateTransform(canvas_crs, crs, QgsProject.instance()).transformBoundingBox(extent)
    return extent


def pixel_window(layer: QgsRasterLayer, bounds: QgsRectangle) -> PixelWindow:
    """``bounds`` snapped outward to whole pixels of the layer, clipped to the raster."""
    full = layer.extent()
    size_x, size_y = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
    col0 = max(0, math.floor((bounds.xMinimum() - full.xMinimum()) / size_x + EPSILON_PX))
    col1 = min(layer.width(), math.ceil((bounds.xMaximum() - full.xMinimum()) / size_x - EPSILON_PX))
    row0 = max(0, math.floor((full.yMaximum() - bounds.yMaximum()) / size_y + EPSILON_PX))
    row1 = min(layer.height(), math.ceil((full.yMaximum() - bounds.yMinimum()) / size_y - EPSILON_PX))
    col1, row1 = max(col1, col0 + 1), max(row1, row0 + 1)
    extent = QgsRectangle(
        full.xMinimum() + col0 * size_x,
        full.yMaximum() - row1 * size_y,
        full.xMinimum() + col1 * size_x,
        full.yMaximum() - row0 * size_y,
    )
    return PixelWindow(col0, row0, col1 - col0, row1 - row0, extent, (size_x, size_y))


def local_file(layer: QgsRasterLayer) -> str | None:
    """The raster's file when GDAL reads it from a local file (not a URL, a VSI path or WMS)."""
    if layer.providerType() != "gdal":
        return None
    path = layer.source().split("|", 1)[0]
    return path if os.path.isfile(path) else None


def render_plan(layer: QgsRasterLayer, bounds: QgsRectangle, settings: Settings) -> TilePlan:
    """The plan for a layer without pixels of its own: ``bounds`` (the layer's CRS) fetched at
    ``settings.web_resolution_m``; raises :class:`TileError` when that is more than ``settings.max_side_px``."""
    resolution_m = settings.web_resolution_m
    grid = render_grid(bounds, layer.crs(), resolution_m)
    size = f"{grid.width}x{grid.height} px at {resolution_m:.2f} m per pixel"
    limit = settings.max_side_px
    if max(grid.width, grid.height) > limit:
        raise TileError(
            f"the visible part of {layer.name()} is {size}, more than the {limit} px it can upload: {ADVICE}"
        )
    if max(grid.render_size()) > OVERSAMPLE_MAX * limit:  # a geographic CRS near a pole
        width, height = grid.render_size()
        raise TileError(
            f"the visible part of {layer.name()} ({size}) would be rendered at {width}x{height} px (square pixels "
            f"in degrees, then scaled), too large: {ADVICE}"
        )
    note = f"fetched at {resolution_m:.2f} m/px from the {service_name(layer)}"
    return TilePlan(layer, grid.extent, layer.crs(), RENDER, grid=grid, note=note)


def render_grid(bounds: QgsRectangle, crs: QgsCoordinateReferenceSystem, resolution_m: float) -> RenderGrid:
    """The grid of ``resolution_m`` ground metres per pixel over ``bounds`` (map units of ``crs``).

    The ground size is :func:`ground_size_m`'s (geodesic, at the centre). A geographic CRS gets a pixel
    size per axis, so each pixel is ``resolution_m`` square on the ground. A projected one gets square
    map-unit pixels (what QGIS renders, so no second resampling) of ``resolution_m`` squared on the
    ground; conformal projections keep them square there too, and Web Mercator nearly so: spherical
    Mercator on the WGS 84 ellipsoid has east-west and north-south scales that differ by up to 0.67 %
    (at the equator), so each side is then within 0.34 % of ``resolution_m``.
    The grid is grown (centred, by less than a pixel) to whole pixels, so the whole view is fetched.
    """
    width_m, height_m = ground_size_m(bounds, crs)
    size_x, size_y = resolution_m * bounds.width() / width_m, resolution_m * bounds.height() / height_m
    if not crs.isGeographic():
        size_x = size_y = math.sqrt(size_x * size_y)
    width = max(1, math.ceil(bounds.width() / size_x - GRID_SLACK_PX))
    height = max(1, math.ceil(bounds.height() / size_y - GRID_SLACK_PX))
    centre = bounds.center()
    half_x, half_y = width * size_x / 2, height * size_y / 2
    extent = QgsRectangle(centre.x() - half_x, centre.y() - half_y, centre.x() + half_x, centre.y() + half_y)
    return RenderGrid(extent, width, height, (size_x, size_y), resolution_m)


def ground_size_m(extent: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> tuple[float, float]:
    """(width, height) of ``extent`` (map units of ``crs``) on the ground, in metres.

    Measured with QgsDistanceArea on the CRS's ellipsoid (WGS 84 when it names none): the geodesic
    length of the extent's middle lines, west-east through its centre and south-north through its
    centre, each in :data:`MEASURE_SEGMENTS` pieces. In Web Mercator (EPSG:3857) this is the honest ground
    distance (about map metres x cos(latitude)); in a geographic CRS degrees become metres on the
    ellipsoid. A CRS QGIS cannot put on an ellipsoid is measured in its map units, converted to metres.
    Raises :class:`TileError` when the extent cannot be measured.
    """
    area = QgsDistanceArea()
    area.setSourceCrs(crs, QgsProject.instance().transformContext())
    area.setEllipsoid(crs.ellipsoidAcronym() or DEFAULT_ELLIPSOID)
    centre = extent.center()
    across = _line(QgsPointXY(extent.xMinimum(), centre.y()), QgsPointXY(extent.xMaximum(), centre.y()))
    along = _line(QgsPointXY(centre.x(), extent.yMinimum()), QgsPointXY(centre.x(), extent.yMaximum()))
    try:
        lengths = [area.convertLengthMeasurement(area.measureLine(line), METRES) for line in (across, along)]
    except QgsCsException as exc:
        raise TileError(f"the view cannot be measured on the ground in {crs_text(crs)} ({exc}): zoom in") from exc
    if area.lengthUnits() == UNKNOWN_UNIT or not all(math.isfinite(v) and v > 0 for v in lengths):
        raise TileError(
            f"the view's size on the ground is unknown in {crs.description() or crs_text(crs)}: set the layer's "
            "CRS in Layer Properties > Source"
        )
    return lengths[0], lengths[1]


def _line(start: QgsPointXY, end: QgsPointXY) -> list[QgsPointXY]:
    steps = range(MEASURE_SEGMENTS + 1)
    dx, dy = (end.x() - start.x()) / MEASURE_SEGMENTS, (end.y() - start.y()) / MEASURE_SEGMENTS
    return [QgsPointXY(start.x() + i * dx, start.y() + i * dy) for i in steps]


def service_name(layer: QgsRasterLayer) -> str:
    """What serves the layer, for notes: "XYZ service", "WMTS service", "WMS service", ..., else "<provider> layer"."""
    provider = layer.providerType()
    if provider == "wms":
        uri = QgsDataSourceUri()
        uri.setEncodedUri(layer.source())
        kind = "XYZ" if uri.param("type") == "xyz" else "WMTS" if uri.hasParam("tileMatrixSet") else "WMS"
        return f"{kind} service"
    return f"{SERVICES[provider]} service" if provider in SERVICES else f"{provider} layer"
