"""The panel's class list: a tick box that switches Run from the question to the classes, and a
small table of (name, question) rows to add to and remove from. The rows and the tick are kept in
Settings as they are edited, so the list is there again in the next session."""

from __future__ import annotations

from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .classes import MAX_CLASSES, class_request
from .log import guard_slot
from .settings import Settings

NAME, QUESTION = 0, 1
TABLE_HEIGHT_PX = 150


class ClassList(QWidget):
    """Emits ``toggled(on)`` when the tick box switches between the question and the classes."""

    toggled = pyqtSignal(bool)

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.enabled = QCheckBox("Several classes", self)
        self.enabled.setToolTip(
            "Ask every class below of the visible part of the raster in one run (each polygon gets its class, "
            f"at most {MAX_CLASSES}); untick to ask the question above. A row without a name is named by its question"
        )
        layout.addWidget(self.enabled)
        self.table = QTableWidget(0, 2, self)
        self.table.setHorizontalHeaderLabels(["Name", "Question"])
        self.table.horizontalHeader().setSectionResizeMode(QUESTION, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setMaximumHeight(TABLE_HEIGHT_PX)
        layout.addWidget(self.table)
        layout.addLayout(self._buttons())
        self._load()
        self.table.itemChanged.connect(self._save)
        self.enabled.toggled.connect(self._toggle)
        self._show(self.enabled.isChecked())

    def _buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.add_button = QPushButton("Add class", self)
        self.add_button.setToolTip("A new row: a short name (e.g. buildings) and what to segment for it")
        self.add_button.clicked.connect(self.add_row)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.setToolTip("Remove the selected rows (the last row when none is selected)")
        self.remove_button.clicked.connect(self.remove_rows)
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        row.addStretch(1)
        return row

    def active(self) -> bool:
        """Whether Run asks the classes (the tick box is on)."""
        return self.enabled.isChecked()

    def rows(self) -> list[tuple[str, str]]:
        """The (name, question) rows as typed, blank ones included."""
        return [(self._text(row, NAME), self._text(row, QUESTION)) for row in range(self.table.rowCount())]

    def classes(self) -> dict[str, str]:
        """The request's ``classes``; raises :class:`~.classes.ClassError` as :func:`~.classes.class_request`."""
        return class_request(self.rows())

    def set_rows(self, rows: list[tuple[str, str]]) -> None:
        """Replace the rows (and keep them in Settings)."""
        self.table.blockSignals(True)
        try:
            self.table.setRowCount(0)
            for name, question in rows:
                self._append(name, question)
        finally:
            self.table.blockSignals(False)
        self._save()

    @guard_slot
    def add_row(self, *_args: object) -> None:
        self.table.blockSignals(True)
        try:
            row = self._append("", "")
        finally:
            self.table.blockSignals(False)
        self._save()
        self.table.setCurrentCell(row, NAME)
        self.table.editItem(self.table.item(row, NAME))

    @guard_slot
    def remove_rows(self, *_args: object) -> None:
        selected = sorted({index.row() for index in self.table.selectedIndexes()}, reverse=True)
        for row in selected or ([self.table.rowCount() - 1] if self.table.rowCount() else []):
            self.table.removeRow(row)
        self._save()

    def _append(self, name: str, question: str) -> int:
        row = self.table.rowCount()
        self.table.insertRow(row)
        self.table.setItem(row, NAME, QTableWidgetItem(name))
        self.table.setItem(row, QUESTION, QTableWidgetItem(question))
        return row

    def _text(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text() if item is not None else ""

    def _load(self) -> None:
        for name, question in self.settings.classes:
            self._append(name, question)
        self.enabled.setChecked(self.settings.classes_on)

    @guard_slot
    def _save(self, *_args: object) -> None:
        self.settings.classes = self.rows()

    @guard_slot
    def _toggle(self, on: bool) -> None:
        self.settings.classes_on = on
        if on and not self.table.rowCount():
            self.add_row()
        self._show(on)
        self.toggled.emit(on)

    def _show(self, on: bool) -> None:
        for widget in (self.table, self.add_button, self.remove_button):
            widget.setVisible(on)
