"""Shared by the plugin and end-to-end tests (both run in QGIS's own Python)."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest
from qgis.PyQt.QtCore import QSettings

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the plugin package, think2seg_qgis
FIXTURES = ROOT / "tests" / "fixtures"

# Keep the tests' QGIS settings out of the user's profile.
_SETTINGS_DIR = tempfile.mkdtemp(prefix="think2seg-qgis-settings-")
QSettings.setDefaultFormat(QSettings.Format.IniFormat)
QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, _SETTINGS_DIR)


def wait_until(condition, timeout_s: float = 60.0, step_ms: int = 20) -> bool:
    """Process Qt events until ``condition()`` is true (or the timeout passes)."""
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QThread

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        QgsApplication.processEvents()
        if condition():
            return True
        QThread.msleep(step_ms)
    return bool(condition())


@pytest.fixture
def project(tmp_path):
    """A saved, empty project in tmp_path, so results go beside it."""
    from qgis.core import QgsProject

    project = QgsProject.instance()
    project.clear()
    project.setFileName(str(tmp_path / "project.qgs"))
    project.write()
    yield project
    project.clear()


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == GUARD_MESSAGE:
            self.records.append(record)


GUARD_MESSAGE = "unexpected error in %s: please report it with this message"  # think2seg_qgis.log.guard_slot


@pytest.fixture
def slot_errors():
    """What guard_slot caught in a Qt slot (a bug) lands here; failures the plugin reports to the user
    are logged at ERROR too, and are not collected."""
    records: list[logging.LogRecord] = []
    handler = _Collect(records)
    log = logging.getLogger("think2seg_qgis")
    log.addHandler(handler)
    yield records
    log.removeHandler(handler)
