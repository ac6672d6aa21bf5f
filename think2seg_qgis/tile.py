"""What to send for the visible part of a raster layer: a window by reference, or a rendered upload.

A file-backed GDAL raster on the backend's machine is sent by reference (path + bounds, read at
native resolution by the backend); any other layer (XYZ, WMS, or any layer when the backend is
remote) is rendered at the canvas's resolution in the layer's CRS and uploaded with its georeference.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtCore import QBuffer, QByteArray, QIODevice, QSize
from qgis.PyQt.QtGui import QColor

from .errors import TileError
from .log import guard_slot
from .settings import Settings


@dataclass
class TilePlan:
    """The layer's visible window: ``bounds`` in the layer's CRS, and how to send it."""

    layer: QgsRasterLayer
    bounds: QgsRectangle
    crs: QgsCoordinateReferenceSystem
    raster_path: str | None
    render_size: tuple[int, int] | None

    @property
    def by_reference(self) -> bool:
        return self.raster_path is not None

    def reference_body(self) -> dict:
        b = self.bounds
        return {
            "raster_path": self.raster_path,
            "bounds": [b.xMinimum(), b.yMinimum(), b.xMaximum(), b.yMaximum()],
            "bounds_crs": crs_text(self.crs),
        }


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
    settings_crs = canvas.mapSettings().destinationCrs()
    extent = canvas.extent()
    if settings_crs != crs:
        transform = QgsCoordinateTransform(settings_crs, crs, QgsProject.instance())
        extent = transform.transformBoundingBox(extent)
    bounds = extent.intersect(layer.extent())
    if bounds.isEmpty() or bounds.width() <= 0 or bounds.height() <= 0:
        raise TileError(f"the layer {layer.name()} is not in view: pan or zoom to it")
    path = local_file(layer) if settings.backend_is_local() else None
    if path is not None:
        return TilePlan(layer, bounds, crs, path, None)
    return TilePlan(layer, bounds, crs, None, _render_size(canvas, extent, bounds, settings, layer))


def with_render_size(plan: TilePlan, canvas: QgsMapCanvas, settings: Settings) -> TilePlan:
    """The same window, to be rendered and uploaded instead of sent by reference."""
    extent = canvas.extent()
    canvas_crs = canvas.mapSettings().destinationCrs()
    if canvas_crs != plan.crs:
        extent = QgsCoordinateTransform(canvas_crs, plan.crs, QgsProject.instance()).transformBoundingBox(extent)
    size = _render_size(canvas, extent, plan.bounds, settings, plan.layer)
    return TilePlan(plan.layer, plan.bounds, plan.crs, None, size)


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


class TileRender:
    """Renders a plan's bounds into PNG bytes in the background (never blocking the GUI)."""

    def __init__(self, plan: TilePlan, on_done: Callable[[bytes, list[float], str], None]) -> None:
        width, height = plan.render_size or (1, 1)
        settings = QgsMapSettings()
        settings.setLayers([plan.layer])
        settings.setDestinationCrs(plan.crs)
        settings.setOutputSize(QSize(width, height))
        settings.setExtent(plan.bounds)
        settings.setBackgroundColor(QColor(0, 0, 0, 0))  # outside the layer stays transparent: nodata
        self._settings, self._on_done, self._cancelled = settings, on_done, False
        self._job = QgsMapRendererParallelJob(settings)
        self._job.finished.connect(self._finished)
        self._job.start()

    def cancel(self) -> None:
        """Stop rendering; ``on_done`` is not called afterwards."""
        self._cancelled = True
        self._job.cancelWithoutBlocking()

    @guard_slot
    def _finished(self) -> None:
        if self._cancelled:
            return
        image = self._job.renderedImage()
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        image.save(buffer, "PNG")
        extent = self._settings.visibleExtent()  # the extent actually rendered (aspect kept)
        width, height = image.width(), image.height()
        transform = [extent.width() / width, 0.0, extent.xMinimum(), 0.0, -extent.height() / height, extent.yMaximum()]
        if not all(math.isfinite(v) for v in transform):
            transform = [1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
        self._on_done(bytes(data), transform, crs_text(self._settings.destinationCrs()))
