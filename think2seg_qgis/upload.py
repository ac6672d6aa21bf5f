"""Images to upload for a tile plan, made in the background (QGIS never waits on them).

:class:`PixelRead` reads the raster's own pixels in the plan's pixel window into a GeoTIFF (in a
QgsTask, through a clone of the layer's data provider); :class:`TileRender` renders a layer without
pixels of its own (WMS, XYZ) into a PNG with its georeference.
"""

from __future__ import annotations

import math
import shutil
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
from qgis.PyQt.QtCore import QBuffer, QByteArray, QIODevice, QSize
from qgis.PyQt.QtGui import QColor

from . import compat
from .log import guard_slot
from .tile import TilePlan, crs_text

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
    """Renders a plan's bounds into PNG bytes in the background (never blocking the GUI)."""

    def __init__(self, plan: TilePlan, on_done: Upload) -> None:
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

    def start(self) -> None:
        self._job.start()

    def stop(self) -> None:
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
        self._on_done(bytes(data), {"transform": transform, "crs": crs_text(self._settings.destinationCrs())})
