"""Issue 11, item 8: batch results are layers a user can tell apart and trust: one set per output
(reloading or overwriting replaces it), in the Think2Seg group, styled, with the tiles' status
layer; the dialog remembers its values, has the CLI's area choices and tells the tile count."""

from __future__ import annotations

import json

import job_output
from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)

from think2seg_qgis import compat
from think2seg_qgis.batch_dialog import AOI, VISIBLE, BatchDialog, tile_count
from think2seg_qgis.batch_layers import OUTPUT_KEY, load_output
from think2seg_qgis.jobs import job_request
from think2seg_qgis.results import GROUP
from think2seg_qgis.settings import Settings

from qgis_helpers import FIXTURES, wait_until

RIVER = "segment the river"
CRS = QgsCoordinateReferenceSystem("EPSG:32633")


def write_layer(path, name: str, fields: list[tuple[str, object]], rows: list[dict], rect: QgsRectangle) -> None:
    """Layer ``name`` of ``path``: one ``rect`` polygon per row of attributes."""
    job_output.write_layer(str(path), name, fields, [(rect, values) for values in rows])


def batch_output(path) -> None:
    """A file shaped like a `think2seg batch` output (its segments and tiles layers)."""
    rect = QgsRectangle(512000, 5261616, 512100, 5261716)
    write_layer(path, "segments", [("area_m2", compat.FIELD_DOUBLE)], [{"area_m2": 1e4}], rect)
    tiles = [{"tile_id": i, "status": s} for i, s in enumerate(("ok", "failed", "no_target"))]
    write_layer(path, "tiles", [("tile_id", compat.FIELD_INT), ("status", compat.FIELD_STRING)], tiles, rect)


def batch_layers(project: QgsProject) -> list[QgsVectorLayer]:
    return [layer for layer in project.mapLayers().values() if layer.customProperty(OUTPUT_KEY)]


def test_a_batch_output_is_one_styled_set_of_layers_in_the_think2seg_group(project, tmp_path):
    output = tmp_path / "river.gpkg"
    batch_output(output)
    for _ in range(2):  # a rerun, a resume or an overwrite of the same output reloads it
        layers = load_output(project, str(output), RIVER)
    assert len(batch_layers(project)) == 2, "no duplicates"
    assert {layer.name() for layer in batch_layers(project)} == {f"segments — {RIVER}", "tiles (status)"}
    group = project.layerTreeRoot().findGroup(GROUP).findGroup(f"{RIVER} (river.gpkg)")
    assert [node.layer() for node in group.findLayers()] == [layers["segments"], layers["tiles"]]
    tiles = layers["tiles"].renderer()
    assert isinstance(tiles, QgsCategorizedSymbolRenderer) and tiles.classAttribute() == "status"
    assert {c.value() for c in tiles.categories()} >= {"ok", "failed", "no_target", "unparseable"}
    assert layers["segments"].renderer().symbol().color().name() == "#ff7f00"  # not a random colour


def test_overwrite_removes_the_stale_copy_before_the_job_starts(plugin, fake_backend, raster, tmp_path):
    output = tmp_path / "river.gpkg"
    batch_output(output)
    load_output(QgsProject.instance(), str(output), RIVER)
    dialog = BatchDialog(RIVER, raster, plugin.settings)
    dialog.output.setFilePath(str(output))
    dialog.overwrite.setChecked(True)
    plugin.run_batch(dialog.choice())
    assert batch_layers(QgsProject.instance()) == []  # the old layers do not survive an Overwrite
    assert wait_until(lambda: fake_backend.sent("POST", "/v1/jobs"), 10)
    assert fake_backend.sent("POST", "/v1/jobs")[0]["overwrite"] is True
    for task in list(plugin.tasks):
        task.cancel()


def test_the_dialog_remembers_its_values_and_tells_the_tile_count(raster, tmp_path):
    settings = Settings()
    dialog = BatchDialog(RIVER, raster, settings)
    assert dialog.tiles.text() == "1 tile over 768 x 768 px"  # the 768 px sample fits one 1024 px tile
    dialog.tile_size.setValue(256)
    dialog.overlap.setValue(32)
    assert (
        dialog.tiles.text()
        == f"{tile_count(768, 768, 256, 32)} tiles over 768 x 768 px"
        == "16 tiles over 768 x 768 px"
    )
    dialog.overlap.setValue(500)
    assert dialog.overlap.value() == 128  # at most half a tile, as the backend requires
    dialog.overlap.setValue(32)
    dialog.output.setFilePath(str(tmp_path / "runs" / "river.gpkg"))
    assert not isinstance(dialog.choice(), str)
    again = BatchDialog(RIVER, raster, settings)
    assert (again.tile_size.value(), again.overlap.value()) == (256, 32)
    assert again.output.filePath() == str(tmp_path / "runs" / "riverside_think2seg.gpkg")


def test_the_dialog_limits_a_run_to_the_visible_extent_or_an_area_of_interest(raster, project, tmp_path):
    visible = QgsRectangle(512100, 5261700, 512300, 5261900)
    dialog = BatchDialog(RIVER, raster, Settings(), visible=visible, visible_crs=CRS)
    dialog.output.setFilePath(str(tmp_path / "out.gpkg"))
    dialog.area_buttons[VISIBLE].setChecked(True)
    dialog.tile_size.setValue(128)
    dialog.overlap.setValue(0)
    dialog._update_tiles()
    assert dialog.tiles.text() == "16 tiles over 400 x 400 px"
    choice = dialog.choice()
    assert choice.bounds == [512100.0, 5261700.0, 512300.0, 5261900.0] and choice.aoi_path is None
    request = job_request(
        choice.raster_path,
        choice.output_path,
        choice.question,
        tile_size_px=128,
        overlap_px=0,
        resume=False,
        bounds=choice.bounds,
        bounds_crs="EPSG:32633",
        settings=Settings(),
    )
    assert set(request) <= set(json.loads((FIXTURES / "api" / "job.request.json").read_text()))

    aoi_file = tmp_path / "aoi.gpkg"
    write_layer(
        aoi_file,
        "aoi",
        [("name", compat.FIELD_STRING)],
        [{"name": "a"}],
        QgsRectangle(512000, 5261616, 512100, 5261716),
    )
    aoi = QgsVectorLayer(str(aoi_file), "aoi", "ogr")
    project.addMapLayer(aoi)
    assert dialog.aoi_box.currentLayer() is None  # no area of interest until one is chosen
    dialog.aoi_box.setLayer(aoi)
    assert dialog.area_choice() == AOI  # choosing one limits the run to it
    assert dialog.tiles.text().startswith("at most 4 tiles over 200 x 200 px")
    assert dialog.choice().aoi_path == str(aoi_file) and dialog.choice().bounds is None
    memory = QgsVectorLayer("Polygon?crs=EPSG:32633", "scratch", "memory")
    project.addMapLayer(memory)
    dialog.aoi_box.setLayer(memory)
    assert "not a file" in dialog.choice()
