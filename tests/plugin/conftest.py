"""Plugin tests run in QGIS's own Python (pytest-qgis, offscreen). They import only qgis, qgis.PyQt,
the standard library and the plugin."""

from __future__ import annotations

import shutil

import pytest

from qgis_helpers import FIXTURES, ROOT, project, slot_errors, wait_until  # noqa: F401 - fixtures and helpers for the tests

SAMPLE = ROOT / "resources" / "sample" / "riverside.tif"


@pytest.fixture
def fake_backend():
    from fake_backend import FakeBackend

    fake = FakeBackend()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def forget_settings():
    """Every test starts from the default settings, whatever an earlier one remembered (tile size...)."""
    yield
    from qgis.core import QgsSettings

    QgsSettings().remove("think2seg")


@pytest.fixture
def plugin(qgis_iface, project, fake_backend, tmp_path, slot_errors):
    """The plugin, loaded, talking to the fake backend; its settings are reset afterwards."""
    from qgis.core import QgsApplication, QgsSettings

    import think2seg_qgis

    token = tmp_path / "token"
    token.write_text("test-token")
    plugin = think2seg_qgis.classFactory(qgis_iface)
    plugin.settings.backend_url = fake_backend.url
    plugin.settings.token_file = str(token)
    plugin.initGui()
    qgis_iface.messageBar().clear_messages()
    yield plugin
    if not plugin.unloaded:
        plugin.unload()
    # A batch task still running would talk to the next test's backend (the URL is read per request).
    assert wait_until(lambda: QgsApplication.taskManager().countActiveTasks() == 0, 20)
    QgsSettings().remove("think2seg")
    qgis_iface.messageBar().clear_messages()
    qgis_iface.messageBar().clearWidgets()  # no item left for the next test's messageBar().items()
    assert not slot_errors, [record.getMessage() for record in slot_errors]


@pytest.fixture
def raster(project, tmp_path, qgis_iface):
    """The sample raster (EPSG:32633, 512000..512384 E, 5261616..5262000 N), in view on the canvas."""
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(str(shutil.copy(SAMPLE, tmp_path / "riverside.tif")), "riverside")
    assert layer.isValid()
    project.addMapLayer(layer)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(layer.extent())
    return layer
