"""Batch jobs on the backend, watched from a worker thread (QgsTask) or a Processing algorithm."""

from __future__ import annotations

import time
from collections.abc import Callable

from qgis.core import QgsTask

from .api.client import BlockingClient
from .api.errors import ApiError
from .log import guard_slot
from .settings import Settings

POLL_S = 1.0


def run_job(
    client: BlockingClient, request: dict, *, canceled: Callable[[], bool], progress: Callable[[float], None]
) -> dict:
    """Start a job and wait for it; cancelling asks the backend to stop it. Returns the last status.

    Blocking: call it from a worker thread only. Raises :class:`ApiError`.
    """
    status = client.post_json("/v1/jobs", request)
    job = status["id"]
    cancel_sent = False
    while status["state"] == "running":
        if canceled() and not cancel_sent:
            client.delete(f"/v1/jobs/{job}")
            cancel_sent = True
        time.sleep(POLL_S)
        status = client.get(f"/v1/jobs/{job}")
        if status.get("tiles_total"):
            progress(100.0 * status["tiles_done"] / status["tiles_total"])
    return status


def job_request(
    raster_path: str,
    output_path: str,
    question: str,
    *,
    tile_size_px: int,
    overlap_px: int,
    resume: bool,
    overwrite: bool = False,
    settings: Settings,
) -> dict:
    """The JobRequest body; ``resume`` continues the run in ``output_path``, ``overwrite`` starts it again."""
    return {
        "raster_path": raster_path,
        "output_path": output_path,
        "question": question,
        "tile_size_px": tile_size_px,
        "overlap_px": overlap_px,
        "resume": resume,
        "overwrite": overwrite,
        "simplify_px": settings.simplify_px,
        "min_area_m2": settings.min_area_m2,
    }


class BatchJobTask(QgsTask):
    """Runs and watches one backend job; ``done(status | None, error)`` is called on the GUI thread."""

    def __init__(self, settings: Settings, request: dict, done: Callable[[dict | None, str], None]) -> None:
        super().__init__(f"Think2Seg batch: {request['question']}", QgsTask.Flag.CanCancel)
        self.settings, self.request, self.done = settings, request, done
        self.job_status: dict | None = None  # not `status`: QgsTask.status() is the task's own state
        self.error = ""

    def run(self) -> bool:
        try:
            self.job_status = run_job(
                BlockingClient(self.settings), self.request, canceled=self.isCanceled, progress=self.setProgress
            )
        except ApiError as exc:
            self.error = exc.message
            return False
        return self.job_status.get("state") == "done"

    @guard_slot
    def finished(self, result: bool) -> None:  # noqa: FBT001 - QgsTask's signature
        if self.job_status is None and not self.error:
            self.error = "the batch job was cancelled before it started"
        self.done(self.job_status, self.error)
