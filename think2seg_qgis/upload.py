"""Images to upload for a tile plan, made in the background (QGIS never waits on them).

:class:`PixelRead` reads the raster's own pixels in the plan's pixel window into a GeoTIFF (in a
QgsTask, through a clone of the layer's data provider); :class:`TileRender` renders a layer without
pixels of its own (XYZ, WMS, WMTS) on the plan's ground-resolution grid into a PNG with its georeference.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterBlockFeedback,
    QgsRasterFileWriter,
    QgsRasterPipe,
    QgsTask,
)
from qgis.PyQt.QtCore import QBuffer, QByteArray, QIODevice, QSize, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QImage

from . import compat
from .errors import TileError
from .log import guard_slot, logger
from .tile import TilePlan, crs_text, service_name

Upload = Callable[[bytes, dict], None]  # image bytes, georeference fields for the request ({} for a GeoTIFF)
Failure = Callable[[str], None]


class PixelRead(QgsTask):
    """Writes the plan's pixel window (at its own resolution, up to the upload limit) to a GeoTIFF
    and hands its bytes to ``on_done`` on the GUI thread; ``on_error(message)`` if that fails.

    The values are the raster's own (the backend stretches non-8-bit data as it does for files) and
    keep what the backend reads from them: nodata, and red/green/blue/alpha bands as such. A
    palette raster is written through its colour table (its renderer), as RGBA of the same grid.
    """

    def __init__(self, plan: TilePlan, on_done: Upload, on_error: Failure) -> None:
        super().__init__(f"Think2Seg: reading {plan.layer.name()}", QgsTask.Flag.CanCancel)
        window, provider = plan.window, plan.layer.dataProvider()
        interpretations = [provider.colorInterpretation(band) for band in range(1, provider.bandCount() + 1)]
        self.pipe = QgsRasterPipe()
        self.pipe.set(provider.clone())  # clones: providers and renderers are not shared across threads
        if interpretations[:1] == [compat.PALETTE_BAND]:
            self.pipe.set(plan.layer.renderer().clone())
        self.options = _creation_options(interpretations)
        self.extent, self.size, self.crs = window.extent, window.output_size(), plan.crs
        self.context = QgsProject.instance().transformContext()
        self.feedback = QgsRasterBlockFeedback()
        self.on_done, self.on_error = on_done, on_error
        self.data, self.error, self.stopped = b"", "", False

    def start(self) -> None:
        QgsApplication.taskManager().addTask(self)

    def stop(self) -> None:
        """Cancel; neither callback is called afterwards."""
        self.stopped = True
        self.feedback.cancel()
        if self.status() in (QgsTask.TaskStatus.Queued, QgsTask.TaskStatus.Running, QgsTask.TaskStatus.OnHold):
            self.cancel()

    def run(self) -> bool:
        folder = Path(tempfile.mkdtemp(prefix="think2seg-tile-"))
        try:
            target = folder / "tile.tif"
            writer = QgsRasterFileWriter(str(target))
            writer.setCreateOptions(self.options)
            width, height = self.size
            code = writer.writeRaster(self.pipe, width, height, self.extent, self.crs, self.context, self.feedback)
            if code != QgsRasterFileWriter.WriterError.NoError or not target.exists():
                self.error = f"QGIS could not read the raster's pixels (writer error {int(code)})"
                return False
            self.data = target.read_bytes()
            return True
        except OSError as exc:
            self.error = f"the raster's pixels could not be copied for the upload ({exc})"
            return False
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            self._release()

    def _release(self) -> None:
        """Free the provider clone now: left to the interpreter's exit it would outlive GDAL (a crash)."""
        self.pipe = None

    @guard_slot
    def finished(self, result: bool) -> None:  # QgsTask's signature
        self._release()
        if self.stopped:
            return
        if result:
            self.on_done(self.data, {})
        else:
            self.on_error(self.error or "reading the raster's pixels was cancelled")


def _creation_options(interpretations: list[int]) -> list[str]:
    """GeoTIFF options that keep the bands' colour interpretation where GDAL can say it."""
    if interpretations[:3] != [compat.RED_BAND, compat.GREEN_BAND, compat.BLUE_BAND]:
        return []
    alpha = len(interpretations) > 3 and interpretations[3] == compat.ALPHA_BAND
    return ["PHOTOMETRIC=RGB"] + (["ALPHA=YES"] if alpha else [])


