"""Plugin tests run in QGIS's own Python (pytest-qgis, offscreen). They import only qgis, qgis.PyQt,
the standard library and the plugin."""

from qgis_helpers import FIXTURES, ROOT, project, wait_until  # noqa: F401 - fixtures and helpers for the tests
