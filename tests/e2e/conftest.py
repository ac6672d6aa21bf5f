"""End-to-end: the plugin in QGIS's Python against a real `think2seg serve` with the tiny models.

The backend runs from the backend's virtual environment (.venv, made by `make setup`); the tiny
models are built there too (cached in .pytest_cache, shared with the backend tests).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "plugin"))
from backend_process import Backend  # noqa: E402

from qgis_helpers import ROOT, project, slot_errors, wait_until  # noqa: E402,F401 - shared fixtures and helpers


@pytest.fixture(scope="session")
def backend():
    folder = Path(tempfile.mkdtemp(prefix="think2seg-e2e-"))
    running = Backend(folder)
    yield running
    running.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def plugin(qgis_iface, project, backend, slot_errors):
    """The plugin against the real backend; fails the test if a Qt slot hit an unexpected error."""
    import think2seg_qgis

    plugin = think2seg_qgis.classFactory(qgis_iface)
    plugin.settings.backend_url = backend.url
    plugin.settings.token_file = str(backend.token_file)
    plugin.settings.backend_executable = str(ROOT / ".venv" / "bin" / "think2seg")
    plugin.initGui()
    qgis_iface.messageBar().clear_messages()
    yield plugin
    plugin.unload()
    assert not slot_errors, [record.getMessage() for record in slot_errors]


@pytest.fixture
def raster_layer(backend, project):
    """The sample raster, copied under the backend's data root and added to the project."""
    from qgis.core import QgsRasterLayer

    path = backend.data_root / "riverside.tif"
    if not path.exists():
        shutil.copy(ROOT / "resources" / "sample" / "riverside.tif", path)
    layer = QgsRasterLayer(str(path), "riverside")
    assert layer.isValid()
    project.addMapLayer(layer)
    return layer
