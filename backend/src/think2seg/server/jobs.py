"""Jobs: `think2seg batch` and `think2seg change` run inside the server, one thread each, sharing the model worker.

Jobs outlive the client that started them. Their model calls go through the worker at batch
priority, so interactive requests are answered between tiles. A batch job with ``workers`` (or, by
default, ``serve --workers``) runs its models on that many Ray workers instead, each loading the
server's models itself; the job's thread stays the only writer of its GeoPackage. Cancelling (or
stopping the server) ends a batch job between tiles and leaves its GeoPackage resumable; a change
job stops before its next date and writes nothing.

Every job is a :class:`Job` (its id, state, message, thread, stop event) running a :class:`JobWork`:
:class:`BatchWork` or :class:`ChangeWork`, which say what runs and which figures its status shows.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol

from rasterio.warp import transform_bounds

from think2seg.batch.options import BatchEngine, BatchOptions, BatchProgress, BatchSummary, ModelSpec
from think2seg.batch.runner import run_batch
from think2seg.change.align import align
from think2seg.change.compare import CHANGE_LAYERS
from think2seg.change.run import ChangeOptions, ChangeSummary, run_change
from think2seg.classes import ClassQuestions
from think2seg.engine import Engine
from think2seg.errors import Cancelled, Think2SegError
from think2seg.geo.read import RasterSource
from think2seg.inference import Inference
from think2seg.runs.policy import HTTP_TERMS, Continuation
from think2seg.runs.states import JobState
from think2seg.server.errors import ApiError, to_api_error
from think2seg.server.paths import allowed_path
from think2seg.server.schemas import ChangeRequest, CrsIn, JobRequest, JobStatus
from think2seg.server.serving import ServingEngine
from think2seg.server.settings import ServerSettings
from think2seg.server.state import ModelState
from think2seg.server.tiles import parse_crs
from think2seg.server.worker import BATCH, ModelWorker, QueuedEngine
from think2seg.think2seg_rs.prompt import validate_question
from think2seg.tile import Tile

log = logging.getLogger(__name__)

KEEP_FINISHED = 100
CHANGE_DATES = 2  # a change job's "tiles": one window per date


class JobWork(Protocol):
    """What a job runs. ``run`` is called on the job's own thread: it does the work (updating
    ``job.message`` as it goes), returns the message for a job done, and ends with :class:`Cancelled`
    once ``job.stop`` is set. ``figures`` are its :class:`JobStatus` fields besides the job's own."""

    after_cancel: str
    """What a cancelled job's message adds: what is left and how to go on."""

    def run(self, job: Job) -> str: ...

    def figures(self, *, running: bool) -> dict[str, Any]: ...


@dataclass
class Job:
    question: str
    raster: Path
    output: Path
    work: JobWork
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: JobState = JobState.RUNNING
    message: str = "waiting for the first tile"
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    finished_at: datetime | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    classes: list[str] | None = None

    def status(self) -> JobStatus:
        return JobStatus(
            id=self.id,
            state=self.state.value,
            message=self.message,
            question=self.question,
            classes=self.classes,
            raster_path=str(self.raster),
            output_path=str(self.output),
            created_at=self.created_at.isoformat(),
            finished_at=self.finished_at.isoformat() if self.finished_at else None,
            **self.work.figures(running=self.state is JobState.RUNNING),
        )


@dataclass
class BatchWork:
    """A `think2seg batch` run; ``models`` gives what its tiles run on (called on the job's thread:
    it may wait for the server's models to load)."""

    raster: Path
    output: Path
    options: BatchOptions
    models: Callable[[BatchOptions], ModelSpec | BatchEngine]
    asked: str | list[ClassQuestions] = ""
    """The question, or the classes, asked of every tile."""
    progress: BatchProgress | None = None
    summary: BatchSummary | None = None
    after_cancel: str = "the GeoPackage is resumable: POST /v1/jobs again with resume=true"

    def run(self, job: Job) -> str:
        def on_progress(progress: BatchProgress) -> None:
            self.progress, job.message = progress, _progress_message(progress)

        self.summary = run_batch(
            self.raster,
            self.asked,
            self.output,
            models=self.models(self.options),
            options=self.options,
            on_progress=on_progress,
            stop=job.stop,
        )
        return _done_message(self.summary)

    def figures(self, *, running: bool) -> dict[str, Any]:
        progress, summary, workers = self.progress, self.summary, self.options.workers
        return {
            "tiles_done": progress.done if progress else (summary.tiles_total if summary else 0),
            "tiles_total": progress.total if progress else (summary.tiles_total if summary else None),
            "failures": summary.failed + summary.previously_failed if summary else (progress.failed if progress else 0),
            "polygons": summary.polygons if summary else None,
            "total_area_m2": summary.total_area_m2 if summary else None,
            "eta_s": progress.eta_s if progress and running else None,
            "tiles_per_s": progress.tiles_per_s if progress else None,
            "workers": workers,
            "workers_alive": (progress.workers_alive if progress else 0) if workers and running else None,
            "retries": progress.retries if progress else 0,
        }


