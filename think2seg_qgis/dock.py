"""The Think2Seg panel: backend status, raster layer, question with history, reasoning, result."""

from __future__ import annotations

import time

from qgis.core import Qgis, QgsMapLayerProxyModel, QgsRasterLayer
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QTextCursor
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDockWidget,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from .backend import Backend
from .errors import Think2SegError
from .log import guard_slot
from .prompts import PromptSet
from .results import Replaced
from .segment_run import SegmentRun
from .settings import Settings

STATUS_COLOURS = {
    "ready": "#2e7d32",
    "loading": "#f9a825",
    "starting": "#f9a825",
    "offline": "#9e9e9e",
    "error": "#c62828",
}


class Think2SegDock(QDockWidget):
    """The dock's widgets; the plugin wires the actions (run, resegment, export, batch, settings)."""

    runRequested = pyqtSignal()
    resegmentRequested = pyqtSignal()

    def __init__(self, settings: Settings, backend: Backend, parent: QWidget | None = None) -> None:
        super().__init__("Think2Seg", parent)
        self.setObjectName("Think2SegDock")
        self.settings, self.backend = settings, backend
        body = QWidget(self)
        layout = QVBoxLayout(body)
        layout.addLayout(self._status_row())
        layout.addLayout(self._inputs())
        self.reasoning = QPlainTextEdit(body)
        self.reasoning.setReadOnly(True)
        self.reasoning.setPlaceholderText("The model's reasoning appears here as it is written.")
        layout.addWidget(self.reasoning)
        self.result = QLabel("No result yet.", body)
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.result)
        layout.addLayout(self._tools())
        self.setWidget(body)
        backend.statusChanged.connect(self.show_status)
        self.show_status(backend.status, backend.message)
        self.set_running(False)

    def _status_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.status = QLabel(self)
        self.status.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.status.setWordWrap(True)
        self.start_button = QPushButton("Start", self)
        self.stop_button = QPushButton("Stop", self)
        self.log_button = QPushButton("Log", self)
        for widget in (self.status, self.start_button, self.stop_button, self.log_button):
            row.addWidget(widget)
        return row

    def _inputs(self) -> QGridLayout:
        grid = QGridLayout()
        self.layer_box = QgsMapLayerComboBox(self)
        self.layer_box.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.question = QComboBox(self)
        self.question.setEditable(True)
        self.question.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.question.lineEdit().setPlaceholderText("e.g. segment the flooded farmland next to the river")
        self.question.lineEdit().returnPressed.connect(self.runRequested)
        self.reload_history()
        self.run_button = QPushButton("Run", self)
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.runRequested)
        self.cancel_button = QPushButton("Cancel", self)
        grid.addWidget(QLabel("Raster", self), 0, 0)
        grid.addWidget(self.layer_box, 0, 1, 1, 3)
        grid.addWidget(QLabel("Question", self), 1, 0)
        grid.addWidget(self.question, 1, 1)
        grid.addWidget(self.run_button, 1, 2)
        grid.addWidget(self.cancel_button, 1, 3)
        grid.setColumnStretch(1, 1)
        return grid

    def _tools(self) -> QGridLayout:
        grid = QGridLayout()
        self.resegment_button = QPushButton("Re-segment", self)
        self.resegment_button.setToolTip("Run SAM alone on the prompt boxes and points (move them, or draw new ones)")
        self.resegment_button.clicked.connect(self.resegmentRequested)
        self.draw_box_button = QPushButton("Draw box", self)
        self.draw_point_button = QPushButton("Add point", self)
        self.undo_button = QPushButton("Undo", self)
        self.export_button = QPushButton("Export to GeoPackage…", self)
        self.batch_button = QPushButton("Batch…", self)
        self.settings_button = QPushButton("Settings…", self)
        buttons = (
            self.resegment_button,
            self.draw_box_button,
            self.draw_point_button,
            self.undo_button,
            self.export_button,
            self.batch_button,
            self.settings_button,
        )
        for index, button in enumerate(buttons):
            grid.addWidget(button, index // 4, index % 4)
        return grid

    def reload_history(self) -> None:
        current = self.question.currentText()
        self.question.clear()
        self.question.addItems(self.settings.history)
        self.question.setEditText(current)

    def question_text(self) -> str:
        return self.question.currentText().strip()

    def layer(self) -> QgsRasterLayer | None:
        layer = self.layer_box.currentLayer()
        return layer if isinstance(layer, QgsRasterLayer) else None

    @guard_slot
    def show_status(self, status: str, message: str) -> None:
        colour = STATUS_COLOURS.get(status, "#9e9e9e")
        detail = f" — {message}" if message else ""
        self.status.setText(f'<span style="color:{colour}">●</span> Backend {status}{detail}')
        self.status.setToolTip(message)
        self.stop_button.setEnabled(self.backend.owns_process())
        self.start_button.setEnabled(status in ("offline", "error"))

    def detach(self) -> None:
        """Stop following the backend's status (the plugin unloads)."""
        self.backend.statusChanged.disconnect(self.show_status)

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.resegment_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)


