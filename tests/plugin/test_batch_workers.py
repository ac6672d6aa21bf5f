"""Batch jobs on Ray model workers: the Batch… dialog's Workers, sent only when asked for, and the
job's figures (tiles, pace, time left, failures, workers) in the panel and in QGIS's task manager."""

from __future__ import annotations

import json

from qgis.core import QgsApplication

from think2seg_qgis.api.errors import qgis_terms
from think2seg_qgis.batch_dialog import BatchDialog
from think2seg_qgis.jobs import job_request, progress_text
from think2seg_qgis.settings import Settings

from qgis_helpers import FIXTURES, wait_until

RIVER = "segment the river"
# What the backend answers a job with workers when Ray is missing (server/jobs.py).
BACKEND_NO_RAY = (
    "the job asks for 2 Ray model workers, but Ray is not installed on the backend: install think2seg[ray] on the "
    "backend (pip install 'think2seg[ray]') and restart it, or send workers=0 to run the job on the server's own models"
)


def request_for(choice, settings: Settings) -> dict:
    return job_request(
        choice.raster_path,
        choice.output_path,
        choice.question,
        tile_size_px=choice.tile_size_px,
        overlap_px=choice.overlap_px,
        resume=False,
        workers=choice.workers,
        settings=settings,
    )


def test_progress_text_says_the_pace_and_the_workers_of_a_running_job():
    status = {"state": "running", "tiles_done": 120, "tiles_total": 400, "failures": 2, "eta_s": 300.0}
    assert progress_text(status) == "120 of 400 tiles, 2 failed, about 5 min left"  # no figures yet: none shown
    status.update(tiles_per_s=3.2, workers=2, workers_alive=1, retries=1)
    assert progress_text(status) == (
        "120 of 400 tiles, 3.2 tiles/s, 2 failed, about 5 min left, 1 of 2 workers, 1 tile re-run after a worker stopped"
    )
    own = {**status, "workers": 0, "workers_alive": None, "retries": 0, "tiles_per_s": 0.05}
    assert progress_text(own) == "120 of 400 tiles, 0.05 tiles/s, 2 failed, about 5 min left"
    done = {**status, "state": "done", "workers_alive": None, "eta_s": None}
    assert "workers" not in progress_text(done) and "left" not in progress_text(done)


def test_workers_are_sent_only_when_asked_for_and_remembered(raster, tmp_path):
    settings = Settings()
    dialog = BatchDialog(RIVER, raster, settings)
    dialog.output.setFilePath(str(tmp_path / "out.gpkg"))
    assert dialog.workers.value() == 0 and "think2seg[ray]" in dialog.workers.toolTip()
    assert dialog.workers.text() == dialog.workers.specialValueText()  # 0 reads as the backend's own models
    choice = dialog.choice()
    assert choice.workers == 0
    assert "workers" not in request_for(choice, settings)  # the backend's default: its own models
    dialog.workers.setValue(3)
    choice = dialog.choice()
    request = request_for(choice, settings)
    assert request["workers"] == 3
    assert set(request) <= set(json.loads((FIXTURES / "api" / "job.request.json").read_text()))
    assert BatchDialog(RIVER, raster, settings).workers.value() == 3
    settings.batch_workers = 0  # not for the next tests


def test_a_job_on_workers_shows_its_figures_in_the_panel_and_the_task_manager(plugin, fake_backend, raster, tmp_path):
    fake_backend.job_workers_alive, fake_backend.job_retries = 1, 2
    dialog = BatchDialog(RIVER, raster, plugin.settings)
    dialog.output.setFilePath(str(tmp_path / "out.gpkg"))
    dialog.workers.setValue(2)
    task = plugin.run_batch(dialog.choice())
    assert wait_until(lambda: "workers" in plugin.dock.jobs.text(), 10)
    assert fake_backend.sent("POST", "/v1/jobs")[0]["workers"] == 2
    figures = "1 of 4 tiles, 0.1 tiles/s, about 30 s left, 1 of 2 workers, 2 tiles re-run after a worker stopped"
    assert plugin.dock.jobs.text() == f"Batch “{RIVER}”: {figures}"
    assert wait_until(lambda: figures in task.description(), 10)
    assert task.description().startswith(f"Think2Seg batch: {RIVER}")
    task.cancel()
    assert wait_until(lambda: QgsApplication.taskManager().countActiveTasks() == 0, 20)


def test_a_backend_without_ray_says_what_to_do_in_qgis_terms():
    text = qgis_terms(BACKEND_NO_RAY)
    assert "install think2seg[ray] on the backend" in text
    assert "workers=0" not in text and "set Workers to none in the Batch… dialog" in text


def test_processing_shows_the_figures_beside_its_progress_bar():
    from think2seg_qgis.processing.provider import _show_progress

    class Feedback:
        def __init__(self) -> None:
            self.progress, self.text = 0.0, ""

        def setProgress(self, value: float) -> None:  # noqa: N802 - QgsProcessingFeedback's names
            self.progress = value

        def setProgressText(self, text: str) -> None:  # noqa: N802
            self.text = text

    feedback = Feedback()
    status = {"state": "running", "tiles_done": 1, "tiles_total": 4, "tiles_per_s": 0.5, "workers": 2}
    _show_progress(feedback, {**status, "workers_alive": 2, "eta_s": 6.0})
    assert feedback.progress == 25.0 and feedback.text == "1 of 4 tiles, 0.5 tiles/s, about 6 s left, 2 of 2 workers"
