"""Export takes every results layer and creates nothing; the batch dialog can overwrite; one error
hierarchy."""

from __future__ import annotations

import json

from qgis.core import Qgis, QgsCoordinateReferenceSystem, QgsProject, QgsVectorLayer

from think2seg_qgis.api.errors import ApiError, from_reply
from think2seg_qgis.batch_dialog import BatchDialog
from think2seg_qgis.errors import ExportError, PromptError, ResultsError, RunInProgress, Think2SegError, TileError
from think2seg_qgis.export import ExportChoice, export_results
from think2seg_qgis.jobs import job_request

from qgis_helpers import FIXTURES


def golden(name: str) -> dict:
    return json.loads((FIXTURES / "api" / name).read_text())


def test_export_without_results_says_so_and_creates_nothing(plugin, raster, qgis_iface):
    plugin.dock.layer_box.setLayer(raster)
    layers_before = set(QgsProject.instance().mapLayers())
    plugin.export()
    infos = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Info)
    assert any("no results to export yet" in m for m in infos), infos
    assert set(QgsProject.instance().mapLayers()) == layers_before
    assert not plugin.store.file.path.exists()


def test_export_writes_every_crs_to_its_own_layer(plugin, qgis_iface, tmp_path):
    store, reply = plugin.store, golden("segment.reply.json")
    for authid in ("EPSG:32633", "EPSG:3857"):
        store.add(store.features(reply, QgsCoordinateReferenceSystem(authid), "/data/riverside.tif"))
    target = tmp_path / "export.gpkg"
    plugin.export_to(store.results_layers(), ExportChoice(str(target), "ponds", selected_only=False))
    successes = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Success)
    assert any("exported 2 polygons" in m for m in successes), successes
    for authid, name in (("EPSG:32633", "ponds_epsg_32633"), ("EPSG:3857", "ponds_epsg_3857")):
        exported = QgsVectorLayer(f"{target}|layername={name}", name, "ogr")
        assert exported.isValid() and exported.crs().authid() == authid and exported.featureCount() == 1
    try:
        export_results(store.results_layers(), ExportChoice(str(target), "ponds", selected_only=True))
        raise AssertionError("exporting an empty selection must be refused")
    except ExportError as exc:
        assert "no polygons are selected" in str(exc)
    (one,) = [layer for layer in store.results_layers() if layer.crs().authid() == "EPSG:3857"]
    one.selectAll()
    assert export_results(store.results_layers(), ExportChoice(str(target), "sel", selected_only=True)) == [("sel", 1)]


def test_batch_dialog_offers_overwrite_exclusive_with_resume(raster, tmp_path):
    from think2seg_qgis.settings import Settings

    dialog = BatchDialog("segment the river", raster, Settings())
    dialog.output.setFilePath(str(tmp_path / "out.gpkg"))
    dialog.resume.setChecked(True)
    dialog.overwrite.setChecked(True)
    assert not dialog.resume.isChecked()
    choice = dialog.choice()
    assert choice.overwrite and not choice.resume
    dialog.resume.setChecked(True)
    assert not dialog.overwrite.isChecked()

    request = job_request(
        choice.raster_path,
        choice.output_path,
        choice.question,
        tile_size_px=256,
        overlap_px=32,
        resume=False,
        overwrite=True,
        settings=Settings(),
    )
    assert request["overwrite"] is True and set(request) <= set(golden("job.request.json"))


def test_the_409_for_an_existing_output_says_what_to_tick():
    # the backend's words (server/jobs.py), in HTTP terms for every client
    message = "/data/out.gpkg already exists: set resume=true to continue the run in it, set overwrite=true to start again, or choose another name"
    body = {"error": {"code": "output_exists", "message": message}}
    error = from_reply(409, json.dumps(body).encode(), "http://127.0.0.1:8765")
    assert error.code == "output_exists" and "“Resume”" in error.message and "“Overwrite”" in error.message
    assert "set resume" not in error.message and "Batch… dialog" in error.message


def test_one_error_hierarchy():
    for error in (ApiError, TileError, PromptError, ResultsError, RunInProgress, ExportError):
        assert issubclass(error, Think2SegError)
    assert issubclass(TileError, ValueError) and issubclass(ResultsError, OSError) and issubclass(ApiError, OSError)
    assert str(ApiError("timeout", "the request timed out")) == "the request timed out"
