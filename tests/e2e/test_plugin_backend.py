"""The plugin in real QGIS against a real `think2seg serve` running the tiny models."""

from __future__ import annotations

import zipfile

import pytest
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

from think2seg_qgis.export import ExportChoice, export_layer
from think2seg_qgis.jobs import job_request

from conftest import wait_until

PONDS = "segment the ponds"  # the tiny model answers it with two instances
PONDS_ANSWER_START = "<think>Two ponds"


def ask(plugin, question: str, timeout_s: float = 120) -> None:
    plugin.dock.question.setEditText(question)
    plugin.controller.ask()
    assert wait_until(lambda: plugin.dock.run_button.isEnabled(), timeout_s), "the run did not finish"


def view(canvas, layer, rectangle: QgsRectangle | None = None) -> None:
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(rectangle or layer.extent())


def messages(qgis_iface, level=Qgis.MessageLevel.Critical) -> list[str]:
    return qgis_iface.messageBar().get_messages(level)


def test_question_puts_polygons_in_the_results_layer_and_undo_removes_them(plugin, raster_layer, qgis_iface, tmp_path):
    canvas = qgis_iface.mapCanvas()
    window = QgsRectangle(512050, 5261700, 512300, 5261950)
    view(canvas, raster_layer, window)
    plugin.dock.layer_box.setLayer(raster_layer)
    streamed: list[str] = []
    plugin.controller.segment.reasoning.connect(streamed.append)
    ask(plugin, PONDS)
    assert not messages(qgis_iface), messages(qgis_iface)
    assert len(streamed) > 1 and "".join(streamed).startswith(PONDS_ANSWER_START)  # streamed as it was written
    assert plugin.dock.reasoning.toPlainText().startswith("Two ponds, one in each corner.")
    assert f"“{PONDS}” — ok:" in plugin.dock.result.text() and "own resolution (0.5 m)" in plugin.dock.result.text()
    layers = plugin.store.layers(raster_layer.crs())
    results, boxes, points = layers["results"], layers["boxes"], layers["points"]
    assert results.crs().authid() == "EPSG:32633" and results.name() == "Think2Seg results"
    assert results.featureCount() > 0 and boxes.featureCount() == 2 and points.featureCount() == 4
    visible = QgsGeometry.fromRect(canvas.extent().intersect(raster_layer.extent())).buffer(
        raster_layer.rasterUnitsPerPixelX(), 1
    )
    assert all(visible.contains(f.geometry()) for f in results.getFeatures())
    feature = next(results.getFeatures())
    assert feature["question"] == PONDS and feature["status"] == "ok" and feature["area_m2"] > 0
    assert feature["model"] and feature["segmenter"] and feature["created_at"]
    assert PONDS in plugin.settings.history

    plugin.undo.undo()
    assert results.featureCount() == 0 and boxes.featureCount() == 0
    plugin.undo.redo()
    count = results.featureCount()
    assert count > 0

    choice = ExportChoice(str(tmp_path / "export.gpkg"), "ponds", selected_only=False)
    assert export_layer(results, choice) == ""
    exported = QgsVectorLayer(f"{choice.path}|layername=ponds", "exported", "ogr")
    assert exported.isValid() and exported.featureCount() == count and exported.crs().authid() == "EPSG:32633"
    results.selectByIds([next(results.getFeatures()).id()])
    assert export_layer(results, ExportChoice(choice.path, "one", selected_only=True)) == ""
    assert QgsVectorLayer(f"{choice.path}|layername=one", "one", "ogr").featureCount() == 1


# A Web Mercator view and the bounds it must give on the sample raster (EPSG:32633, 512000..512384 E,
# 5261616..5262000 N), computed apart from QGIS with pyproj (PROJ 9):
#   Transformer.from_crs("EPSG:3857", "EPSG:32633", always_xy=True).transform_bounds(*VIEW_3857, densify_pts=21)
#   = (512180.818, 5261570.532, 512451.962, 5261840.849), clipped to the raster below.
# The view's image is slightly rotated (meridian convergence), so its west edge spans 512180.818..512181.379.
VIEW_3857 = QgsRectangle(1687800.0, 6025300.0, 1688200.0, 6025700.0)  # square, like the 600x600 test canvas
EXPECTED_32633 = (512180.818, 5261616.0, 512384.0, 5261840.849)


