"""Batch jobs on the backend, watched from a worker thread (QgsTask) or a Processing algorithm."""

from __future__ import annotations

import time
from collections.abc import Callable

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .api.client import BlockingClient
from .api.errors import ApiError, qgis_terms
from .classes import ClassError, classes_title
from .log import guard_slot
from .settings import Settings
from .wording import plural

POLL_S = 1.0


def run_job(
    client: BlockingClient,
    request: dict,
    *,
    canceled: Callable[[], bool],
    progress: Callable[[dict], None],
    route: str = "/v1/jobs",
) -> dict:
    """Start a job (``route``: a batch job, or ``/v1/change``) and wait for it; cancelling asks the
    backend to stop it. Returns the last status.

    ``progress`` gets every status while the job runs. Blocking: call it from a worker thread only.
    Raises :class:`ApiError`.
    """
    status = client.post_json(route, request)
    job = status["id"]
    cancel_sent = False
    while status["state"] == "running":
        if canceled() and not cancel_sent:
            client.delete(f"/v1/jobs/{job}")
            cancel_sent = True
        time.sleep(POLL_S)
        status = client.get(f"/v1/jobs/{job}")
        progress(status)
    return status


def percent(status: dict) -> float:
    total = status.get("tiles_total") or 0
    return 100.0 * status.get("tiles_done", 0) / total if total else 0.0


def job_title(job: dict) -> str:
    """What a job asks, from its request or its status: its question, or “3 classes: buildings, roads,
    water” for a job with classes (a request's ``classes`` is name -> question, a status's the names)."""
    names = list(job.get("classes") or [])
    return classes_title(names) if names else str(job.get("question") or "")


def _classes(status: dict) -> int:
    return len(status.get("classes") or [])


def _work(status: dict, count: int | None) -> str:
    """``count`` of a job's work: tiles, or for a job with classes (tile, class) pairs, which is what
    the backend counts then (a tile counts once per class)."""
    word = "tile × class pair" if _classes(status) else "tile"
    return plural(count, word) if count is not None else f"? {word}s"


def _grid(status: dict) -> str:
    """“16 tiles × 3 classes” for a job with classes whose total is known; else ''."""
    classes, total = _classes(status), status.get("tiles_total")
    if not classes or not total or total % classes:
        return ""
    return f"{plural(total // classes, 'tile')} × {plural(classes, 'class', 'classes')}"


def progress_text(status: dict) -> str:
    """“12 of 40 tiles, 3.2 tiles/s, 1 failed, about 3 min left, 2 of 2 workers”: the workers'
    figures only for a job on Ray workers, the pace and time left once the first tiles are done.
    A job with classes counts (tile, class) pairs, as the backend does: “12 of 48 tile × class pairs
    (16 tiles × 3 classes), 3.2 pairs/s”."""
    total = status.get("tiles_total")
    unit = "pairs" if _classes(status) else "tiles"
    done = status.get("tiles_done", 0)
    grid = f" ({_grid(status)})" if _grid(status) else ""
    parts = [f"{done} of {_work(status, total)}{grid}" if total else "preparing the tiles"]
    pace = status.get("tiles_per_s")
    if pace:
        parts.append(f"{pace:.1f} {unit}/s" if pace >= 0.1 else f"{pace:.2g} {unit}/s")
    if status.get("failures"):
        parts.append(f"{status['failures']} failed")
    eta = status.get("eta_s")
    running = status.get("state") == "running"
    if eta is not None and running:
        parts.append(f"about {eta / 60:.0f} min left" if eta >= 90 else f"about {max(1, round(eta))} s left")
    workers, alive = status.get("workers") or 0, status.get("workers_alive")
    if workers and alive is not None and running:
        parts.append(f"{alive} of {plural(workers, 'worker')}")
    if status.get("retries"):
        parts.append(f"{plural(status['retries'], 'tile')} re-run after a worker stopped")
    return ", ".join(parts)