class RunController:
    """Runs a question (or a re-segmentation) from the dock and reports in it and the message bar.

    One run at a time: Enter or Run while a run is in flight is refused with a message.
    ``on_reply(reply, plan, drawn)`` gets the reply, the plan of the request it answers, and the
    hand-drawn prompts it replaces (a re-segment's) or None.
    """

    def __init__(self, dock: Think2SegDock, run: SegmentRun, canvas, message_bar, on_reply) -> None:  # noqa: ANN001
        self.dock, self.segment, self.canvas, self.bar, self.on_reply = dock, run, canvas, message_bar, on_reply
        self.started = 0.0
        self._drawn: Replaced | None = None
        run.reasoning.connect(self._reasoning)
        run.finished.connect(self._finished)
        run.failed.connect(self._failed)
        dock.cancel_button.clicked.connect(self.cancel)

    @guard_slot
    def ask(self) -> None:
        question = self.dock.question_text()
        if not question:
            self.warn("type a question first, e.g. “segment the river”")
            return
        if self._start(question=question):
            self.dock.settings.remember(question)
            self.dock.reload_history()

    @guard_slot
    def resegment(self, prompt_set: PromptSet) -> None:
        if not prompt_set.prompts:
            self.warn("no prompts to re-segment: run a question first, or draw a box or points")
            return
        if self._start(prompts=prompt_set.prompts):
            self._drawn = prompt_set.drawn

    @guard_slot
    def cancel(self) -> None:
        if not self.segment.busy():
            return
        self.segment.cancel()
        self._drawn = None
        self.dock.set_running(False)
        self.dock.result.setText("Cancelled.")

    def close(self) -> None:
        """Abort the run in flight and stop listening (the plugin unloads; the dock goes away)."""
        self.segment.cancel()
        self._drawn = None
        for signal, slot in (
            (self.segment.reasoning, self._reasoning),
            (self.segment.finished, self._finished),
            (self.segment.failed, self._failed),
        ):
            signal.disconnect(slot)

    def warn(self, text: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Warning) -> None:
        self.bar.pushMessage("Think2Seg", text, level=level, duration=8)

    def _start(self, **what: object) -> bool:
        if self.segment.busy():
            self.warn("a run is already in progress: wait for it to finish, or press Cancel", Qgis.MessageLevel.Info)
            return False
        try:
            self.segment.start(self.canvas, self.dock.layer(), **what)
        except Think2SegError as exc:
            self.warn(str(exc))
            return False
        self.dock.reasoning.clear()
        self.started = time.monotonic()
        self.dock.set_running(True)
        self.dock.result.setText("Working…")
        return True

    @guard_slot
    def _reasoning(self, text: str) -> None:
        self.dock.reasoning.moveCursor(QTextCursor.MoveOperation.End)
        self.dock.reasoning.insertPlainText(text)

    @guard_slot
    def _finished(self, reply: dict, plan) -> None:  # noqa: ANN001
        drawn, self._drawn = self._drawn, None
        self.dock.set_running(False)
        seconds = time.monotonic() - self.started
        count = len(reply.get("features", []))
        area = reply.get("total_area_m2") or 0.0
        status = reply.get("status", "")
        if status != "unparseable" and reply.get("reasoning"):  # the streamed raw text ends tidied up
            boxes = sum(f["properties"].get("kind") == "box" for f in reply.get("prompts", {}).get("features", []))
            self.dock.reasoning.setPlainText(
                f"{reply['reasoning']}\n\n→ {boxes} box(es) and their points are on the map."
            )
        self.dock.result.setText(f"{status}: {count} polygon(s), {_area(area)}, {seconds:.1f} s")
        if status == "unparseable":
            self.warn("the model's answer could not be read; its text is in the panel", Qgis.MessageLevel.Info)
        self.on_reply(reply, plan, drawn)

    @guard_slot
    def _failed(self, error: Think2SegError) -> None:
        self._drawn = None
        self.dock.set_running(False)
        self.dock.result.setText(f"Failed: {error}")
        self.warn(str(error), Qgis.MessageLevel.Critical)


def _area(area_m2: float) -> str:
    if area_m2 >= 1e6:
        return f"{area_m2 / 1e6:,.3f} km²"
    if area_m2 >= 1e4:
        return f"{area_m2 / 1e4:,.2f} ha"
    return f"{area_m2:,.1f} m²"