@pytest.fixture
def square_canvas(qgis_iface):
    """The test canvas laid out at its 600x600 size (hidden, its map is 98x28 px), so a square view
    is shown exactly as set."""
    window, canvas = qgis_iface.mainWindow(), qgis_iface.mapCanvas()
    window.show()
    size = canvas.mapSettings().outputSize
    assert wait_until(lambda: size().width() == size().height() > 100, 5), size()
    yield canvas
    window.hide()


def test_canvas_in_another_crs_sends_the_right_bounds(plugin, raster_layer, square_canvas):
    canvas = square_canvas
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    canvas.setExtent(VIEW_3857)
    assert canvas.extent().toString(3) == VIEW_3857.toString(3)  # the view is exactly the one set
    plugin.dock.layer_box.setLayer(raster_layer)
    ask(plugin, "segment the river")
    plan = plugin.controller.segment.plan
    bounds = (plan.bounds.xMinimum(), plan.bounds.yMinimum(), plan.bounds.xMaximum(), plan.bounds.yMaximum())
    assert plan.crs.authid() == "EPSG:32633"
    assert all(abs(got - want) < 0.01 for got, want in zip(bounds, EXPECTED_32633)), bounds
    assert plan.reference_body()["bounds_crs"] == "EPSG:32633"
    results = plugin.store.layers(raster_layer.crs())["results"]
    footprint = QgsGeometry.fromRect(QgsRectangle(*EXPECTED_32633)).buffer(
        raster_layer.rasterUnitsPerPixelX(), 1
    )  # windows snap out to whole pixels
    assert results.featureCount() > 0 and all(footprint.contains(f.geometry()) for f in results.getFeatures())


def test_gdal_layer_that_is_not_a_local_file_has_its_pixels_uploaded(plugin, backend, qgis_iface, tmp_path):
    archive = tmp_path / "riverside.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(
            backend.data_root / "riverside.tif" if (backend.data_root / "riverside.tif").exists() else _sample(),
            "riverside.tif",
        )
    layer = QgsRasterLayer(f"/vsizip/{archive}/riverside.tif", "zipped")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    view(qgis_iface.mapCanvas(), layer, QgsRectangle(512100, 5261700, 512300, 5261900))
    plugin.dock.layer_box.setLayer(layer)
    ask(plugin, PONDS)
    assert plugin.controller.segment.plan.mode == "pixels"  # read here at its own grid, not rendered
    assert not messages(qgis_iface), messages(qgis_iface)
    assert plugin.store.layers(layer.crs())["boxes"].featureCount() == 2
    assert_on_pixel_corners(plugin.store.layers(layer.crs())["results"], layer)


def assert_on_pixel_corners(results, layer) -> None:
    """Every vertex of every polygon lies on a corner of the raster's own pixels."""
    extent, size = layer.extent(), layer.rasterUnitsPerPixelX()
    assert results.featureCount() > 0
    for feature in results.getFeatures():
        for vertex in feature.geometry().vertices():
            for offset in ((vertex.x() - extent.xMinimum()) / size, (extent.yMaximum() - vertex.y()) / size):
                assert abs(offset - round(offset)) < 1e-6, (vertex.x(), vertex.y())
            assert extent.contains(vertex.x(), vertex.y())


def _sample():
    from qgis_helpers import ROOT

    return ROOT / "resources" / "sample" / "riverside.tif"


def test_resegment_runs_sam_alone_on_the_moved_prompts(plugin, raster_layer, qgis_iface):
    view(qgis_iface.mapCanvas(), raster_layer)
    plugin.dock.layer_box.setLayer(raster_layer)
    ask(plugin, "segment the river")
    boxes = plugin.store.layers(raster_layer.crs())["boxes"]
    (box,) = list(boxes.getFeatures())
    moved = box.geometry().boundingBox()
    moved.scale(0.5)
    boxes.dataProvider().changeGeometryValues({box.id(): QgsGeometry.fromRect(moved)})
    from think2seg_qgis.prompts import collect

    sent = collect(plugin.store, raster_layer).prompts
    assert len(sent) == 1 and sent[0]["box"] == [moved.xMinimum(), moved.yMinimum(), moved.xMaximum(), moved.yMaximum()]
    assert len(sent[0]["points"]) == 2
    plugin.resegment()
    assert wait_until(lambda: plugin.dock.run_button.isEnabled(), 60)
    assert not messages(qgis_iface), messages(qgis_iface)
    results = plugin.store.layers(raster_layer.crs())["results"]
    resegmented = [f for f in results.getFeatures() if f["model"] in ("", None)]
    assert resegmented, "the re-segmented polygons say no LVLM was used"
    returned = [f.geometry().boundingBox() for f in boxes.getFeatures() if f.id() != box.id()]
    assert len(returned) == 1 and returned[0].toString(3) == moved.toString(3)  # the server segmented the moved box
    assert plugin.undo.count() == 2