@dataclass
class ChangeWork:
    """A `think2seg change` run, each date in one window (decimated beyond ``options.max_side_px``).

    Its status counts the two dates as its tiles; once done, ``polygons`` is the sum of appeared,
    disappeared and persisted, and the message gives each layer's count and area. ``engine(stop,
    date_done)`` gives the models (called on the job's thread: it may wait for them to load).
    """

    before: Path
    after: Path
    output: Path
    options: ChangeOptions
    engine: Callable[[threading.Event, Callable[[], None]], Engine]
    dates_done: int = 0
    summary: ChangeSummary | None = None
    after_cancel: str = "nothing was written: POST /v1/change again to run it"

    def run(self, job: Job) -> str:
        def date_done() -> None:
            self.dates_done += 1
            job.message = f"{self.dates_done} of {CHANGE_DATES} dates segmented"
            if self.dates_done == CHANGE_DATES:
                job.message += "; comparing them"

        engine = self.engine(job.stop, date_done)
        job.message = f"0 of {CHANGE_DATES} dates segmented"
        self.summary = run_change(
            self.before, self.after, job.question, self.output, models=engine, options=self.options
        )
        return _change_message(self.summary)

    def figures(self, *, running: bool) -> dict[str, Any]:
        summary = self.summary
        return {
            "tiles_done": self.dates_done,
            "tiles_total": CHANGE_DATES,
            "failures": 0,  # a date without a usable answer fails the job: nothing is compared then
            "polygons": sum(summary.layers[name].polygons for name in CHANGE_LAYERS) if summary else None,
            "total_area_m2": None,  # per layer, in the message: a sum of the three would mean nothing
            "eta_s": None,
            "tiles_per_s": None,
            "workers": 0,
            "workers_alive": None,
            "retries": 0,
        }


class ChangeEngine(Engine):
    """The server's models for a change job: each model call ends the job if it was cancelled, runs on
    the model worker at batch priority, and reports its date done (``date_done``)."""

    def __init__(
        self, engine: ServingEngine, worker: ModelWorker, *, stop: threading.Event, date_done: Callable[[], None]
    ) -> None:
        super().__init__(engine.prompter, engine.segmenter)
        self._engine, self._worker, self._stop, self._date_done = engine, worker, stop, date_done

    def infer_batch(self, tiles: Sequence[Tile], question: str | Sequence[str], **kwargs: Any) -> list[Inference]:
        if self._stop.is_set():
            raise Cancelled("stopped before the next date")
        found = self._worker.submit(lambda: self._engine.infer_batch(tiles, question, **kwargs), priority=BATCH)
        inferences = found.result()
        self._date_done()
        return inferences


