"""What to send for the visible part of a raster layer, and how.

Three ways, best first:

- ``reference``: a raster file on the backend's machine is sent as path + bounds and read by the
  backend at native resolution;
- ``pixels``: any other GDAL raster (a file the backend may not read, a zipped or remote file) is
  read here at its own pixel grid and uploaded as a GeoTIFF, so the polygons still follow the
  raster's pixels;
- ``render``: layers without pixels of their own (WMS, XYZ, ...) are rendered at the canvas's
  resolution and uploaded as PNG with their georeference; the dock says so, since the resolution
  is then the screen's, not the data's.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.gui import QgsMapCanvas

from .errors import TileError
from .settings import Settings

REFERENCE, PIXELS, RENDER = "reference", "pixels", "render"
UPLOAD_MAX_SIDE_PX = 4096  # the backend's default upload limit is 4096 x 4096 pixels
EPSILON_PX = 1e-6


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
class TilePlan:
    """The layer's visible window: ``bounds`` in the layer's CRS, and how it is sent (``mode``)."""

    layer: QgsRasterLayer
    bounds: QgsRectangle
    crs: QgsCoordinateReferenceSystem
    mode: str
    raster_path: str | None = None  # mode reference: the file the backend reads
    window: PixelWindow | None = None  # modes reference and pixels: the bounds snapped to whole pixels
    render_size: tuple[int, int] | None = None  # mode render: the image size
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
        return TilePlan(layer, bounds, crs, RENDER, render_size=_render_size(canvas, extent, bounds, settings, layer))
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


def _render_size(
    canvas: QgsMapCanvas, extent: QgsRectangle, bounds: QgsRectangle, settings: Settings, layer: QgsRasterLayer
) -> tuple[int, int]:
    width = max(1, round(canvas.width() * bounds.width() / extent.width()))
    height = max(1, round(canvas.height() * bounds.height() / extent.height()))
    if max(width, height) > settings.max_side_px:
        raise TileError(
            f"the visible part of {layer.name()} is {width}x{height} px at this zoom, more than the "
            f"{settings.max_side_px} px it can upload: zoom in, or start a batch job for big areas"
        )
    return width, height