def test_drawn_box_is_resegmented_once_then_the_returned_prompts_again(plugin, raster_layer, qgis_iface):
    from think2seg_qgis.prompts import DRAWN, add_drawn

    view(qgis_iface.mapCanvas(), raster_layer)
    plugin.dock.layer_box.setLayer(raster_layer)
    add_drawn(plugin.store, raster_layer, "box", QgsGeometry.fromRect(QgsRectangle(512100, 5261700, 512200, 5261800)))
    layers = plugin.store.layers(raster_layer.crs())
    for _ in range(2):  # the second time sends the first reply's prompts: the drawn box is gone
        plugin.resegment()
        assert wait_until(lambda: plugin.dock.run_button.isEnabled(), 60)
        assert not messages(qgis_iface), messages(qgis_iface)
        assert not [f for f in layers["boxes"].getFeatures() if f["run_id"] == DRAWN]
    assert plugin.undo.count() == 2 and layers["boxes"].featureCount() == 1  # each re-segment replaced the last
    view(qgis_iface.mapCanvas(), raster_layer, QgsRectangle(512300, 5261616, 512384, 5261700))  # pan away
    plugin.resegment()
    warnings = messages(qgis_iface, Qgis.MessageLevel.Warning)
    assert any("pan or zoom" in m for m in warnings) and not messages(qgis_iface), warnings


def test_batch_job_shows_progress_can_be_cancelled_and_adds_its_layer(plugin, raster_layer, backend, qgis_iface):
    output = backend.data_root / "batch.gpkg"
    output.unlink(missing_ok=True)
    request = job_request(
        str(backend.data_root / "riverside.tif"),
        str(output),
        PONDS,
        tile_size_px=256,
        overlap_px=32,
        resume=False,
        settings=plugin.settings,
    )
    task = plugin.start_job(request)
    assert wait_until(lambda: task.status() in (task.TaskStatus.Complete, task.TaskStatus.Terminated), 300)
    assert task.status() == task.TaskStatus.Complete, task.error
    assert any(layer.name() == f"segments — {PONDS}" for layer in QgsProject.instance().mapLayers().values())
    assert messages(qgis_iface, Qgis.MessageLevel.Success)

    output2 = backend.data_root / "batch_cancelled.gpkg"
    output2.unlink(missing_ok=True)
    progress: list[float] = []
    request = job_request(
        str(backend.data_root / "riverside.tif"),
        str(output2),
        PONDS,
        tile_size_px=96,
        overlap_px=16,
        resume=False,
        settings=plugin.settings,
    )
    task = plugin.start_job(request)
    task.progressChanged.connect(progress.append)
    assert wait_until(lambda: progress and progress[-1] > 0, 300), "no progress was reported"
    task.cancel()
    stopped = [item for item in qgis_iface.messageBar().items() if "stopped after" in item.text()]
    assert wait_until(lambda: [i for i in qgis_iface.messageBar().items() if "stopped after" in i.text()], 120)
    (item,) = [i for i in qgis_iface.messageBar().items() if "stopped after" in i.text()]
    assert "Resume" in item.text() and not stopped  # says what to do, in QGIS terms, with a Resume button
    assert output2.exists()  # resumable: the finished tiles are in it
    assert QgsApplication.taskManager().countActiveTasks() == 0


def test_offline_backend_and_wrong_token_give_clear_messages(plugin, raster_layer, qgis_iface, tmp_path):
    view(qgis_iface.mapCanvas(), raster_layer)
    plugin.dock.layer_box.setLayer(raster_layer)
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token-0123456789")
    plugin.settings.token_file = str(wrong)
    ask(plugin, PONDS)
    assert any("refused the token" in m for m in messages(qgis_iface)), messages(qgis_iface)
    qgis_iface.messageBar().clear_messages()
    plugin.settings.backend_url = "http://127.0.0.1:9"  # nothing listens there
    ask(plugin, PONDS)
    assert any("not reachable" in m and "Start" in m for m in messages(qgis_iface)), messages(qgis_iface)
    plugin.backend.check()
    assert wait_until(lambda: plugin.backend.status == "offline", 30)
    assert "offline" in plugin.dock.status.full_text()


