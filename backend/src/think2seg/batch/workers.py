"""Model workers on Ray: N actors, each holding one Engine on one GPU (or on a share of the CPUs).

    driver: unfinished tiles of every raster ─▶ chunks ─▶ ≤ 2 chunks in flight per worker ─▶ outcomes
            ─▶ record (the driver alone writes the GeoPackage: store, stitching and resume unchanged)

Why Ray Core actors and ``ray.wait``, not Ray Data: the run needs three things Ray Data hides.
(1) Exact retries: when a worker dies, the chunks it held are known here and sent to the next free
worker, counted, and a tile that kills its worker three times is recorded as failed instead of
retried forever; Ray Data retries inside its executor, so the run could neither count them nor
stop a poison tile. (2) One writer: results must come back to this process in any order as they
finish; with Ray Data that is a streaming iterator over an executor that also schedules its own
read tasks, which starve and hang when the model actors take every CPU (a 2-core machine).
(3) Back-pressure per worker with no extra code: each worker has at most ``IN_FLIGHT`` chunks (one
running, one waiting so it never idles), a chunk goes to whichever worker frees a slot first, so a
slow worker simply takes fewer tiles. Actor restarts, placement on GPUs (``num_gpus=1``) and
joining a cluster (``ray.init(address=...)``) are Ray's.

Without ``--workers`` nothing here is imported.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

from think2seg.batch.options import BatchOptions, ModelSpec
from think2seg.batch.work import RasterTiles, TileOutcome, failed_tile, segment_tiles
from think2seg.errors import DeviceError, InputError, ModelError
from think2seg.runs.microbatch import BatchSize, BatchSizer
from think2seg.runs.states import TileStatus

log = logging.getLogger(__name__)

NAMESPACE = "think2seg"
IN_FLIGHT = 2
"""Chunks sent to a worker at once: one running and one waiting."""
MAX_DEATHS = 3
"""A tile whose worker died this many times while holding it is recorded as failed."""
ACTOR_RESTARTS = 3
"""How often Ray restarts a worker that died (killed, out of memory) before it is given up."""
RESTART_WAIT_S = 600.0
"""How long a restarting worker may stay unavailable (loading the models again) before it is given up."""
RESTART_POLL_S = 0.25


def require_ray() -> ModuleType:
    """The ``ray`` module, or a clear error saying which extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise InputError("--workers needs Ray: pip install 'think2seg[ray]' (or run without --workers)") from exc
    return ray


class TileWorker:
    """One Ray worker's state: the loaded models and their batch plan. A load failure is kept and
    reported by :meth:`ready`, so Ray does not restart a worker that can never start."""

    def __init__(self, models: ModelSpec, batch_size: BatchSize, prefetch: int) -> None:
        self.prefetch, self.error = prefetch, ""
        try:
            _use_assigned_cpus()
            self.engine = models.load()
            self.sizer = BatchSizer.plan(batch_size, self.engine)
        except Exception as exc:  # reported to the driver, which names it
            self.error = f"{type(exc).__name__}: {exc}"

    def ready(self) -> tuple[int, str]:
        """(batch size, load error or "")."""
        return (self.sizer.size if not self.error else 0), self.error

    def segment(self, work: RasterTiles) -> list[TileOutcome]:
        return list(segment_tiles(self.engine, work, self.sizer, prefetch=self.prefetch))


def _use_assigned_cpus() -> None:
    """As many torch threads as CPUs Ray gave this worker (at least one)."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, round(cpus)))


@dataclass(frozen=True)
class WorkersReport:
    batch_size: int
    retries: int


@contextmanager
def worker_pool(models: ModelSpec, options: BatchOptions) -> Iterator[WorkerPool]:
    """Join or start Ray and start ``options.workers`` workers (they load the models in the
    background); on leaving, the workers are stopped, and a Ray instance started here is shut down."""
    ray = require_ray()
    started_here = _connect(ray, options.ray_address)
    try:
        pool = WorkerPool(ray, models, options)
        try:
            yield pool
        finally:
            pool.close()
    finally:
        if started_here:
            ray.shutdown()


def _connect(ray: Any, address: str | None) -> bool:
    """Join the cluster (``address``, else ``RAY_ADDRESS``) or start a local instance; True if started here."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise InputError(
            f"cannot reach the Ray cluster at {address} ({exc}): start it with `ray start --head`, "
            "or check --ray-address / RAY_ADDRESS"
        ) from exc
    return address == "local"


