"""One question (or one set of explicit prompts) about the visible part of a raster layer.

Plans the tile, renders and uploads it when it cannot be sent by reference, streams the reasoning,
and hands the reply back. Everything is asynchronous: QGIS never waits on the network.
"""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import QgsRasterLayer
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .api.client import ApiCall, AsyncClient
from .api.errors import ApiError
from .log import logger
from .settings import Settings
from .tile import TilePlan, TileRender, plan_tile, with_render_size

FALLBACK_CODES = ("path_not_allowed", "not_found")


class SegmentRun(QObject):
    """Emits ``reasoning`` as text streams in, then ``finished(reply, plan)`` or ``failed(ApiError)``."""

    reasoning = pyqtSignal(str)
    finished = pyqtSignal(dict, object)
    failed = pyqtSignal(object)

    def __init__(self, client: AsyncClient, settings: Settings) -> None:
        super().__init__()
        self.client, self.settings = client, settings
        self.plan: TilePlan | None = None
        self._call: ApiCall | None = None
        self._render: TileRender | None = None
        self._options: dict = {}
        self._canvas: QgsMapCanvas | None = None

    def start(
        self, canvas: QgsMapCanvas, layer: QgsRasterLayer | None, *, question: str = "", prompts: list | None = None
    ) -> None:
        """Ask ``question``, or run SAM alone on ``prompts`` (map coordinates in the layer's CRS).

        Raises :class:`~.tile.TileError` at once when the layer cannot be sent.
        """
        self.plan = plan_tile(canvas, layer, self.settings)
        options = {
            "max_side_px": self.settings.max_side_px,
            "simplify_px": self.settings.simplify_px,
            "min_area_m2": self.settings.min_area_m2,
        }
        options.update({"prompts": prompts} if prompts else {"question": question})
        self._options, self._canvas = options, canvas
        if self.plan.by_reference:
            self._send(
                lambda: self.client.post_json("/v1/segment", {**self.plan.reference_body(), **options}, stream=True)
            )
        else:
            self._render_and_upload()

    def _render_and_upload(self) -> None:
        options = self._options
        self._render = TileRender(self.plan, lambda png, transform, crs: self._upload(png, transform, crs, options))

    def cancel(self) -> None:
        if self._render is not None:
            self._render.cancel()
        if self._call is not None:
            self._call.abort()
        self._call = self._render = None

    def _upload(self, png: bytes, transform: list[float], crs: str, options: dict) -> None:
        meta = {**options, "transform": transform, "crs": crs}
        self._send(lambda: self.client.post_upload("/v1/segment", png, "tile.png", meta, stream=True))

    def _send(self, make_call: Callable[[], ApiCall]) -> None:
        self._call = make_call()
        self._call.reasoning.connect(self.reasoning)
        self._call.finished.connect(lambda reply: self.finished.emit(reply, self.plan))
        self._call.failed.connect(self._failed)

    def _failed(self, error: ApiError) -> None:
        if self.plan is not None and self.plan.by_reference and error.code in FALLBACK_CODES:
            # The backend cannot read this file (outside its data roots, or not on its disk): send pixels.
            logger().info(
                "the backend cannot read %s (%s): uploading the view instead", self.plan.raster_path, error.code
            )
            self.plan = with_render_size(self.plan, self._canvas, self.settings)
            self._render_and_upload()
            return
        self.failed.emit(error)