class TileRender:
    """Fetches a plan's :class:`~.tile.RenderGrid` from a layer without pixels of its own (XYZ, WMS, WMTS)
    and hands ``on_done(png_bytes, {"transform", "crs"})`` the image on the GUI thread.

    QGIS's own renderer draws it (the layer's style, the provider's tile requests) on its worker threads,
    as for the canvas: a QgsMapRendererParallelJob, which the GUI thread only starts. A QgsTask then
    scales the image to the grid (it differs only in a geographic CRS, whose render has square pixels in
    degrees) and encodes the PNG. ``on_error(message)``, when given, gets a render that holds no pixel at
    all (the service answered nothing for the area); without it such an image is uploaded as it is.
    """

    def __init__(self, plan: TilePlan, on_done: Upload, on_error: Failure | None = None) -> None:
        if plan.grid is None:
            raise TileError(f"the layer {plan.layer.name()} has pixels of its own: read them instead of rendering")
        self.grid, self.crs, self.service = plan.grid, plan.crs, service_name(plan.layer)
        width, height = self.grid.render_size()
        settings = QgsMapSettings()
        settings.setLayers([plan.layer])
        settings.setDestinationCrs(plan.crs)
        settings.setOutputSize(QSize(width, height))
        settings.setExtent(self.grid.extent)
        settings.setBackgroundColor(QColor(0, 0, 0, 0))  # outside the layer stays transparent: nodata
        self._on_done, self._on_error, self._stopped = on_done, on_error, False
        self._encode: _EncodeTile | None = None
        self._job = QgsMapRendererParallelJob(settings)
        self._job.finished.connect(self._rendered)

    def start(self) -> None:
        self._job.start()

    def stop(self) -> None:
        """Stop rendering or encoding; neither callback is called afterwards."""
        self._stopped = True
        self._job.cancelWithoutBlocking()
        if self._encode is not None:
            self._encode.cancel()

    @guard_slot
    def _rendered(self) -> None:
        if self._stopped:
            return
        errors = "; ".join(error.message for error in self._job.errors())
        if errors:
            logger().warning("rendering %s: %s", self.service, errors)
        self._encode = _EncodeTile(self._job.renderedImage(), (self.grid.width, self.grid.height))
        self._encode.done.connect(self._encoded)
        QgsApplication.taskManager().addTask(self._encode)

    @guard_slot
    def _encoded(self, data: bytes, blank: bool) -> None:
        self._encode = None
        if self._stopped:
            return
        problem = "" if data else "the rendered tile could not be encoded as PNG"
        if blank and not problem:
            problem = f"QGIS rendered nothing for this area from the {self.service}: check that the service answers"
        if problem and self._on_error is not None:
            self._on_error(problem)
        elif data:
            self._on_done(data, {"transform": self.grid.transform, "crs": crs_text(self.crs)})
        else:
            logger().error("%s (%s)", problem, self.service)


class _EncodeTile(QgsTask):
    """Scales a rendered image to ``size`` (width, height) and encodes it as PNG, off the GUI thread;
    emits ``done(png_bytes, blank)`` on the GUI thread when it ends (``b""`` if cancelled or it failed;
    ``blank``: not one pixel is opaque at all)."""

    done = pyqtSignal(bytes, bool)

    def __init__(self, image: QImage, size: tuple[int, int]) -> None:
        super().__init__("Think2Seg: encoding the rendered tile", QgsTask.Flag.CanCancel)
        self.image, self.size = image, size
        self.data, self.blank = b"", True

    def run(self) -> bool:
        width, height = self.size
        image = self.image.convertToFormat(QImage.Format.Format_ARGB32)
        if (image.width(), image.height()) != (width, height):
            mode = Qt.TransformationMode.SmoothTransformation
            image = image.scaled(width, height, Qt.AspectRatioMode.IgnoreAspectRatio, mode)
        if self.isCanceled():
            return False
        self.blank = not _alpha_bytes(image).strip(b"\0")
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        saved = image.save(buffer, "PNG")
        buffer.close()
        self.data = bytes(data)
        return saved and not self.isCanceled()

    @guard_slot
    def finished(self, result: bool) -> None:  # QgsTask's signature
        self.done.emit(self.data if result else b"", self.blank)


def _alpha_bytes(image: QImage) -> bytes:
    """The alpha byte of every pixel of an ARGB32 image (4 bytes a pixel, so its rows have no padding)."""
    bits = image.constBits()
    bits.setsize(image.sizeInBytes())
    offset = 3 if sys.byteorder == "little" else 0  # ARGB32 holds each pixel as a native 0xAARRGGBB
    return bytes(bits)[offset::4]
