"""Issue 11, item 2: results belong to the project and the dock says where they are.

A saved project keeps them beside it; an unsaved one in a temporary file of its own, moved beside
the project when it is first saved, and offered to keep when it is closed unsaved. A new project
shows nothing of the old one."""

from __future__ import annotations

import shutil

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer

from think2seg_qgis.results import ROLE

from qgis_helpers import ROOT, wait_until

SAMPLE = ROOT / "resources" / "sample" / "riverside.tif"
RIVER = "segment the river"


def load_raster(plugin, qgis_iface, tmp_path, name: str = "riverside.tif") -> QgsRasterLayer:
    layer = QgsRasterLayer(str(shutil.copy(SAMPLE, tmp_path / name)), "riverside")
    QgsProject.instance().addMapLayer(layer)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(layer.extent())
    plugin.dock.layer_box.setLayer(layer)
    return layer


def ask(plugin) -> None:
    plugin.dock.question.setEditText(RIVER)
    plugin.controller.ask()
    assert wait_until(lambda: plugin.dock.run_button.isEnabled() and plugin.undo.count(), 10)


def ours() -> list[QgsVectorLayer]:
    return [layer for layer in QgsProject.instance().mapLayers().values() if layer.customProperty(ROLE)]


def test_a_saved_project_keeps_its_results_beside_it_in_a_file_of_its_own(plugin, raster, project, tmp_path):
    plugin.dock.layer_box.setLayer(raster)
    ask(plugin)
    (results,) = plugin.store.results_layers()
    assert results.source().split("|")[0] == str(tmp_path / "project_think2seg.gpkg")
    assert plugin.dock.results_file.full_text() == "Results: project_think2seg.gpkg (beside the project)"
    assert plugin.dock.results_file.toolTip() == str(tmp_path / "project_think2seg.gpkg")


def test_an_unsaved_project_has_its_own_temporary_file_and_a_new_project_shows_nothing_old(
    plugin, qgis_iface, tmp_path
):
    QgsProject.instance().clear()  # File › New Project
    load_raster(plugin, qgis_iface, tmp_path)
    ask(plugin)
    first = plugin.store.file.path
    assert first.exists() and first.name.startswith("think2seg-unsaved-") and first.parent != tmp_path
    assert "temporary file until you save the project" in plugin.dock.results_file.full_text()
    assert plugin.dock.results_file.toolTip() == str(first)
    assert str(QgsApplication.qgisSettingsDirPath()) not in str(first)  # not one file for every project

    qgis_iface.messageBar().clear_messages()
    QgsProject.instance().clear()  # another new project
    assert ours() == [] and plugin.undo.count() == 0 and plugin.dock.result.text() == "No result yet."
    assert plugin.dock.prompt_list.count() == 0
    (offer,) = [item for item in qgis_iface.messageBar().items() if str(first) in item.text()]
    assert "temporary file" in offer.text() and "keep" in offer.text()
    kept = tmp_path / "kept.gpkg"
    plugin.keep_results(first, kept)
    assert QgsVectorLayer(f"{kept}|layername=results_epsg_32633", "r", "ogr").featureCount() == 1

    load_raster(plugin, qgis_iface, tmp_path, "second.tif")
    ask(plugin)  # the new project's first question
    (results,) = plugin.store.results_layers()
    assert results.featureCount() == 1, "the new project shows only its own polygon"
    assert plugin.store.file.path != first


def test_saving_an_unsaved_project_moves_its_results_beside_it(plugin, qgis_iface, tmp_path):
    QgsProject.instance().clear()
    load_raster(plugin, qgis_iface, tmp_path)
    ask(plugin)
    temporary = plugin.store.file.path
    project_file = tmp_path / "survey.qgz"
    assert QgsProject.instance().write(str(project_file))
    target = tmp_path / "survey_think2seg.gpkg"
    assert wait_until(lambda: target.exists() and not QgsProject.instance().isDirty(), 10)
    for layer in ours():
        assert layer.source().split("|")[0] == str(target) and layer.isValid()
    assert plugin.store.results_layers()[0].featureCount() == 1
    assert plugin.dock.results_file.full_text() == "Results: survey_think2seg.gpkg (beside the project)"
    QgsProject.instance().clear()
    assert QgsProject.instance().read(str(project_file))  # the saved project finds them there again
    (results,) = [layer for layer in ours() if layer.customProperty(ROLE) == "results"]
    assert results.source().split("|")[0] == str(target) and results.featureCount() == 1
    assert temporary != target