def end_text(status: dict) -> str:
    """How a job ended, in QGIS terms."""
    name = f"Batch “{job_title(status)}”"
    if status["state"] == "done":
        work = _grid(status) or _work(status, status.get("tiles_total") or 0)
        text = f"{name} done: {plural(status.get('polygons') or 0, 'polygon')} from {work}"
        if status.get("failures"):
            text += (
                f"; {_work(status, status['failures'])} failed: open Batch…, choose the same output GeoPackage and "
                "tick “Retry failed tiles” to redo them"
            )
        return text
    if status["state"] == "cancelled":
        total = status.get("tiles_total")
        return (
            f"{name} stopped after {status.get('tiles_done', 0)} of {_work(status, total)}. "
            f"{status.get('output_path')} keeps them: press Resume (or open Batch…, choose the same output "
            "GeoPackage and tick “Resume”) to continue"
        )
    return f"{name} failed: {qgis_terms(status.get('message', ''))}"


def job_request(
    raster_path: str,
    output_path: str,
    question: str,
    *,
    tile_size_px: int,
    overlap_px: int,
    resume: bool,
    overwrite: bool = False,
    retry_failed: bool = False,
    bounds: list[float] | None = None,
    bounds_crs: str | None = None,
    aoi_path: str | None = None,
    workers: int = 0,
    classes: dict[str, str] | None = None,
    settings: Settings,
) -> dict:
    """The JobRequest body, asking ``question`` or, with ``classes`` (name -> question, in order),
    every class of every tile in one job (``question`` is then ''); ``resume`` continues the run in
    ``output_path``, ``overwrite`` starts it again, ``retry_failed`` continues it and redoes its failed tiles; ``bounds`` (in ``bounds_crs``)
    or ``aoi_path`` limit it to part of the raster. ``workers`` > 0 runs it on that many Ray model
    workers (the backend needs think2seg[ray]); 0 sends none, leaving it to the backend's default (its
    own models, unless `think2seg serve --workers N` says otherwise). Raises :class:`~.classes.ClassError`
    unless exactly one of ``question`` and ``classes`` is given (the backend would refuse the job)."""
    if bool(question) == bool(classes):
        raise ClassError("a batch job asks a question or classes, one of the two: give the question, or the classes")
    asked = {"classes": dict(classes)} if classes else {"question": question}
    request = {
        "raster_path": raster_path,
        "output_path": output_path,
        **asked,
        "tile_size_px": tile_size_px,
        "overlap_px": overlap_px,
        "resume": resume,
        "overwrite": overwrite,
        "retry_failed": retry_failed,
        **settings.vector_options(),
    }
    if bounds is not None:
        request.update({"bounds": bounds, "bounds_crs": bounds_crs})
    if aoi_path:
        request["aoi_path"] = aoi_path
    if workers > 0:
        request["workers"] = workers
    return request


class BatchJobTask(QgsTask):
    """Runs and watches one backend job; ``done(status | None, error)`` is called on the GUI thread.

    ``statusUpdated(status)`` follows the job (tiles done, pace, failures, ETA, workers), and so does
    the task's description in QGIS's task manager. A job the user stopped ends *complete*, not failed:
    it is resumable, and QGIS should not report a failure.
    """

    statusUpdated = pyqtSignal(dict)

    def __init__(self, settings: Settings, request: dict, done: Callable[[dict | None, str], None]) -> None:
        self.title = f"Think2Seg batch: {job_title(request)}"
        super().__init__(self.title, QgsTask.Flag.CanCancel)
        self.settings, self.request, self.done = settings, request, done
        self.job_status: dict | None = None  # not `status`: QgsTask.status() is the task's own state
        self.last_status: dict | None = None  # the newest status while the job runs
        self.error = ""
        self.statusUpdated.connect(self._describe)  # queued: the task object lives on the GUI thread

    def run(self) -> bool:
        try:
            self.job_status = run_job(
                BlockingClient(self.settings), self.request, canceled=self.isCanceled, progress=self._progress
            )
        except ApiError as exc:
            self.error = exc.message
            return False
        return self.job_status.get("state") in ("done", "cancelled")

    def _progress(self, status: dict) -> None:
        self.last_status = status
        self.setProgress(percent(status))
        self.statusUpdated.emit(status)

    @guard_slot
    def _describe(self, status: dict) -> None:
        if status.get("state") == "running":
            self.setDescription(f"{self.title} — {progress_text(status)}")

    @guard_slot
    def finished(self, result: bool) -> None:  # QgsTask's signature
        if self.job_status is None and not self.error:
            self.error = "the batch job was cancelled before it started"
        self.done(self.job_status, self.error)
