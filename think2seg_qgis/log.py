"""One bridge from the plugin's logging to the QGIS message log (tab "Think2Seg"), and the guard
that keeps a Python exception in a Qt slot from aborting QGIS."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import TypeVar

from qgis.core import Qgis, QgsMessageLog

TAB = "Think2Seg"
_LEVELS = {
    logging.DEBUG: Qgis.MessageLevel.Info,
    logging.INFO: Qgis.MessageLevel.Info,
    logging.WARNING: Qgis.MessageLevel.Warning,
    logging.ERROR: Qgis.MessageLevel.Critical,
    logging.CRITICAL: Qgis.MessageLevel.Critical,
}
Slot = TypeVar("Slot", bound=Callable)


class MessageLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        level = _LEVELS.get(record.levelno, Qgis.MessageLevel.Info)
        notify = record.levelno >= logging.ERROR  # errors light up the message log button
        QgsMessageLog.logMessage(self.format(record), TAB, level=level, notifyUser=notify)


def logger() -> logging.Logger:
    """The plugin's logger, writing to the QGIS message log once."""
    log = logging.getLogger("think2seg_qgis")
    if not any(isinstance(h, MessageLogHandler) for h in log.handlers):
        log.addHandler(MessageLogHandler())
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def guard_slot(slot: Slot) -> Slot:
    """Wrap a function Qt calls (a slot, a virtual override, a callback) so that an exception in it
    is logged with its traceback to the message log instead of aborting QGIS.

    Like PyQt, the wrapper drops signal arguments the function does not take (``clicked`` sends
    ``checked``, which most actions ignore). Errors the user can fix are handled inside the slots;
    this is the last line for bugs.
    """
    parameters = inspect.signature(slot).parameters.values()
    takes_any = any(p.kind == p.VAR_POSITIONAL for p in parameters)
    count = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)

    @functools.wraps(slot)
    def guarded(*args: object) -> object:
        try:
            return slot(*(args if takes_any else args[:count]))
        except Exception:  # reported, never silent: QGIS must not abort on a bug
            logger().exception("unexpected error in %s: please report it with this message", slot.__qualname__)
            return None

    return guarded  # type: ignore[return-value]