def actor_options(resources: dict[str, float], models: ModelSpec, workers: int) -> tuple[dict[str, Any], str]:
    """Ray resources of one worker, and the device it loads the models on.

    One GPU each when the cluster has GPUs (and the device is not ``cpu``); else a share of the
    CPUs, fractional so that N workers fit on fewer cores without waiting on each other.
    """
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
    share = max(0.01, int(cpus / workers * 99) / 100)  # a little under an equal share: they always fit
    if models.device == "cpu" or (models.device == "auto" and gpus < 1):
        return {"num_cpus": share}, "cpu"
    if gpus < 1:
        raise DeviceError(f"--device {models.device} but the Ray cluster has no GPU: use --device cpu or auto")
    if workers > gpus:
        raise InputError(
            f"{workers} workers asked for but the Ray cluster has {gpus:g} GPU(s): one worker per GPU, "
            f"pass --workers {int(gpus)}"
        )
    return {"num_gpus": 1, "num_cpus": min(share, 1.0)}, "cuda"  # Ray shows each worker its own GPU as cuda:0


class WorkerPool:
    """The workers of one run and the chunks in flight on them."""

    def __init__(self, ray: Any, models: ModelSpec, options: BatchOptions) -> None:
        self.ray, self.workers = ray, options.workers
        resources, device = actor_options(ray.cluster_resources(), models, options.workers)
        remote = ray.remote(TileWorker)
        tag = uuid.uuid4().hex[:8]
        self.actors = [
            remote.options(
                name=f"think2seg-{tag}-worker-{i}",
                namespace=NAMESPACE,
                max_restarts=ACTOR_RESTARTS,
                max_task_retries=0,  # a chunk lost with its worker is sent again from here, counted
                **resources,
            ).remote(replace(models, device=device), options.batch_size, options.prefetch)
            for i in range(options.workers)
        ]
        self.pending: dict[Any, tuple[int, RasterTiles | None]] = {}  # ref -> (worker, chunk; None: ready call)
        self.sizes: dict[int, int] = {}  # worker -> chunk size, while it is alive
        self.given_up: set[int] = set()
        self.deaths: Counter[tuple[str, int]] = Counter()  # (source, tile_id) -> workers that died holding it
        self.unavailable_since: dict[int, float] = {}  # worker -> when it died, until it is ready again
        self.retries = 0
        self.errors: list[str] = []
        self.queue: deque[RasterTiles] = deque()
        for index, actor in enumerate(self.actors):
            self.pending[actor.ready.remote()] = (index, None)

    def run(
        self,
        works: list[RasterTiles],
        record: Callable[[str, TileOutcome], None],
        status: Callable[[int, int], None],
        stop: threading.Event | None = None,
    ) -> WorkersReport:
        """Segment ``works``; ``record(source, outcome)`` is called here, in this process, for every
        finished tile, and ``status(alive, retries)`` when the workers change. Ends early (the tiles
        in flight are not recorded) when ``stop`` is set."""
        self.queue.extend(works)
        self.record, self.status = record, status
        status(0, 0)
        while self._left() or any(chunk is not None for _, chunk in self.pending.values()):
            if stop is not None and stop.is_set():
                break
            if not self.pending:
                raise ModelError(
                    f"all {self.workers} workers failed ({'; '.join(dict.fromkeys(self.errors)) or 'no reason given'}): "
                    "the finished tiles are saved, run again with --resume"
                )
            done, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=1.0)
            for ref in done:
                self._settle(ref)
        return WorkersReport(min(self.sizes.values(), default=1), self.retries)

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception as exc:  # already gone: nothing to stop
                log.debug("worker already gone: %s", exc)

    def _settle(self, ref: Any) -> None:
        index, chunk = self.pending.pop(ref)
        try:
            value = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:  # the worker died (killed, out of memory, node lost)
            self._died(index, chunk, exc)
            return
        except self.ray.exceptions.RayTaskError as exc:  # a bug in a chunk: its tiles fail, the run goes on
            assert chunk is not None  # noqa: S101 (ready() raises nothing)
            self._fail(chunk, f"the worker raised {type(exc.cause).__name__}: {exc.cause}")
            self._feed(index)
            return
        if chunk is None:
            self._ready(index, *value)
        else:
            for outcome in value:
                self.record(chunk.source, outcome)
            self._feed(index)

    def _ready(self, index: int, size: int, error: str) -> None:
        if error:
            log.warning("worker %d could not load the models: %s", index, error)
            self.errors.append(error)
            self.given_up.add(index)
            self.ray.kill(self.actors[index], no_restart=True)
            return
        self.sizes[index] = size
        self.unavailable_since.pop(index, None)
        self.status(len(self.sizes), self.retries)
        self._feed(index)

    def _died(self, index: int, chunk: RasterTiles | None, exc: Exception) -> None:
        """Worker ``index`` died: its chunk goes back in line, and it is asked again until Ray has
        restarted it. It is given up when Ray gives it up (its restarts are used up, its node is
        gone) or when it stays unavailable for ``RESTART_WAIT_S``."""
        self.sizes.pop(index, None)
        if chunk is not None:
            self._requeue(chunk)
        restarting = isinstance(exc, self.ray.exceptions.ActorUnavailableError)
        since = self.unavailable_since.setdefault(index, time.monotonic())
        if (chunk is None and not restarting) or time.monotonic() - since > RESTART_WAIT_S:
            self.errors.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            self.given_up.add(index)
        elif not any(i == index and c is None for i, c in self.pending.values()):
            if chunk is None:
                time.sleep(RESTART_POLL_S)  # it is restarting: ask again in a moment
            self.pending[self.actors[index].ready.remote()] = (index, None)
        self.status(len(self.sizes), self.retries)

    def _requeue(self, chunk: RasterTiles) -> None:
        """Send a lost chunk again (first in line), except tiles that already killed workers too often."""
        again = []
        for tile in chunk.tiles:
            key = (chunk.source, tile.tile_id)
            self.deaths[key] += 1
            if self.deaths[key] >= MAX_DEATHS:
                message = f"the worker died {MAX_DEATHS} times on this tile (killed, out of memory or node lost)"
                for outcome in failed_tile(tile, chunk.asks, TileStatus.FAILED, message):
                    self.record(chunk.source, outcome)
            else:
                again.append(tile)
        if again:
            self.retries += len(again)
            self.queue.appendleft(replace(chunk, tiles=tuple(again)))

    def _fail(self, chunk: RasterTiles, message: str) -> None:
        for tile in chunk.tiles:
            for outcome in failed_tile(tile, chunk.asks, TileStatus.FAILED, message):
                self.record(chunk.source, outcome)

    def _feed(self, index: int) -> None:
        """Send chunks to worker ``index`` until it holds ``IN_FLIGHT`` of them."""
        if index not in self.sizes:
            return
        held = sum(1 for i, chunk in self.pending.values() if i == index and chunk is not None)
        for _ in range(IN_FLIGHT - held):
            chunk = self._take(self.sizes[index])
            if chunk is None:
                return
            self.pending[self.actors[index].segment.remote(chunk)] = (index, chunk)

    def _left(self) -> bool:
        return any(work.tiles for work in self.queue)

    def _take(self, batch_size: int) -> RasterTiles | None:
        """The next tiles of one raster for a worker of ``batch_size`` (tile-question pairs): two
        batches, so the worker reads one while it infers the other."""
        while self.queue and not self.queue[0].tiles:
            self.queue.popleft()
        if not self.queue:
            return None
        head = self.queue[0]
        size = max(2, 2 * max(1, batch_size // len(head.asks)))
        self.queue[0] = replace(head, tiles=head.tiles[size:])
        return replace(head, tiles=head.tiles[:size])
