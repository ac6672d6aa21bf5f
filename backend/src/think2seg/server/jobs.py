"""Batch jobs: `think2seg batch` runs inside the server, one thread each, sharing the model worker.

Jobs outlive the client that started them. Their model calls go through the worker at batch
priority, so interactive requests are answered between tiles. A job with ``workers`` (or, by
default, ``serve --workers``) runs its models on that many Ray workers instead, each loading the
server's models itself; the job's thread stays the only writer of its GeoPackage. Cancelling (or
stopping the server) ends a job between tiles and leaves its GeoPackage resumable.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path

from rasterio.warp import transform_bounds

from think2seg.batch.options import BatchEngine, BatchOptions, BatchProgress, BatchSummary, ModelSpec
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
        running, workers = self.state is JobState.RUNNING, self.options.workers
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
            eta_s=progress.eta_s if progress and running else None,
            tiles_per_s=progress.tiles_per_s if progress else None,
            workers=workers,
            workers_alive=(progress.workers_alive if progress else 0) if workers and running else None,
            retries=progress.retries if progress else 0,
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
        workers = self.settings.job_workers if request.workers is None else request.workers
        if workers and find_spec("ray") is None:
            raise ApiError(422, "ray_not_installed", _no_ray_message(workers, asked=request.workers is not None))
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
        options = BatchOptions.named_like(  # prefetch: the default
            request, bounds=bounds, aoi=aoi, terms=HTTP_TERMS, workers=workers, ray_address=self.settings.ray_address
        )
        job = Job(request=request, raster=raster, output=output, options=options)
        if workers:
            job.message = f"starting {workers} Ray model worker{'s' if workers > 1 else ''}"
        return job

    def _run(self, job: Job) -> None:
        try:
            job.summary = run_batch(
                job.raster,
                job.request.question,
                job.output,
                models=self._models(job),
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

    def _models(self, job: Job) -> ModelSpec | BatchEngine:
        """What the job's tiles run on: the models Ray workers load (from the server's model options),
        or the server's own models, through the model worker at batch priority."""
        if job.options.workers:
            settings = self.settings
            return ModelSpec(
                lvlm=settings.lvlm,
                segmenter=settings.segmenter,
                device=settings.device,
                max_new_tokens=settings.max_new_tokens,
                compile=settings.compile,
            )
        return QueuedEngine(self.state.wait_engine(), self.state.worker)

    @staticmethod
    def _progress(job: Job, progress: BatchProgress) -> None:
        job.progress = progress
        job.message = _progress_message(progress)

    def _forget_old(self) -> None:
        finished = [j.id for j in self._jobs.values() if j.state is not JobState.RUNNING]
        for job_id in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job_id]


def _progress_message(progress: BatchProgress) -> str:
    """“120 of 400 tiles, 3.2 tiles/s, 2 of 2 workers”."""
    parts = [f"{progress.done} of {progress.total} tiles"]
    rate = progress.tiles_per_s
    if rate is not None:
        parts.append(f"{rate:.1f} tiles/s" if rate >= 0.1 else f"{rate:.2g} tiles/s")
    if progress.workers:
        parts.append(f"{progress.workers_alive} of {progress.workers} workers")
    if progress.retries:
        parts.append(f"{progress.retries} tile(s) run again after a worker died")
    return ", ".join(parts)


def _no_ray_message(workers: int, *, asked: bool) -> str:
    """Why a job with ``workers`` cannot run here; ``asked``: the request said so (else the server's default)."""
    who = (
        f"the job asks for {workers} Ray model worker{'s' if workers > 1 else ''}"
        if asked
        else f"this server runs batch jobs on {workers} Ray model workers (serve --workers {workers})"
    )
    return (
        f"{who}, but Ray is not installed on the backend: install think2seg[ray] on the backend "
        "(pip install 'think2seg[ray]') and restart it, or send workers=0 to run the job on the server's own models"
    )


def _done_message(summary: BatchSummary) -> str:
    failed = summary.failed + summary.previously_failed
    text = f"{summary.polygons} polygons from {summary.tiles_total} tiles"
    return text + (f"; {failed} tile(s) failed: POST again with retry_failed=true to redo them" if failed else "")