class JobManager:
    def __init__(self, state: ModelState, settings: ServerSettings) -> None:
        self.state, self.settings = state, settings
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        return sum(job.state is JobState.RUNNING for job in self._jobs.values())

    def start(self, request: JobRequest) -> Job:
        """Check a batch request now (paths, output, bounds) and run the job in its own thread."""
        return self.launch(self._prepare(request))

    def start_change(self, request: ChangeRequest) -> Job:
        """Check a change request now (paths, output, bounds, that the rasters overlap) and run it in its own thread."""
        return self.launch(self._prepare_change(request))

    def launch(self, job: Job) -> Job:
        """Run a checked job in its own thread, unless the server runs its most jobs (429) or a running
        job writes the same output (409)."""
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
        bounds = bounds_in_raster_crs(raster, request.bounds, request.bounds_crs)
        options = BatchOptions.named_like(  # prefetch: the default
            request, bounds=bounds, aoi=aoi, terms=HTTP_TERMS, workers=workers, ray_address=self.settings.ray_address
        )
        work = BatchWork(raster, output, options, self._models, _asked(request))
        job = Job(_asked_text(request), raster, output, work, classes=list(request.classes or {}) or None)
        if workers:
            job.message = f"starting {workers} Ray model worker{'s' if workers > 1 else ''}"
        return job

    def _prepare_change(self, request: ChangeRequest) -> Job:
        before = allowed_path(request.before_path, self.settings, what="before_path")
        after = allowed_path(request.after_path, self.settings, what="after_path")
        output = allowed_path(request.output_path, self.settings, what="output_path")
        if output.suffix.lower() != ".gpkg":
            raise ApiError(422, "invalid_input", f"output_path must end in .gpkg, got {output.name}")
        if output in (before, after):
            raise ApiError(422, "invalid_input", f"output_path {output} is one of the rasters: choose another file")
        if output.exists() and not request.overwrite:
            raise ApiError(
                409, "output_exists", f"{output} already exists: set overwrite=true to replace it, or choose another"
            )
        question = validate_question(request.question)
        bounds = bounds_in_raster_crs(before, request.bounds, request.bounds_crs)
        batch = BatchOptions.named_like(request, bounds=None, terms=HTTP_TERMS)  # how masks become polygons
        options = ChangeOptions.named_like(request, bounds=tuple(bounds) if bounds else None, batch=batch)
        align(before, after, resampling=options.resampling, bounds=options.bounds)  # now, not once the job runs: 422
        work = ChangeWork(before, after, output, options, self._change_engine)
        return Job(question, before, output, work, message="waiting for the models")

    def _change_engine(self, stop: threading.Event, date_done: Callable[[], None]) -> Engine:
        return ChangeEngine(self.state.wait_engine(), self.state.worker, stop=stop, date_done=date_done)

    def _run(self, job: Job) -> None:
        try:
            message = job.work.run(job)
            job.state, job.message = JobState.DONE, message
        except Cancelled as exc:
            job.state = JobState.CANCELLED
            job.message = f"{exc}; {job.work.after_cancel}"
        except (ApiError, Think2SegError, OSError) as exc:
            job.state, job.message = JobState.FAILED, to_api_error(exc).message
        except Exception as exc:  # a bug: the job fails, the server keeps serving
            log.exception("job %s failed", job.id)
            job.state, job.message = JobState.FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            job.finished_at = datetime.now(timezone.utc)

    def _models(self, options: BatchOptions) -> ModelSpec | BatchEngine:
        """What a batch job's tiles run on: the models Ray workers load (from the server's model options),
        or the server's own models, through the model worker at batch priority."""
        if options.workers:
            settings = self.settings
            return ModelSpec(
                lvlm=settings.lvlm,
                segmenter=settings.segmenter,
                device=settings.device,
                max_new_tokens=settings.max_new_tokens,
                compile=settings.compile,
            )
        return QueuedEngine(self.state.wait_engine(), self.state.worker)

    def _forget_old(self) -> None:
        finished = [j.id for j in self._jobs.values() if j.state is not JobState.RUNNING]
        for job_id in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job_id]


def _asked(request: JobRequest) -> str | list[ClassQuestions]:
    """What a job asks: its question, or its classes (each checked now: a bad one is a 422)."""
    if request.classes is None:
        return validate_question(request.question or "")
    return [ClassQuestions(name, (question,)) for name, question in request.classes.items()]


def _asked_text(request: JobRequest) -> str:
    """The job's question as its status shows it (the class names when it asks several)."""
    if request.classes is None:
        return request.question or ""
    return f"{len(request.classes)} classes: {', '.join(request.classes)}"


def bounds_in_raster_crs(raster: Path, bounds: Sequence[float] | None, bounds_crs: CrsIn | None) -> list[float] | None:
    """``bounds`` given in ``bounds_crs`` (default: the raster's own), in the raster's CRS."""
    if bounds is None or not bounds_crs:
        return list(bounds) if bounds is not None else None
    with RasterSource(raster) as source:
        return list(transform_bounds(parse_crs(bounds_crs, "bounds_crs"), source.crs, *bounds, densify_pts=21))


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


def _change_message(summary: ChangeSummary) -> str:
    """“appeared 3 polygons, 1,400.0 m²; disappeared 1 polygon, 900.0 m²; persisted ... (EPSG:32633)”."""
    parts = []
    for name in CHANGE_LAYERS:
        figures = summary.layers[name]
        parts.append(
            f"{name} {figures.polygons} polygon{'' if figures.polygons == 1 else 's'}, {figures.area_m2:,.1f} m²"
        )
    return "; ".join(parts) + f" ({summary.crs})"


def _done_message(summary: BatchSummary) -> str:
    failed = summary.failed + summary.previously_failed
    text = f"{summary.polygons} polygons from {summary.grid_text()}"
    return text + (f"; {failed} tile(s) failed: POST again with retry_failed=true to redo them" if failed else "")
