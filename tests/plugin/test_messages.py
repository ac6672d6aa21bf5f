"""Issue 11, item 7: every message in QGIS terms (buttons and dialogs), its full text reachable,
failures logged at Warning or above; a normal Stop is no crash, a question while the backend starts
waits for it, and a stopped batch job is no failed task."""

from __future__ import annotations

import logging
import os
import stat

from qgis.core import Qgis, QgsApplication, QgsTask
from qgis.PyQt.QtWidgets import QPushButton

from think2seg_qgis.api.errors import qgis_terms
from think2seg_qgis.jobs import end_text, job_request
from think2seg_qgis.notify import Notifier

from qgis_helpers import wait_until

RIVER = "segment the river"
# What the backend says (server/jobs.py, batch/store.py), in HTTP and command-line terms for any client.
BACKEND_CANCELLED = "stopped at your request; the GeoPackage is resumable: POST /v1/jobs again with resume=true"
BACKEND_DIFFERS = "/data/out.gpkg holds a run with other parameters (tile_size_px: 256 → 512): resume with the same options, or set overwrite=true to start again"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_backend_wording_becomes_qgis_wording():
    for api in (
        BACKEND_CANCELLED,
        BACKEND_DIFFERS,
        "the window is 9x9 px: zoom in, or start a job (POST /v1/jobs) for big areas",
    ):
        text = qgis_terms(api)
        assert "POST" not in text and "--" not in text and "resume=true" not in text, text
    assert "tick “Overwrite”" in qgis_terms(BACKEND_DIFFERS)
    option = qgis_terms("simplify_px must be a number from 0 to 1000 (pixels), got -1")
    assert option == "Simplification (Think2Seg settings) must be a number from 0 to 1000 (pixels), got -1"
    status = {"state": "cancelled", "question": RIVER, "tiles_done": 3, "tiles_total": 9, "output_path": "/d/o.gpkg"}
    text = end_text({**status, "message": BACKEND_CANCELLED})
    assert text.startswith(f"Batch “{RIVER}” stopped after 3 of 9 tiles") and "Resume" in text and "POST" not in text
    text = end_text({**status, "state": "failed", "message": BACKEND_DIFFERS})
    assert "tick “Overwrite” to start again" in text and "--overwrite" not in text


def test_long_messages_keep_their_full_text_and_failures_are_logged_as_failures():
    class Bar:
        def __init__(self) -> None:
            self.pushed: list[tuple] = []

        def pushMessage(self, *args: object) -> None:
            self.pushed.append(args)

    bar, records = Bar(), _Records()
    log = logging.getLogger("think2seg_qgis")
    log.addHandler(records)
    try:
        notifier = Notifier(bar)
        long = "the request to the Think2Seg backend timed out: " + "it may still be loading its models; " * 8
        notifier.say(long, Qgis.MessageLevel.Critical)
        notifier.say("a run is already in progress")
        notifier.say("no box drawn: drag", Qgis.MessageLevel.Warning)
    finally:
        log.removeHandler(records)
    assert bar.pushed[0][1] == long and bar.pushed[0][2] == long  # “More” shows the whole of it
    assert bar.pushed[1][2] == ""  # short ones need no “More”
    assert [r.levelno for r in records.records] == [logging.ERROR, logging.INFO, logging.WARNING]


def test_a_question_while_the_backend_starts_waits_instead_of_saying_press_start(
    plugin, fake_backend, raster, qgis_iface
):
    plugin.dock.layer_box.setLayer(raster)
    plugin.backend._set("starting", "starting think2seg")  # what Start shows until the first health reply
    plugin.dock.question.setEditText(RIVER)
    plugin.controller.ask()
    infos = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Info)
    assert any("still starting" in m and "Backend ready" in m for m in infos), infos
    assert not fake_backend.sent("POST", "/v1/segment")
    levels = (Qgis.MessageLevel.Info, Qgis.MessageLevel.Warning, Qgis.MessageLevel.Critical)
    assert not any("press Start" in m for level in levels for m in qgis_iface.messageBar().get_messages(level))


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "think2seg"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_normal_stop_is_no_crash_and_an_unexpected_exit_says_so(plugin, tmp_path):
    if os.name == "nt":
        return
    plugin.settings.backend_executable = _script(tmp_path, "exec sleep 60")
    plugin.settings.backend_url = "http://127.0.0.1:9"  # nothing answers: it stays "starting"
    assert plugin.backend.start() == ""
    assert wait_until(lambda: plugin.backend.owns_process(), 10)
    plugin.backend.stop()
    assert wait_until(lambda: not plugin.backend.owns_process(), 10)
    assert plugin.backend.status == "offline" and "exit code" not in plugin.backend.message
    assert "stopped" in plugin.backend.message and "Start" in plugin.backend.message

    plugin.settings.backend_executable = _script(tmp_path, "echo 'cannot load the models' ; exit 3")
    assert plugin.backend.start() == ""
    assert wait_until(lambda: plugin.backend.status == "error", 10)
    assert "unexpectedly (code 3)" in plugin.backend.message and "Log" in plugin.backend.message
    assert any("cannot load the models" in line for line in plugin.backend.log_lines)


def test_a_stopped_batch_job_is_no_failed_task_and_offers_resume(plugin, fake_backend, qgis_iface, tmp_path):
    fake_backend.job_message = BACKEND_CANCELLED
    request = job_request(
        str(tmp_path / "riverside.tif"),
        str(tmp_path / "out.gpkg"),
        RIVER,
        tile_size_px=256,
        overlap_px=32,
        resume=False,
        settings=plugin.settings,
    )
    task = plugin.start_job(request)
    assert wait_until(lambda: fake_backend.sent("POST", "/v1/jobs"), 10)
    assert wait_until(lambda: "1 of 4 tiles" in plugin.dock.jobs.text(), 10)  # progress with its ETA in the panel
    assert "about 30 s left" in plugin.dock.jobs.text()
    statuses: list = []
    task.statusChanged.connect(statuses.append)
    task.cancel()
    stopped = lambda: [i for i in qgis_iface.messageBar().items() if "stopped after" in i.text()]  # noqa: E731
    assert wait_until(stopped, 20)
    assert statuses and statuses[-1] == QgsTask.TaskStatus.Complete  # QGIS says “complete”, not “Task failed”
    (item,) = stopped()
    assert "POST" not in item.text() and not qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
    (resume,) = [button for button in item.findChildren(QPushButton) if button.text() == "Resume"]
    fake_backend.job_state = "running"
    resume.click()
    assert wait_until(lambda: len(fake_backend.sent("POST", "/v1/jobs")) == 2, 10)
    resumed = fake_backend.sent("POST", "/v1/jobs")[-1]
    assert (
        resumed["resume"] is True and resumed["overwrite"] is False and resumed["output_path"] == request["output_path"]
    )
    for task in list(plugin.tasks):
        task.cancel()
    assert wait_until(lambda: QgsApplication.taskManager().countActiveTasks() == 0, 20)
