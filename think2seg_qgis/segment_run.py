"""One question (or one set of explicit prompts) about the visible part of a raster layer.

Plans the tile, sends it by reference or uploads its pixels (or, for layers without pixels of
their own, a render), streams the reasoning, and hands the reply back. Everything is asynchronous:
QGIS never waits on the network or on a read. One request is in flight at a time; every callback
checks that it still belongs to the request in flight, so a cancelled (or superseded) request
never reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from qgis.core import QgsRasterLayer
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .api.client import ApiCall, AsyncClient
from .api.errors import ApiError
from .errors import RunInProgress, Think2SegError, TileError
from .log import guard_slot, logger
from .prompts import require_inside
from .settings import Settings
from .tile import PIXELS, RENDER, TilePlan, plan_tile
from .upload import PixelRead, TileRender

FALLBACK_CODES = {
    "path_not_allowed": "the backend may not read this folder, so its pixels were uploaded",
    "not_found": "the backend cannot see this file, so its pixels were uploaded",
}


@dataclass
class _Request:
    """One request: its plan (the bounds and CRS its reply is in), options, and what is in flight."""

    plan: TilePlan
    options: dict
    call: ApiCall | None = None
    upload: PixelRead | TileRender | None = None

    def stop(self) -> None:
        if self.upload is not None:
            self.upload.stop()
        if self.call is not None:
            self.call.abort()


class SegmentRun(QObject):
    """Emits ``reasoning`` as text streams in, then ``finished(reply, plan)`` or ``failed(error)``
    (a :class:`~.errors.Think2SegError`, usually an :class:`~.api.errors.ApiError`).

    ``plan`` in ``finished`` is the plan of the request the reply answers (its ``mode`` says how
    the pixels were sent, its ``note`` why, when that was not the best way).
    """

    reasoning = pyqtSignal(str)
    finished = pyqtSignal(dict, object)
    failed = pyqtSignal(object)

    def __init__(self, client: AsyncClient, settings: Settings) -> None:
        super().__init__()
        self.client, self.settings = client, settings
        self.plan: TilePlan | None = None  # the newest request's plan, for display and tests
        self._current: _Request | None = None

    def busy(self) -> bool:
        """Whether a request is in flight."""
        return self._current is not None

    def start(
        self,
        canvas: QgsMapCanvas,
        layer: QgsRasterLayer | None,
        *,
        question: str = "",
        classes: dict[str, str] | None = None,
        prompts: list | None = None,
    ) -> None:
        """Ask ``question``, or several ``classes`` at once (name -> question, see :mod:`.classes`),
        or run SAM alone on ``prompts`` (map coordinates in the layer's CRS). Settings' max_side_px
        and :meth:`~.settings.Settings.vector_options` go with every request.

        Raises :class:`~.errors.RunInProgress` while another request is in flight,
        :class:`~.errors.TileError` when the layer cannot be sent and :class:`~.errors.PromptError`
        when a prompt lies outside the visible window.
        """
        if self.busy():
            raise RunInProgress("a run is already in progress: wait for it to finish, or press Cancel")
        plan = plan_tile(canvas, layer, self.settings)
        if prompts:
            require_inside(prompts, plan.bounds, plan.layer.name())
        options: dict = {"max_side_px": self.settings.max_side_px, **self.settings.vector_options()}
        if prompts:
            options["prompts"] = prompts
        elif classes:
            options["classes"] = dict(classes)
        else:
            options["question"] = question
        request = self._current = _Request(plan, options)
        self._send(request)

    def cancel(self) -> None:
        """Stop the request in flight; nothing is reported for it afterwards."""
        request, self._current = self._current, None
        if request is not None:
            request.stop()

    def _send(self, request: _Request) -> None:
        plan = self.plan = request.plan
        if plan.mode == PIXELS:
            request.upload = PixelRead(
                plan,
                lambda data, meta: self._upload(request, data, meta),
                lambda message: self._read_failed(request, message),
            )
        elif plan.mode == RENDER:
            request.upload = TileRender(
                plan,
                lambda data, meta: self._upload(request, data, meta),
                lambda message: self._read_failed(request, message),
            )
        else:
            body = {**plan.reference_body(), **request.options}
            self._listen(request, self.client.post_json("/v1/segment", body, stream=True))
            return
        request.upload.start()

    @guard_slot
    def _upload(self, request: _Request, data: bytes, georeference: dict) -> None:
        if request is not self._current:
            return
        meta = {**request.options, **georeference}
        name = "tile.png" if georeference else "tile.tif"
        self._listen(request, self.client.post_upload("/v1/segment", data, name, meta, stream=True))

    def _read_failed(self, request: _Request, message: str) -> None:
        if request is self._current:
            self._end_with(TileError(f"{message}: check that the raster layer can be read, or try again"))

    def _listen(self, request: _Request, call: ApiCall) -> None:
        request.call = call
        call.reasoning.connect(lambda text: self._reasoning(request, text))
        call.finished.connect(lambda reply: self._finished(request, reply))
        call.failed.connect(lambda error: self._failed(request, error))

    @guard_slot
    def _reasoning(self, request: _Request, text: str) -> None:
        if request is self._current:
            self.reasoning.emit(text)

    @guard_slot
    def _finished(self, request: _Request, reply: dict) -> None:
        if request is self._current:
            self._current = None
            self.finished.emit(reply, request.plan)

    @guard_slot
    def _failed(self, request: _Request, error: ApiError) -> None:
        if request is not self._current:
            return
        plan = request.plan
        if plan.by_reference and error.code in FALLBACK_CODES:
            logger().info("the backend cannot read %s (%s): uploading its pixels instead", plan.raster_path, error.code)
            request.plan, request.call = plan.as_pixels(FALLBACK_CODES[error.code]), None
            self._send(request)
            return
        self._end_with(error)

    def _end_with(self, error: Think2SegError) -> None:
        self._current = None
        self.failed.emit(error)
