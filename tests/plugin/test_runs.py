"""Questions against a fake backend: one run at a time, replies filed under their own request's
plan and their own CRS, failed saves reported, timeouts told apart, a clean unload mid-run."""

from __future__ import annotations

import copy
import time
import zipfile

from qgis.core import Qgis, QgsApplication, QgsCoordinateReferenceSystem, QgsProject, QgsRectangle, QgsVectorLayer

from think2seg_qgis.api.client import AsyncClient, BlockingClient
from think2seg_qgis.api.errors import ApiError
from think2seg_qgis.jobs import job_request
from think2seg_qgis.results import CRS_KEY, ROLE
from think2seg_qgis.tile import plan_tile

from qgis_helpers import wait_until

RIVER = "segment the river"


def messages(qgis_iface, level=Qgis.MessageLevel.Critical) -> list[str]:
    return qgis_iface.messageBar().get_messages(level)


def press_enter(plugin) -> None:
    plugin.dock.question.lineEdit().returnPressed.emit()


def settle(seconds: float) -> None:
    wait_until(lambda: False, seconds)


def test_enter_while_a_run_is_in_flight_is_refused(plugin, fake_backend, raster, qgis_iface):
    fake_backend.delay_s = 1.0
    plugin.dock.layer_box.setLayer(raster)
    plugin.dock.question.setEditText(RIVER)
    press_enter(plugin)
    assert wait_until(lambda: fake_backend.sent("POST", "/v1/segment"), 10)
    qgis_iface.mapCanvas().setExtent(QgsRectangle(512000, 5261616, 512100, 5261716))  # the user pans meanwhile
    press_enter(plugin)
    plugin.controller.ask()  # the Run button's path too
    assert any("already in progress" in m for m in messages(qgis_iface, Qgis.MessageLevel.Info))
    assert wait_until(lambda: plugin.dock.run_button.isEnabled(), 10)
    settle(1.5)
    assert len(fake_backend.sent("POST", "/v1/segment")) == 1
    results = plugin.store.find(raster.crs())["results"]
    assert results.featureCount() == 1 and plugin.undo.count() == 1


def test_a_reply_carries_the_plan_of_the_request_it_answers(plugin, fake_backend, raster, qgis_iface):
    canvas, segment = qgis_iface.mapCanvas(), plugin.controller.segment
    replies: list = []
    segment.finished.connect(lambda reply, plan: replies.append(plan))
    fake_backend.delay_s = 0.6
    segment.start(canvas, raster, question=RIVER)
    assert wait_until(lambda: fake_backend.sent("POST", "/v1/segment"), 10)
    segment.cancel()  # the first reply must not arrive, nor be filed under the next plan
    canvas.setExtent(QgsRectangle(512200, 5261700, 512300, 5261800))
    fake_backend.delay_s = 0.0
    segment.start(canvas, raster, question=RIVER)
    second = segment.plan
    settle(1.5)
    assert len(replies) == 1 and replies[0] is second
    sent = fake_backend.sent("POST", "/v1/segment")[-1]["bounds"]
    bounds = replies[0].bounds
    assert sent == [bounds.xMinimum(), bounds.yMinimum(), bounds.xMaximum(), bounds.yMaximum()]


