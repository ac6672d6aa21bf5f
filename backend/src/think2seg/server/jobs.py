"""Batch jobs: `think2seg batch` runs inside the server, one thread each, sharing the model worker.

Jobs outlive the client that started them. Their model calls go through the worker at batch
priority, so interactive requests are answered between tiles. Cancelling (or stopping the server)
ends a job between tiles and leaves its GeoPackage resumable.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rasterio.warp import transform_bounds

from think2seg.batch.options import BatchOptions, BatchProgress, BatchSummary
from think2seg.batch.runner import run_batch
from think2seg.errors import Cancelled, Think2SegError
from think2seg.geo.read import RasterSource
from think2seg.runs.policy import HTTP_TERMS, Continuation
from think2seg.runs.states import JobState
from think2seg.server.errors import ApiError, to_api_error
from think2seg.server.paths import allowed_path
from think2seg.server.schemas import JobRequest, JobStatus
from think2seg.server.settings import ServerSettings
from think2seg.server.state import ModelState
from think2seg.server.tiles import parse_crs
from think2seg.server.worker import QueuedEngine

log = logging.getLogger(__name__)

KEEP_FINISHED = 100


@dataclass
class Job:
    request: JobRequest
    raster: Path
    output: Path
    options: BatchOptions
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: JobState = JobState.RUNNING
    message: str = "waiting for the first tile"
    progress: BatchProgress | None = None
    summary: BatchSummary | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    finished_at: datetime | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def status(self) -> JobStatus:
        progress, summary = self.progress, self.summary
        return JobStatus(
            id=self.id,
            state=self.state.value,
            message=self.message,
            question=self.request.question,
            raster_path=str(self.raster),
            output_path=str(self.output),
            tiles_done=progress.done if progress else (summary.tiles_total if summary else 0),
            tiles_total=progress.total if progress else (summary.tiles_total if summary else None),
            failures=summary.failed + summary.previously_failed if summary else (progress.failed if progress else 0),
            polygons=summary.polygons if summary else None,
            total_area_m2=summary.total_area_m2 if summary else None,
            eta_s=progress.eta_s if progress and self.state is JobState.RUNNING else None,
            created_at=self.created_at.isoformat(),
            finished_at=self.finished_at.isoformat() if self.finished_at else None,
        )


class JobManager:
    def __init__(self, state: ModelState, settings: ServerSettings) -> None:
        self.state, self.settings = state, settings
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        return sum(job.state is JobState.RUNNING for job in self._jobs.values())

    def start(self, request: JobRequest) -> Job:
        """Check the request now (paths, output, bounds) and run the job in its own thread."""
        job = self._prepare(request)
        with self._lock:
            if self.running >= self.settings.max_jobs:
                raise ApiError(
                    429,
                    "busy",
                    f"{self.running} jobs are running, the most this server runs at once: retry later",
                    retry_after_s=30,
                )
            if any(j.state is JobState.RUNNING and j.output == job.output for j in self._jobs.values()):
                raise ApiError(
                    409,
                    "output_busy",
                    f"a running job already writes {job.output}: cancel it first or choose another output",
                )
            self._jobs[job.id] = job
            self._forget_old()
        job.thread = threading.Thread(target=self._run, args=(job,), name=f"think2seg-job-{job.id}", daemon=True)
        job.thread.start()
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r} on this server (jobs are kept until it restarts)")
        return job

    def list(self) -> list[Job]:
        return list(self._jobs.values())

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state is JobState.RUNNING:
            job.stop.set()
            job.message = "cancelling after the tile in progress"
        return job

    def shutdown(self, timeout_s: float = 120) -> None:
        """Stop every running job between tiles and wait for their outputs to be saved."""
        for job in self._jobs.values():
            job.stop.set()
        for job in self._jobs.values():
            if job.thread is not None:
                job.thread.join(timeout=timeout_s)

    def _prepare(self, request: JobRequest) -> Job:
        raster = allowed_path(request.raster_path, self.settings, what="raster_path")
        output = allowed_path(request.output_path, self.settings, what="output_path")
        aoi = allowed_path(request.aoi_path, self.settings, what="aoi_path") if request.aoi_path else None
        if output.suffix.lower() != ".gpkg":
            raise ApiError(422, "invalid_input", f"output_path must end in .gpkg, got {output.name}")
        continuation = Continuation(request.resume, request.retry_failed, request.overwrite, HTTP_TERMS)
        continuation.check_start(output, exists=output.exists())  # now, not once the job runs: 409
        bounds = request.bounds
        if bounds is not None and request.bounds_crs:
            with RasterSource(raster) as source:
                bounds = list(
                    transform_bounds(parse_crs(request.bounds_crs, "bounds_crs"), source.crs, *bounds, densify_pts=21)
                )
        options = BatchOptions.named_like(request, bounds=bounds, aoi=aoi, terms=HTTP_TERMS)  # prefetch: the default
        return Job(request=request, raster=raster, output=output, options=options)

    def _run(self, job: Job) -> None:
        try:
            engine = QueuedEngine(self.state.wait_engine(), self.state.worker)
            job.summary = run_batch(
                job.raster,
                job.request.question,
                job.output,
                models=engine,
                options=job.options,
                on_progress=lambda progress: self._progress(job, progress),
                stop=job.stop,
            )
            job.state, job.message = JobState.DONE, _done_message(job.summary)
        except Cancelled as exc:
            job.state = JobState.CANCELLED
            job.message = f"{exc}; the GeoPackage is resumable: POST /v1/jobs again with resume=true"
        except (ApiError, Think2SegError, OSError) as exc:
            job.state, job.message = JobState.FAILED, to_api_error(exc).message
        except Exception as exc:  # a bug: the job fails, the server keeps serving
            log.exception("job %s failed", job.id)
            job.state, job.message = JobState.FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            job.finished_at = datetime.now(timezone.utc)

    @staticmethod
    def _progress(job: Job, progress: BatchProgress) -> None:
        job.progress = progress
        job.message = f"{progress.done} of {progress.total} tiles"

    def _forget_old(self) -> None:
        finished = [j.id for j in self._jobs.values() if j.state is not JobState.RUNNING]
        for job_id in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job_id]


def _done_message(summary: BatchSummary) -> str:
    failed = summary.failed + summary.previously_failed
    text = f"{summary.polygons} polygons from {summary.tiles_total} tiles"
    return text + (f"; {failed} tile(s) failed: POST again with retry_failed=true to redo them" if failed else "")
