"""Messages to the user: the message bar (full text behind “More” when it is long, buttons for what
to do next) and the QGIS message log at the matching level (failures at Warning or above)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from qgis.core import Qgis
from qgis.gui import QgsMessageBar, QgsMessageBarItem
from qgis.PyQt.QtWidgets import QHBoxLayout, QPushButton, QWidget

from .log import guard_slot, logger

TITLE = "Think2Seg"
SHORT_CHARS = 160  # the message bar shows about two lines; longer texts get a “More” button
LOG_LEVELS = {
    Qgis.MessageLevel.Info: logging.INFO,
    Qgis.MessageLevel.Success: logging.INFO,
    Qgis.MessageLevel.Warning: logging.WARNING,
    Qgis.MessageLevel.Critical: logging.ERROR,
}
Action = tuple[str, Callable[[], None]]


class Notifier:
    """Says things in the message bar and the log; ``history`` keeps (level, text) for the dock and tests."""

    def __init__(self, bar: QgsMessageBar) -> None:
        self.bar = bar
        self.history: list[tuple[Qgis.MessageLevel, str]] = []

    def say(
        self,
        text: str,
        level: Qgis.MessageLevel = Qgis.MessageLevel.Info,
        *,
        actions: Sequence[Action] = (),
        duration_s: int | None = None,
    ) -> QgsMessageBarItem | None:
        """Show ``text`` (the whole of it stays reachable) with optional buttons; returns their item."""
        logger().log(LOG_LEVELS.get(level, logging.INFO), text)
        self.history.append((level, text))
        duration = duration_s if duration_s is not None else (0 if actions else _duration(level))
        if not actions:
            more = text if len(text) > SHORT_CHARS else ""
            self.bar.pushMessage(TITLE, text, more, level, duration)
            return None
        item = QgsMessageBarItem(TITLE, text, level, duration)
        buttons = QWidget(item)  # owned by the item (a parentless widget would die with this frame)
        row = QHBoxLayout(buttons)
        row.setContentsMargins(0, 0, 0, 0)
        item.setWidget(buttons)
        for label, action in actions:
            button = QPushButton(label, buttons)
            button.clicked.connect(_then_dismiss(self.bar, item, action))
            row.addWidget(button)
        self.bar.pushItem(item)
        return item


def _duration(level: Qgis.MessageLevel) -> int:
    return {Qgis.MessageLevel.Critical: 0, Qgis.MessageLevel.Warning: 15}.get(level, 8)


def _then_dismiss(bar: QgsMessageBar, item: QgsMessageBarItem, action: Callable[[], None]) -> Callable[[], None]:
    @guard_slot
    def clicked() -> None:
        bar.popWidget(item)
        action()

    return clicked