def test_a_reply_in_another_crs_is_filed_under_that_crs(plugin, raster, qgis_iface):
    plan = plan_tile(qgis_iface.mapCanvas(), raster, plugin.settings)
    reply = copy.deepcopy(plugin_reply())
    reply["crs_wkt"] = QgsCoordinateReferenceSystem("EPSG:3857").toWkt()
    reply["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}}
    plugin._add_reply(reply, plan, None, "")
    assert plugin.store.find(raster.crs()) is None  # nothing in the layer's CRS
    layers = plugin.store.find(QgsCoordinateReferenceSystem("EPSG:3857"))
    feature = next(layers["results"].getFeatures())
    assert layers["results"].crs().authid() == "EPSG:3857"
    ring = reply["features"][0]["geometry"]["coordinates"][0]
    vertex = feature.geometry().vertexAt(0)
    assert (vertex.x(), vertex.y()) == tuple(ring[0])  # the reply's coordinates, not reprojected
    assert any("EPSG:3857" in m for m in messages(qgis_iface, Qgis.MessageLevel.Warning))

    reply = copy.deepcopy(plugin_reply())
    reply["crs_wkt"], reply["crs"] = None, None
    plugin._add_reply(reply, plan, None, "")
    assert any("does not say which CRS" in m for m in messages(qgis_iface))
    assert plugin.store.find(raster.crs()) is None and plugin.undo.count() == 1


def plugin_reply() -> dict:
    import json

    from qgis_helpers import FIXTURES

    return json.loads((FIXTURES / "api" / "segment.reply.json").read_text())


def test_a_results_file_that_cannot_be_written_is_reported_and_nothing_is_kept(plugin, raster, qgis_iface, tmp_path):
    store, crs = plugin.store, raster.crs()
    layers = store.layers(crs)
    source = layers["points"].source()
    path, table = source.split("|layername=")
    with zipfile.ZipFile(tmp_path / "locked.zip", "w") as archive:
        archive.write(path, "results.gpkg")
    read_only = QgsVectorLayer(f"/vsizip/{tmp_path / 'locked.zip'}/results.gpkg|layername={table}", "ro", "ogr")
    assert read_only.isValid()
    for key in (ROLE, CRS_KEY):
        read_only.setCustomProperty(key, layers["points"].customProperty(key))
    QgsProject.instance().removeMapLayer(layers["points"])
    QgsProject.instance().addMapLayer(read_only)

    plugin._add_reply(plugin_reply(), plan_tile(qgis_iface.mapCanvas(), raster, plugin.settings), None, "")
    assert any("not saved" in m and "read-only or locked" in m for m in messages(qgis_iface)), messages(qgis_iface)
    assert plugin.undo.count() == 0  # no undo step for a run that is not there
    assert layers["results"].featureCount() == 0 and layers["boxes"].featureCount() == 0  # taken back
    assert not messages(qgis_iface, Qgis.MessageLevel.Success)


def test_a_timeout_is_told_apart_from_an_unreachable_backend(plugin, fake_backend):
    plugin.settings.request_timeout_s = 1
    fake_backend.silent = True
    errors: list[ApiError] = []
    call = AsyncClient(plugin.settings).post_json("/v1/segment", {"question": RIVER}, stream=True)
    call.failed.connect(errors.append)
    started = time.monotonic()
    assert wait_until(lambda: errors, 10)
    assert errors[0].code == "timeout" and time.monotonic() - started < 5
    assert "timed out" in errors[0].message and "Request timeout" in errors[0].message
    assert "not reachable" not in errors[0].message
    try:
        BlockingClient(plugin.settings).post_json("/v1/segment", {"question": RIVER})
        raise AssertionError("a silent backend must time out")
    except ApiError as exc:
        assert exc.code == "timeout" and "Request timeout" in exc.message

    fake_backend.stop()  # nothing listens on the port any more
    errors.clear()
    AsyncClient(plugin.settings).get("/v1/health").failed.connect(errors.append)
    assert wait_until(lambda: errors, 10)
    assert errors[0].code == "offline" and "not reachable" in errors[0].message


def test_unload_aborts_the_question_and_cancels_batch_jobs(plugin, fake_backend, raster, qgis_iface, tmp_path):
    fake_backend.delay_s = 1.0
    plugin.dock.layer_box.setLayer(raster)
    plugin.dock.question.setEditText(RIVER)
    plugin.controller.ask()
    request = job_request(
        str(tmp_path / "riverside.tif"),
        str(tmp_path / "out.gpkg"),
        RIVER,
        tile_size_px=256,
        overlap_px=32,
        resume=False,
        settings=plugin.settings,
    )
    plugin.start_job(request)
    assert wait_until(lambda: fake_backend.sent("POST", "/v1/segment") and fake_backend.sent("POST", "/v1/jobs"), 10)
    plugin.unload()
    # A job stopped this way is resumable: its task ends complete, not failed (QGIS would say “Task failed”).
    assert wait_until(lambda: QgsApplication.taskManager().countActiveTasks() == 0, 20)
    assert fake_backend.sent("DELETE", "/v1/jobs/job1")  # the backend was asked to stop the job
    settle(2.0)  # the question's reply would have come by now
    assert all(layer.customProperty(ROLE) is None for layer in QgsProject.instance().mapLayers().values())
    assert QgsApplication.taskManager().countActiveTasks() == 0
    assert not messages(qgis_iface) and not messages(qgis_iface, Qgis.MessageLevel.Success)


def test_the_backend_goldens_read_as_the_plugin_expects(plugin, fake_backend):
    """health.reply.json (served by the fake) makes the panel ready; error.reply.json becomes the
    ApiError the panel shows. The backend's own tests check that it answers these shapes."""
    import json

    from think2seg_qgis.api.errors import from_reply

    from qgis_helpers import FIXTURES, wait_until

    health = json.loads((FIXTURES / "api" / "health.reply.json").read_text())
    plugin.backend.check()
    assert wait_until(lambda: plugin.backend.health.get("models") == health["models"])
    assert plugin.backend.status == "ready"
    body = (FIXTURES / "api" / "error.reply.json").read_bytes()
    error = from_reply(422, body, fake_backend.url)
    expected = json.loads(body)["error"]
    assert (error.code, error.message, error.status) == (expected["code"], expected["message"], 422)
