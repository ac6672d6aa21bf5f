"""Render QGIS offscreen with the Think2Seg dock and a result on the map, into a PNG.

    QT_QPA_PLATFORM=offscreen .venv-qgis/bin/python scripts/screenshot.py resources/screenshots/dock.jpg

Runs a real `think2seg serve` with the tiny test models (their answers are learned by rote and
their SAM has random weights), loads the bundled sample raster, asks a question through the
plugin and grabs the window.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "e2e"), str(ROOT / "tests" / "plugin")]

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle  # noqa: E402
from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsMapCanvas, QgsMessageBar  # noqa: E402
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtWidgets import QMainWindow, QVBoxLayout, QWidget  # noqa: E402


class Interface:
    """The few QgisInterface calls the plugin makes, on a plain main window."""

    def __init__(self, window: QMainWindow, canvas: QgsMapCanvas, bar: QgsMessageBar) -> None:
        self.window, self.canvas, self.bar = window, canvas, bar
        self.toolbar = window.addToolBar("Plugins")

    def mainWindow(self) -> QMainWindow:
        return self.window

    def mapCanvas(self) -> QgsMapCanvas:
        return self.canvas

    def messageBar(self) -> QgsMessageBar:
        return self.bar

    def addDockWidget(self, area, dock) -> None:
        self.window.addDockWidget(area, dock)

    def removeDockWidget(self, dock) -> None:
        self.window.removeDockWidget(dock)

    def addToolBarIcon(self, action) -> None:
        self.toolbar.addAction(action)

    def removeToolBarIcon(self, action) -> None:
        self.toolbar.removeAction(action)

    def addPluginToMenu(self, name, action) -> None:
        pass

    def removePluginMenu(self, name, action) -> None:
        pass


def main(target: Path) -> None:
    app = QgsApplication([], True)
    app.initQgis()
    from backend_process import Backend

    import think2seg_qgis

    from qgis_helpers import wait_until

    folder = Path(tempfile.mkdtemp(prefix="think2seg-shot-"))
    backend = Backend(folder)
    try:
        raster = shutil.copy(ROOT / "resources" / "sample" / "riverside.tif", folder / "riverside.tif")
        project = QgsProject.instance()
        project.setFileName(str(folder / "project.qgs"))
        window = QMainWindow()
        window.resize(QSize(1280, 760))
        central = QWidget()
        layout = QVBoxLayout(central)
        bar = QgsMessageBar()
        canvas = QgsMapCanvas()
        layout.addWidget(bar)
        layout.addWidget(canvas)
        window.setCentralWidget(central)
        QgsLayerTreeMapCanvasBridge(project.layerTreeRoot(), canvas)
        layer = QgsRasterLayer(str(raster), "riverside (sample)")
        project.addMapLayer(layer)
        canvas.setDestinationCrs(layer.crs())
        window.show()
        canvas.setExtent(QgsRectangle(512060, 5261690, 512320, 5261960))
        plugin = think2seg_qgis.classFactory(Interface(window, canvas, bar))
        plugin.settings.backend_url, plugin.settings.token_file = backend.url, str(backend.token_file)
        plugin.initGui()
        plugin.dock.setMinimumWidth(430)
        plugin.dock.layer_box.setLayer(layer)
        plugin.dock.question.setEditText("segment the river")
        wait_until(lambda: plugin.backend.status == "ready", 60)
        plugin.controller.ask()
        wait_until(lambda: plugin.dock.run_button.isEnabled(), 120)
        ours = [lyr for lyr in project.mapLayers().values() if lyr.customProperty("think2seg/role")]
        canvas.setLayers(sorted(ours, key=lambda lyr: lyr.customProperty("think2seg/role") != "points") + [layer])
        canvas.setExtent(QgsRectangle(512060, 5261690, 512320, 5261960))
        canvas.refreshAllLayers()
        wait_until(lambda: canvas.isDrawing(), 5)
        wait_until(lambda: not canvas.isDrawing(), 60)
        target.parent.mkdir(parents=True, exist_ok=True)
        window.grab().save(str(target), None, 85)  # format from the suffix
        print(f"wrote {target}")
        plugin.unload()
        project.clear()
        window.close()
        window.deleteLater()  # Qt deletes the widgets in order, before QGIS is torn down
        QgsApplication.processEvents()
    finally:
        backend.stop()
        shutil.rmtree(folder, ignore_errors=True)
    app.exitQgis()  # without it the interpreter's exit tears QGIS down out of order (a crash)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "resources" / "screenshots" / "dock.png")
