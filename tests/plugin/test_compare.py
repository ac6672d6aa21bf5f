"""“Compare with…”: the current raster as BEFORE, another raster layer as AFTER, the panel's question;
a change job for the visible extent in BEFORE's CRS, followed like a batch job; its appeared,
disappeared and persisted layers loaded into “Think2Seg change”, styled, with counts and areas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication, QDialogButtonBox

from think2seg_qgis import compat
from think2seg_qgis.compare import GROUP, OUTPUT_KEY, CompareDialog, change_request, load_change
from think2seg_qgis.settings import Settings

from conftest import SAMPLE
from qgis_helpers import FIXTURES, wait_until

BUILDINGS = "segment every building"
UTM = QgsCoordinateReferenceSystem("EPSG:32633")
# The sample raster covers 512000..512384 E, 5261616..5262000 N (EPSG:32633); the view is its north-west part.
VIEW = QgsRectangle(512000, 5261800, 512200, 5262000)
# What the fake backend's job writes: per layer, (area_m2 of each polygon), each polygon a 10 m square.
WRITTEN = {"appeared": [1400.0, 600.0], "disappeared": [900.0], "persisted": []}
Level = Qgis.MessageLevel
GREEN, RED, GREY = (77, 175, 74), (228, 26, 28), (160, 160, 160)


@pytest.fixture
def later(project, tmp_path) -> QgsRasterLayer:
    """AFTER: another raster file of the same place."""
    layer = QgsRasterLayer(str(shutil.copy(SAMPLE, tmp_path / "later.tif")), "later")
    assert layer.isValid()
    project.addMapLayer(layer)
    return layer


@pytest.fixture
def in_view(raster, qgis_iface) -> QgsRasterLayer:
    canvas = qgis_iface.mapCanvas()
    canvas.setExtent(VIEW)
    canvas.refresh()
    return raster


def write_change_output(body: dict) -> None:
    """The three change layers, as `think2seg change` writes them (polygons with area_m2, EPSG:32633)."""
    path = Path(body["output_path"])
    for number, (name, areas) in enumerate(WRITTEN.items()):
        fields = QgsFields()
        fields.append(QgsField("area_m2", compat.FIELD_DOUBLE))
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName, options.layerName = "GPKG", name
        options.actionOnExistingFile = (
            QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteLayer
            if number
            else QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile
        )
        context = QgsProject.instance().transformContext()
        writer = QgsVectorFileWriter.create(str(path), fields, compat.WKB_POLYGON, UTM, context, options)
        for k, area in enumerate(areas):
            feature = QgsFeature(fields)
            feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(512000 + 20 * k, 5261900, 512010 + 20 * k, 5261910)))
            feature.setAttribute("area_m2", area)
            writer.addFeature(feature)
        del writer


def change_layers(project: QgsProject) -> list[QgsVectorLayer]:
    return [layer for layer in project.mapLayers().values() if layer.customProperty(OUTPUT_KEY)]


def dialog_for(plugin, before, tmp_path, *, question: str = BUILDINGS) -> CompareDialog:
    plugin.dock.question.setEditText(question)
    dialog = plugin.compare.dialog(before)
    dialog.output.setFilePath(str(tmp_path / "change.gpkg"))
    return dialog


def bounds_of(rectangle: QgsRectangle) -> list[float]:
    return [rectangle.xMinimum(), rectangle.yMinimum(), rectangle.xMaximum(), rectangle.yMaximum()]


def test_the_action_is_in_the_raster_layers_menu_and_the_plugin_menu(plugin, qgis_iface):
    compare = plugin.compare
    qgis_iface.addCustomActionForLayerType.assert_any_call(compare.layer_action, "", compat.RASTER_LAYER, True)
    assert compare.layer_action.text() == "Think2Seg: Compare with…" and compare.menu_action.text() == "Compare with…"
    plugin.unload()
    qgis_iface.removeCustomActionForLayerType.assert_any_call(compare.layer_action)


def test_the_dialog_offers_the_other_rasters_and_the_panels_question(plugin, in_view, later, tmp_path):
    plugin.dock.question.setEditText(BUILDINGS)
    dialog = plugin.compare.dialog(in_view)
    assert dialog.question.text() == BUILDINGS
    assert dialog.after_box.currentLayer() is later
    assert in_view not in [dialog.after_box.layer(i) for i in range(dialog.after_box.count())]  # BEFORE is not AFTER
    assert dialog.output.filePath() == str(tmp_path / "riverside_vs_later_change.gpkg")
    dialog.output.setFilePath(str(tmp_path / "mine.gpkg"))
    dialog.after_box.setLayer(None)
    dialog.after_box.setLayer(later)
    assert dialog.output.filePath() == str(tmp_path / "mine.gpkg")  # a path the user chose stays


def test_a_change_runs_for_the_view_and_loads_three_styled_layers(
    plugin, fake_backend, in_view, later, tmp_path, qgis_iface
):
    fake_backend.on_change = write_change_output
    plugin.settings.min_score, plugin.settings.outline = 0.25, "regularize"
    choice = dialog_for(plugin, in_view, tmp_path).choice()
    task = plugin.compare.run(choice)
    assert wait_until(lambda: len(change_layers(plugin.project)) == 3, 20)
    assert wait_until(lambda: task not in plugin.compare.tasks, 10)
    (body,) = fake_backend.sent("POST", "/v1/change")
    assert body == {
        "before_path": in_view.source(),
        "after_path": later.source(),
        "question": BUILDINGS,
        "output_path": str(tmp_path / "change.gpkg"),
        "bounds": pytest.approx(bounds_of(qgis_iface.mapCanvas().extent().intersect(in_view.extent())), abs=1e-6),
        "bounds_crs": "EPSG:32633",
        "overwrite": False,
        "max_side_px": plugin.settings.max_side_px,
        "simplify_px": plugin.settings.simplify_px,
        "min_area_m2": plugin.settings.min_area_m2,
        "min_score": 0.25,
        "outline": "regularize",
    }
    group = plugin.project.layerTreeRoot().findGroup(GROUP).findGroup(f"{BUILDINGS} (change.gpkg)")
    names = [node.layer().name() for node in group.findLayers()]
    assert names == [
        "appeared — 2 polygons, 2,000.0 m²",
        "disappeared — 1 polygon, 900.0 m²",
        "persisted — 0 polygons, 0.0 m²",
    ]
    expected = {"appeared": GREEN, "disappeared": RED, "persisted": GREY}
    for node, (name, rgb) in zip(group.findLayers(), expected.items()):
        colour = node.layer().renderer().symbol().color()
        assert (colour.red(), colour.green(), colour.blue()) == rgb, name
        assert node.layer().crs().authid() == "EPSG:32633"
    level, text = plugin.notify.history[-1]
    assert level == Level.Success and text.startswith(f"Change “{BUILDINGS}” done: appeared: 2 polygons")
    assert f"{GROUP} › {BUILDINGS} (change.gpkg)" in text


def test_the_bounds_are_in_befores_crs_whatever_the_maps(plugin, fake_backend, raster, later, tmp_path, qgis_iface):
    canvas = qgis_iface.mapCanvas()
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    canvas.setDestinationCrs(wgs84)
    canvas.setExtent(QgsCoordinateTransform(UTM, wgs84, plugin.project).transformBoundingBox(VIEW))
    fake_backend.on_change = write_change_output
    plugin.compare.run(dialog_for(plugin, raster, tmp_path).choice())
    assert wait_until(lambda: fake_backend.sent("POST", "/v1/change"), 10)
    body = fake_backend.sent("POST", "/v1/change")[0]
    assert body["bounds_crs"] == "EPSG:32633"
    seen = QgsCoordinateTransform(wgs84, UTM, plugin.project).transformBoundingBox(canvas.extent())
    assert body["bounds"] == pytest.approx(bounds_of(seen.intersect(raster.extent())), abs=1e-6)
    minx, miny, maxx, maxy = body["bounds"]
    assert (minx, maxy) == (512000, 5262000) and 5261616 < miny < 5261800  # metres of UTM, not degrees
    assert wait_until(lambda: len(change_layers(plugin.project)) == 3, 20)


def test_what_cannot_be_compared_is_said_before_anything_is_sent(plugin, fake_backend, in_view, later, tmp_path):
    dialog = dialog_for(plugin, in_view, tmp_path, question="  ")
    assert "type a question first" in dialog.choice()
    dialog.question.setText(BUILDINGS)
    xyz = QgsRasterLayer(f"type=xyz&url=file://{tmp_path}/{{z}}/{{x}}/{{y}}.png&zmax=19&crs=EPSG:32633", "xyz", "wms")
    plugin.project.addMapLayer(xyz)
    dialog.after_box.setLayer(xyz)
    assert dialog.choice().startswith("After (xyz) is not a raster file the backend can read")
    twin = QgsRasterLayer(in_view.source(), "same file")
    plugin.project.addMapLayer(twin)
    dialog.after_box.setLayer(twin)
    assert "Before and After are the same file" in dialog.choice()
    dialog.after_box.setLayer(later)
    (tmp_path / "change.gpkg").write_bytes(b"")
    assert "already exists: tick “Overwrite”" in dialog.choice()
    dialog.overwrite.setChecked(True)
    assert dialog.choice().overwrite
    dialog.visible = QgsRectangle(600000, 5000000, 600100, 5000100)
    assert dialog.choice() == "Before (riverside) is not in view: pan or zoom to it"
    assert not fake_backend.sent("POST", "/v1/change")


def test_an_after_that_misses_the_view_is_refused(plugin, in_view, tmp_path):
    away = QgsRasterLayer(str(moved_copy(tmp_path / "away.vrt", east_m=88000, north_m=-262000)), "away")
    assert away.isValid() and away.extent().xMinimum() == 600000
    plugin.project.addMapLayer(away)
    dialog = dialog_for(plugin, in_view, tmp_path)
    dialog.after_box.setLayer(away)
    assert dialog.choice() == "After (away) does not cover the visible part of Before: pan to where both rasters are"


def moved_copy(path: Path, *, east_m: float, north_m: float) -> Path:
    """A VRT of the sample's first band, placed ``east_m``, ``north_m`` away (a file GDAL reads)."""
    sample = QgsRasterLayer(str(SAMPLE), "sample")
    extent, width, height = sample.extent(), sample.width(), sample.height()
    size = extent.width() / width
    transform = f"{extent.xMinimum() + east_m}, {size}, 0, {extent.yMaximum() + north_m}, 0, {-size}"
    path.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>EPSG:32633</SRS>'
        f"<GeoTransform>{transform}</GeoTransform>"
        '<VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{SAMPLE}</SourceFilename><SourceBand>1</SourceBand>'
        "</SimpleSource></VRTRasterBand></VRTDataset>"
    )
    return path


