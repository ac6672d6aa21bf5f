"""One question (or one set of explicit prompts) about the visible part of a raster layer.

Plans the tile, renders and uploads it when it cannot be sent by reference, streams the reasoning,
and hands the reply back. Everything is asynchronous: QGIS never waits on the network. One request
is in flight at a time; every callback checks that it still belongs to the request in flight, so a
cancelled (or superseded) request never reports.
"""

from __future__ import annotations

from collections.abc import Callable
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
from .tile import TilePlan, TileRender, plan_tile, with_render_size

FALLBACK_CODES = ("path_not_allowed", "not_found")


@dataclass
class _Request:
    """One request: its plan (the bounds and CRS its reply is in), options, and what is in flight."""

    plan: TilePlan
    options: dict
    canvas: QgsMapCanvas
    call: ApiCall | None = None
    render: TileRender | None = None

    def stop(self) -> None:
        if self.render is not None:
            self.render.cancel()
        if self.call is not None:
            self.call.abort()


class SegmentRun(QObject):
    """Emits ``reasoning`` as text streams in, then ``finished(reply, plan)`` or ``failed(error)``
    (a :class:`~.errors.Think2SegError`, usually an :class:`~.api.errors.ApiError`).

    ``plan`` in ``finished`` is the plan of the request the reply answers.
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
        self, canvas: QgsMapCanvas, layer: QgsRasterLayer | None, *, question: str = "", prompts: list | None = None
    ) -> None:
        """Ask ``question``, or run SAM alone on ``prompts`` (map coordinates in the layer's CRS).

        Raises :class:`~.errors.RunInProgress` while another request is in flight,
        :class:`~.errors.TileError` when the layer cannot be sent and :class:`~.errors.PromptError`
        when a prompt lies outside the visible window.
        """
        if self.busy():
            raise RunInProgress("a run is already in progress: wait for it to finish, or press Cancel")
        plan = plan_tile(canvas, layer, self.settings)
        if prompts:
            require_inside(prompts, plan.bounds, plan.layer.name())
        options = {
            "max_side_px": self.settings.max_side_px,
            "simplify_px": self.settings.simplify_px,
            "min_area_m2": self.settings.min_area_m2,
        }
        options.update({"prompts": prompts} if prompts else {"question": question})
        request = self._current = _Request(plan, options, canvas)
        self.plan = plan
        if plan.by_reference:
            body = {**plan.reference_body(), **options}
            self._send(request, lambda: self.client.post_json("/v1/segment", body, stream=True))
        else:
            self._render_and_upload(request)

    def cancel(self) -> None:
        """Stop the request in flight; nothing is reported for it afterwards."""
        request, self._current = self._current, None
        if request is not None:
            request.stop()

    def _render_and_upload(self, request: _Request) -> None:
        request.render = TileRender(
            request.plan, lambda png, transform, crs: self._upload(request, png, transform, crs)
        )

    @guard_slot
    def _upload(self, request: _Request, png: bytes, transform: list[float], crs: str) -> None:
        if request is not self._current:
            return
        meta = {**request.options, "transform": transform, "crs": crs}
        self._send(request, lambda: self.client.post_upload("/v1/segment", png, "tile.png", meta, stream=True))

    def _send(self, request: _Request, make_call: Callable[[], ApiCall]) -> None:
        call = request.call = make_call()
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
            # The backend cannot read this file (outside its data roots, or not on its disk): send pixels.
            logger().info("the backend cannot read %s (%s): uploading the view instead", plan.raster_path, error.code)
            try:
                request.plan = self.plan = with_render_size(plan, request.canvas, self.settings)
            except TileError as exc:
                self._end_with(exc)
                return
            request.call = None
            self._render_and_upload(request)
            return
        self._end_with(error)

    def _end_with(self, error: Think2SegError) -> None:
        self._current = None
        self.failed.emit(error)
