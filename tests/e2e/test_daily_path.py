"""Issue 11's daily path in one go, as an analyst does it, against a backend started from the dock:
a raster outside the home folder → question → polygons on the raster's own pixel grid →
re-segment replaces → undo/redo → export → batch and Processing into temporary outputs, loaded as
styled layers → a new project shows nothing old."""

from __future__ import annotations

import shutil
import socket
import sqlite3
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

from think2seg_qgis.batch_dialog import BatchChoice, tile_count
from think2seg_qgis.export import ExportChoice
from think2seg_qgis.results import ROLE

from conftest import ROOT, wait_until

PONDS = "segment the ponds"  # the tiny model answers it with two instances


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def on_pixel_corners(layer: QgsVectorLayer, raster: QgsRasterLayer) -> bool:
    extent, size = raster.extent(), raster.rasterUnitsPerPixelX()
    for feature in layer.getFeatures():
        for vertex in feature.geometry().vertices():
            for offset in ((vertex.x() - extent.xMinimum()) / size, (extent.yMaximum() - vertex.y()) / size):
                if abs(offset - round(offset)) > 1e-6:
                    return False
    return True


def run_ids(layer: QgsVectorLayer) -> set[str]:
    return {f["run_id"] for f in layer.getFeatures()}


def ask(plugin, *, steps: int) -> None:
    plugin.dock.question.setEditText(PONDS)
    plugin.controller.ask()
    wait_for_steps(plugin, steps)


def wait_for_steps(plugin, steps: int) -> None:
    """Wait until the run ends with ``steps`` runs on the undo stack."""
    done = wait_until(lambda: plugin.dock.run_button.isEnabled() and plugin.undo.count() == steps, 120)
    assert done, (plugin.dock.result.text(), plugin.notify.history[-2:])


@pytest.fixture
def started(plugin, backend, tmp_path):
    """The plugin with a backend it started itself (Start in the dock), stopped afterwards."""
    plugin.settings.backend_url = f"http://127.0.0.1:{free_port()}"
    plugin.settings.token_file = str(tmp_path / "token")
    plugin.settings.backend_arguments = (
        f'--lvlm "{backend.models["lvlm"]}" --segmenter "{backend.models["sam"]}" --device cpu'
    )
    plugin.start_backend()
    assert wait_until(lambda: plugin.backend.status == "ready", 240), (plugin.backend.status, plugin.backend.message)
    yield plugin
    plugin.backend.stop_and_wait()


def test_the_daily_path(started, qgis_iface, tmp_path):
    plugin, canvas, project = started, qgis_iface.mapCanvas(), QgsProject.instance()
    assert not str(tmp_path).startswith(str(Path.home()))  # outside the home folder, the default data root
    raster = QgsRasterLayer(str(shutil.copy(ROOT / "resources" / "sample" / "riverside.tif", tmp_path / "r.tif")), "r")
    project.addMapLayer(raster)
    canvas.setDestinationCrs(raster.crs())
    canvas.setExtent(QgsRectangle(512050.3, 5261700.1, 512300.2, 5261950.4))
    view = canvas.extent().toString(6)
    plugin.dock.layer_box.setLayer(raster)

    ask(plugin, steps=1)
    assert plugin.controller.segment.plan.mode == "reference"  # read by the backend itself, any folder
    layers = plugin.store.find(raster.crs())
    results = layers["results"]
    assert results.featureCount() > 0 and on_pixel_corners(results, raster)
    assert "own resolution (0.5 m)" in plugin.dock.result.text() and canvas.extent().toString(6) == view
    asked = run_ids(results)

    assert plugin.dock.prompt_list.count() == 2  # the answer's two instances, ticked
    plugin.resegment()
    wait_for_steps(plugin, 2)
    resegmented = run_ids(results)
    assert len(resegmented) == 1 and resegmented != asked, "the re-segment replaced the run"
    assert {f["question"] for f in results.getFeatures()} == {PONDS}
    plugin.undo.undo()
    assert run_ids(results) == asked and layers["boxes"].featureCount() == 2
    plugin.undo.redo()
    assert run_ids(results) == resegmented

    exported = tmp_path / "export.gpkg"
    plugin.export_to(plugin.store.results_layers(), ExportChoice(str(exported), "ponds", selected_only=False))
    assert QgsVectorLayer(f"{exported}|layername=ponds", "e", "ogr").featureCount() == results.featureCount()

    output = Path(QgsProcessingUtils.generateTempFilename("batch.gpkg"))  # QGIS's temporary folder
    choice = BatchChoice(raster, raster.source(), PONDS, 384, 64, str(output), False, False)
    task = plugin.run_batch(choice)
    assert wait_until(lambda: task not in plugin.tasks, 300), plugin.dock.jobs.text()
    loaded = [layer for layer in project.mapLayers().values() if layer.customProperty("think2seg/batch_output")]
    assert {layer.name() for layer in loaded} == {f"segments — {PONDS}", "tiles (status)"}, plugin.notify.history[-1:]
    tiles = next(layer for layer in loaded if layer.name() == "tiles (status)")
    assert isinstance(tiles.renderer(), QgsCategorizedSymbolRenderer)
    assert tiles.featureCount() == tile_count(768, 768, 384, 64) == 9
    with sqlite3.connect(output) as db:  # GeoPackage 1.2: QGIS 3.22 opens it without a warning
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200

    algorithm = QgsApplication.processingRegistry().algorithmById("think2seg:segment_raster_by_question")
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    context.setProject(project)
    params = {"INPUT": raster, "QUESTION": PONDS, "TILE_SIZE": 768, "OVERLAP": 0, "OUTPUT": "TEMPORARY_OUTPUT"}
    outputs, ok = algorithm.run(params, context, feedback)
    assert ok, feedback.textLog()
    assert list(context.layersToLoadOnCompletion()) == [outputs["SEGMENTS"]]  # Processing adds it to the map
    assert QgsVectorLayer(outputs["SEGMENTS"], "s", "ogr").featureCount() > 0

    project.clear()  # File › New Project
    assert not [layer for layer in project.mapLayers().values() if layer.customProperty(ROLE)]
    assert plugin.undo.count() == 0 and plugin.dock.result.text() == "No result yet."
    raster = QgsRasterLayer(str(tmp_path / "r.tif"), "r")
    project.addMapLayer(raster)
    canvas.setExtent(raster.extent())
    plugin.dock.layer_box.setLayer(raster)
    ask(plugin, steps=1)
    assert len(run_ids(plugin.store.find(raster.crs())["results"])) == 1  # only the new project's run