def test_a_refused_change_says_what_to_do_in_qgis_terms(plugin, fake_backend, in_view, later, tmp_path):
    message = f"the after_path {later.source()} resolves to it, outside the data roots (/data): "
    message += "start the server with --data-root FOLDER to allow that folder"
    fake_backend.change_error = (403, {"error": {"code": "path_not_allowed", "message": message}})
    task = plugin.compare.run(dialog_for(plugin, in_view, tmp_path).choice())
    assert wait_until(lambda: task not in plugin.compare.tasks, 10)
    level, text = plugin.notify.history[-1]
    assert level == Level.Critical and text.startswith(f"Change “{BUILDINGS}” failed: the after_path")
    assert "start the backend from the Think2Seg panel" in text and "--data-root FOLDER" in text
    assert not change_layers(plugin.project)


def test_a_cancelled_change_asks_the_backend_to_stop_and_loads_nothing(plugin, fake_backend, in_view, later, tmp_path):
    fake_backend.job_message = "0 of 2 dates segmented"
    task = plugin.compare.run(dialog_for(plugin, in_view, tmp_path).choice())
    assert wait_until(lambda: task.description().endswith("— 0 of 2 dates segmented"), 10)
    task.cancel()
    assert wait_until(lambda: QgsApplication.taskManager().countActiveTasks() == 0, 20)
    assert wait_until(lambda: task not in plugin.compare.tasks, 10)
    assert fake_backend.sent("DELETE", "/v1/jobs/job1") == [{}]
    level, text = plugin.notify.history[-1]
    assert level == Level.Info and "stopped before it compared the dates: nothing was written" in text
    assert not change_layers(plugin.project)