def test_no_raster_layer_is_explained(plugin, qgis_iface):
    plugin.dock.layer_box.setLayer(None)
    plugin.dock.question.setEditText(PONDS)
    plugin.controller.ask()
    assert any("choose a raster layer" in m for m in messages(qgis_iface, Qgis.MessageLevel.Warning))


def test_processing_algorithm_runs_a_batch_job(plugin, raster_layer, backend, qgis_processing):
    import processing

    output = backend.data_root / "processing.gpkg"
    output.unlink(missing_ok=True)
    params = {
        "INPUT": raster_layer,
        "QUESTION": PONDS,
        "TILE_SIZE": 384,
        "OVERLAP": 64,
        "RESUME": False,
        "OUTPUT": str(output),
    }
    result = processing.run("think2seg:segment_raster_by_question", params)
    assert result["OUTPUT"] == str(output)
    segments = QgsVectorLayer(result["SEGMENTS"], "segments", "ogr")
    assert segments.isValid() and segments.crs().authid() == "EPSG:32633" and segments.featureCount() > 0


def test_processing_with_classes_runs_one_batch_job_with_a_class_per_polygon(
    plugin, raster_layer, backend, qgis_processing
):
    """Several classes through Processing: one real batch job asks both of every tile, each polygon
    keeps its class, and the overlaps between the classes are measured in the file."""
    import processing

    output = backend.data_root / "processing_classes.gpkg"
    output.unlink(missing_ok=True)
    params = {
        "INPUT": raster_layer,
        "CLASSES": f"river: segment the river\nponds: {PONDS}",
        "TILE_SIZE": 384,
        "OVERLAP": 64,
        "RESUME": False,
        "OUTPUT": str(output),
    }
    result = processing.run("think2seg:segment_raster_by_question", params)
    segments = QgsVectorLayer(result["SEGMENTS"], "segments", "ogr")
    assert segments.isValid() and segments.crs().authid() == "EPSG:32633"
    field = segments.fields().indexOf("class")
    assert field >= 0 and set(segments.uniqueValues(field)) == {"river", "ponds"}
    runs = QgsVectorLayer(f"{output}|layername=runs", "runs", "ogr")
    assert runs.featureCount() == 2  # one row per question, one file
    overlaps = QgsVectorLayer(f"{output}|layername=class_overlaps", "overlaps", "ogr")
    assert overlaps.isValid()


def test_raster_the_backend_may_not_read_is_uploaded_instead(plugin, qgis_iface, tmp_path):
    import shutil

    outside = shutil.copy(_sample(), tmp_path / "outside_roots.tif")  # not under the backend's --data-root
    layer = QgsRasterLayer(str(outside), "outside")
    QgsProject.instance().addMapLayer(layer)
    view(qgis_iface.mapCanvas(), layer, QgsRectangle(512100, 5261700, 512300, 5261900))
    plugin.dock.layer_box.setLayer(layer)
    ask(plugin, PONDS)
    assert not messages(qgis_iface), messages(qgis_iface)
    plan = plugin.controller.segment.plan
    assert plan.mode == "pixels" and "may not read this folder" in plan.note  # its pixels, not a screen render
    assert "own resolution (0.5 m)" in plugin.dock.result.text() and plan.note in plugin.dock.result.text()
    assert plugin.store.layers(layer.crs())["boxes"].featureCount() == 2
    assert_on_pixel_corners(plugin.store.layers(layer.crs())["results"], layer)


def test_start_launches_serve_waits_for_health_and_stop_ends_it(plugin, backend, qgis_iface):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    plugin.settings.backend_url = f"http://127.0.0.1:{port}"
    plugin.settings.backend_arguments = (
        f'--lvlm "{backend.models["lvlm"]}" --segmenter "{backend.models["sam"]}" --device cpu'
    )
    plugin.start_backend()
    assert plugin.backend.status == "starting" and plugin.backend.owns_process()
    assert wait_until(lambda: plugin.backend.status == "ready", 180), (plugin.backend.status, plugin.backend.message)
    assert "ready" in plugin.dock.status.full_text() and plugin.dock.stop_button.isEnabled()
    assert wait_until(lambda: any("serving on" in line for line in plugin.backend.log_lines), 10), (
        plugin.backend.log_lines[-20:]
    )
    plugin.backend.stop()
    assert wait_until(lambda: not plugin.backend.owns_process(), 60)
    assert wait_until(lambda: plugin.backend.status == "offline", 30)
    plugin.settings.backend_executable = ""
    plugin.start_backend()
    assert any("backend executable" in m for m in messages(qgis_iface, Qgis.MessageLevel.Warning))
