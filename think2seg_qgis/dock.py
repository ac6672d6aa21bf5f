"""The Think2Seg panel: backend status, raster layer, question with history (or a list of classes),
reasoning, result, where the results are kept, the prompts a re-segment sends, and the tools."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsMapLayerProxyModel, QgsRasterLayer
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QKeySequence
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDockWidget,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from .backend import Backend
from .class_list import ClassList
from .compat import QShortcut
from .log import guard_slot
from .prompts import Instance
from .settings import Settings

STATUS_COLOURS = {
    "ready": "#2e7d32",
    "loading": "#f9a825",
    "starting": "#f9a825",
    "offline": "#9e9e9e",
    "error": "#c62828",
}
KEY_ROLE = Qt.ItemDataRole.UserRole


class ElidedLabel(QLabel):
    """A one-line label that shortens its text to fit (with …) and shows all of it as a tooltip."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self._full = ""
        self.set_full_text(text)

    def set_full_text(self, text: str, tooltip: str = "") -> None:
        self._full = text
        self.setToolTip(tooltip or text)
        self._elide()

    def full_text(self) -> str:
        return self._full

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width = max(self.width(), 40)
        self.setText(self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, width))


class Think2SegDock(QDockWidget):
    """The dock's widgets; the plugin wires the actions (run, resegment, export, batch, settings)."""

    runRequested = pyqtSignal()
    resegmentRequested = pyqtSignal()
    undoRequested = pyqtSignal()
    redoRequested = pyqtSignal()

    def __init__(self, settings: Settings, backend: Backend, parent: QWidget | None = None) -> None:
        super().__init__("Think2Seg", parent)
        self.setObjectName("Think2SegDock")
        self.settings, self.backend = settings, backend
        body = QWidget(self)
        layout = QVBoxLayout(body)
        layout.addLayout(self._status_row())
        self.models = ElidedLabel("", body)
        self.models.setStyleSheet("color: #666")
        layout.addWidget(self.models)
        layout.addLayout(self._inputs())
        self.reasoning = QPlainTextEdit(body)
        self.reasoning.setReadOnly(True)
        self.reasoning.setPlaceholderText("The model's reasoning appears here as it is written.")
        layout.addWidget(self.reasoning, 2)
        self.result = QLabel("No result yet.", body)
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.result)
        self.results_file = ElidedLabel("", body)
        layout.addWidget(self.results_file)
        layout.addWidget(QLabel("Prompts for Re-segment (untick to leave one out):", body))
        self.prompt_list = QListWidget(body)
        self.prompt_list.setToolTip(
            "The instances of the newest run (or of the selected prompts) and the ones drawn by hand. "
            "Each instance takes a box and/or exactly two points inside the target. Re-segment replaces "
            "the run with what the ticked instances give."
        )
        layout.addWidget(self.prompt_list, 1)
        layout.addLayout(self._tools())
        self.jobs = QLabel("", body)
        self.jobs.setWordWrap(True)
        layout.addWidget(self.jobs)
        self.setWidget(body)
        self._shortcuts()
        backend.statusChanged.connect(self.show_status)
        self.show_status(backend.status, backend.message)
        self.set_running(False)

    def _status_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.status = ElidedLabel("", self)
        self.start_button = QPushButton("Start", self)
        self.start_button.setToolTip("Start the think2seg backend set in Settings on this machine")
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setToolTip("Stop the backend started here (batch jobs stay resumable)")
        self.log_button = QPushButton("Log", self)
        self.log_button.setToolTip("What the backend started here writes, as it writes it")
        row.addWidget(self.status, 1)
        for button in (self.start_button, self.stop_button, self.log_button):
            button.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
            row.addWidget(button)
        return row

    def _inputs(self) -> QGridLayout:
        grid = QGridLayout()
        self.layer_box = QgsMapLayerComboBox(self)
        self.layer_box.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.question = QComboBox(self)
        self.question.setEditable(True)
        self.question.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.question.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.question.setMinimumContentsLength(30)
        self.question.lineEdit().setPlaceholderText("e.g. segment the flooded farmland")
        self.question.setToolTip("What to segment in the visible part of the raster; Enter runs it")
        self.question.lineEdit().returnPressed.connect(self.runRequested)
        self.reload_history()
        self.run_button = QPushButton("Run", self)
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.runRequested)
        self.cancel_button = QPushButton("Cancel", self)
        grid.addWidget(QLabel("Raster", self), 0, 0)
        grid.addWidget(self.layer_box, 0, 1, 1, 2)
        grid.addWidget(QLabel("Question", self), 1, 0)
        grid.addWidget(self.question, 1, 1, 1, 2)
        self.class_list = ClassList(self.settings, self)
        self.class_list.toggled.connect(self._classes_toggled)
        self._classes_toggled(self.class_list.active())
        grid.addWidget(self.class_list, 2, 0, 1, 3)
        grid.addWidget(self.run_button, 3, 1)
        grid.addWidget(self.cancel_button, 3, 2)
        grid.setColumnStretch(1, 1)
        return grid

    @guard_slot
    def _classes_toggled(self, on: bool) -> None:
        """With the classes ticked, Run asks them and the question box rests (its text is kept)."""
        self.question.setEnabled(not on)
        self.run_button.setToolTip("Ask every class of the list" if on else "Ask the question")

    def _tools(self) -> QGridLayout:
        grid = QGridLayout()
        self.draw_box_button = QPushButton("Draw box", self)
        self.draw_box_button.setToolTip("Drag a box around a target on the map (a new instance). Esc stops")
        self.draw_point_button = QPushButton("Add point", self)
        self.draw_point_button.setToolTip("Click inside the target: two points per instance. Esc stops")
        for button in (self.draw_box_button, self.draw_point_button):
            button.setCheckable(True)
        self.resegment_button = QPushButton("Re-segment", self)
        self.resegment_button.setToolTip("Run SAM alone on the ticked prompts; replaces the run they correct")
        self.resegment_button.clicked.connect(self.resegmentRequested)
        self.undo_button = QPushButton("Undo", self)
        self.undo_button.clicked.connect(self.undoRequested)
        self.redo_button = QPushButton("Redo", self)
        self.redo_button.clicked.connect(self.redoRequested)
        self.zoom_button = QPushButton("Zoom to result", self)
        self.zoom_button.setToolTip("Zoom the map to the newest result (the map never moves by itself)")
        self.export_button = QPushButton("Export…", self)
        self.export_button.setToolTip("Write every Think2Seg result (or the selected polygons) to a GeoPackage")
        self.batch_button = QPushButton("Batch…", self)
        self.batch_button.setToolTip(
            "Ask the question (or, with “Several classes” ticked, every class) over every tile of a whole raster"
        )
        self.settings_button = QPushButton("Settings…", self)
        buttons = (
            (self.draw_box_button, self.draw_point_button, self.resegment_button),
            (self.undo_button, self.redo_button, self.zoom_button),
            (self.export_button, self.batch_button, self.settings_button),
        )
        for row, line in enumerate(buttons):
            for column, button in enumerate(line):
                grid.addWidget(button, row, column)
        return grid

    def _shortcuts(self) -> None:
        """Ctrl+Z / Ctrl+Shift+Z (and Ctrl+Y) undo and redo runs while the panel has the focus;
        in the question box they edit its text, as everywhere in Qt."""
        context = Qt.ShortcutContext.WidgetWithChildrenShortcut
        undo = QKeySequence.keyBindings(QKeySequence.StandardKey.Undo)
        redo = QKeySequence.keyBindings(QKeySequence.StandardKey.Redo) + [
            QKeySequence("Ctrl+Shift+Z"),
            QKeySequence("Ctrl+Y"),
        ]
        for bindings, signal in ((undo, self.undoRequested), (redo, self.redoRequested)):
            for keys in {binding.toString(): binding for binding in bindings}.values():
                shortcut = QShortcut(keys, self)
                shortcut.setContext(context)
                shortcut.activated.connect(signal)
                shortcut.activatedAmbiguously.connect(signal)  # QGIS's own Undo may hold the same keys

    def reload_history(self) -> None:
        current = self.question.currentText()
        self.question.clear()
        self.question.addItems(self.settings.history)
        self.question.setEditText(current)

    def question_text(self) -> str:
        return self.question.currentText().strip()

    def classes_on(self) -> bool:
        """Whether Run asks the class list rather than the question."""
        return self.class_list.active()

    def layer(self) -> QgsRasterLayer | None:
        layer = self.layer_box.currentLayer()
        return layer if isinstance(layer, QgsRasterLayer) else None

    @guard_slot
    def show_status(self, status: str, message: str) -> None:
        colour = STATUS_COLOURS.get(status, "#9e9e9e")
        self.status.set_full_text(f"● Backend {status}" + (f" — {message}" if message else ""), message or status)
        self.status.setStyleSheet(f"color: {colour}")
        self.stop_button.setEnabled(self.backend.owns_process())
        self.start_button.setEnabled(status in ("offline", "error"))
        self.models.set_full_text(self.backend.describe())

    def show_results_file(self, path: str, *, temporary: bool) -> None:
        where = "a temporary file until you save the project" if temporary else "beside the project"
        self.results_file.set_full_text(f"Results: {Path(path).name} ({where})", path)

    def show_prompts(self, instances: list[Instance]) -> None:
        """List the instances a re-segment can send, keeping what the user unticked."""
        unticked = self.unticked_prompts()
        self.prompt_list.clear()
        for instance in instances:
            item = QListWidgetItem(instance.describe())
            item.setData(KEY_ROLE, list(instance.key))
            if instance.sendable:
                state = Qt.CheckState.Unchecked if instance.key in unticked else Qt.CheckState.Checked
                item.setCheckState(state)
            else:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsUserCheckable & ~Qt.ItemFlag.ItemIsEnabled)
            self.prompt_list.addItem(item)

    def unticked_prompts(self) -> set[tuple[str, int]]:
        """The instances the user left out (anything else that can be sent is sent)."""
        items = (self.prompt_list.item(row) for row in range(self.prompt_list.count()))
        return {
            tuple(item.data(KEY_ROLE))
            for item in items
            if item.flags() & Qt.ItemFlag.ItemIsUserCheckable and item.checkState() == Qt.CheckState.Unchecked
        }

    def detach(self) -> None:
        """Stop following the backend's status (the plugin unloads)."""
        self.backend.statusChanged.disconnect(self.show_status)

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.resegment_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
