"""One bridge from the plugin's logging to the QGIS message log (tab "Think2Seg")."""

from __future__ import annotations

import logging

from qgis.core import Qgis, QgsMessageLog

TAB = "Think2Seg"
_LEVELS = {
    logging.DEBUG: Qgis.MessageLevel.Info,
    logging.INFO: Qgis.MessageLevel.Info,
    logging.WARNING: Qgis.MessageLevel.Warning,
    logging.ERROR: Qgis.MessageLevel.Critical,
    logging.CRITICAL: Qgis.MessageLevel.Critical,
}


class MessageLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        level = _LEVELS.get(record.levelno, Qgis.MessageLevel.Info)
        QgsMessageLog.logMessage(self.format(record), TAB, level=level, notifyUser=False)


def logger() -> logging.Logger:
    """The plugin's logger, writing to the QGIS message log once."""
    log = logging.getLogger("think2seg_qgis")
    if not any(isinstance(h, MessageLogHandler) for h in log.handlers):
        log.addHandler(MessageLogHandler())
        log.setLevel(logging.INFO)
        log.propagate = False
    return log