def test_a_rerun_into_the_same_output_replaces_its_layers(plugin, fake_backend, in_view, later, tmp_path):
    fake_backend.on_change = write_change_output
    for _ in range(2):
        choice = dialog_for(plugin, in_view, tmp_path).choice()
        if isinstance(choice, str):  # the second time the file exists
            dialog = dialog_for(plugin, in_view, tmp_path)
            dialog.overwrite.setChecked(True)
            choice = dialog.choice()
        task = plugin.compare.run(choice)
        assert wait_until(lambda t=task: t not in plugin.compare.tasks, 20)
    assert len(change_layers(plugin.project)) == 3
    assert len(plugin.project.layerTreeRoot().findGroup(GROUP).findGroups()) == 1
    load_change(plugin.project, str(tmp_path / "change.gpkg"), BUILDINGS)  # loading it again replaces them too
    assert len(change_layers(plugin.project)) == 3
    assert len(plugin.project.layerTreeRoot().findGroup(GROUP).findGroups()) == 1


def test_the_layer_menu_action_opens_the_dialog_on_the_right_clicked_raster(
    plugin, fake_backend, in_view, later, tmp_path, qgis_iface
):
    fake_backend.on_change = write_change_output
    qgis_iface.setActiveLayer(in_view)
    plugin.dock.question.setEditText(BUILDINGS)
    seen = []

    def accept() -> None:
        dialog = QApplication.activeModalWidget()
        seen.append(dialog)
        dialog.output.setFilePath(str(tmp_path / "menu.gpkg"))
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()

    QTimer.singleShot(0, accept)
    plugin.compare.layer_action.trigger()
    assert isinstance(seen[0], CompareDialog) and seen[0].before is in_view
    assert wait_until(lambda: len(change_layers(plugin.project)) == 3, 20)
    (body,) = fake_backend.sent("POST", "/v1/change")
    assert (body["before_path"], body["after_path"], body["output_path"]) == (
        in_view.source(),
        later.source(),
        str(tmp_path / "menu.gpkg"),
    )


def test_the_request_fits_the_backends_schema(in_view, later, tmp_path):
    dialog = CompareDialog(in_view, BUILDINGS, Settings(), VIEW)
    dialog.output.setFilePath(str(tmp_path / "c.gpkg"))
    request = change_request(dialog.choice(), Settings())
    golden = json.loads((FIXTURES / "api" / "change.request.json").read_text())
    assert set(request) <= set(golden)
