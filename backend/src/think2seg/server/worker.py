"""The model worker: one thread runs all GPU work, interactive requests before batch tiles.

Requests and batch jobs hand it closures; it runs them one at a time in priority order, so a
question typed in QGIS waits at most for the batch in progress, never for a whole job. The
interactive queue is bounded: when it is full, :meth:`submit` raises :class:`Busy` (429).

Work submitted with a *group* may share one model call: when the worker picks it up, it takes
the other waiting work of the same group with it (up to the group's limit) and runs them
together. Nothing waits to be grouped: a request alone runs at once, alone.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from think2seg.runs.microbatch import BatchSizer
from think2seg.runs.push import push
from think2seg.server.serving import ServingEngine

log = logging.getLogger(__name__)

T = TypeVar("T")

INTERACTIVE, BATCH = 0, 1
_STOP = 99


class Busy(Exception):
    """The interactive queue is full."""


@dataclass(frozen=True)
class Group:
    """Work that can run together: ``run_many(items)`` returns one result per item, in order;
    ``sizer()`` plans how many at once (called on the worker, so it may measure the GPU)."""

    key: Hashable
    run_many: Callable[[list[Any]], Sequence[Any]]
    sizer: Callable[[], BatchSizer]


@dataclass(order=True)
class _Job:
    priority: int
    order: int
    work: Any = field(compare=False)  # a callable, or the item of a group
    future: Future[Any] = field(compare=False)
    group: Group | None = field(compare=False, default=None)


class ModelWorker:
    """Runs submitted work on one daemon thread, lowest priority number first, then FIFO."""

    def __init__(self, *, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._heap: list[_Job] = []
        self._order = itertools.count()
        self._waiting = 0
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="think2seg-model-worker", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Interactive requests queued and not started."""
        return self._waiting

    def submit(self, work: Callable[[], T], *, priority: int = INTERACTIVE) -> Future[T]:
        """Queue ``work()``; its future gets the result or the exception."""
        return self._put(_Job(priority, next(self._order), work, Future()))

    def submit_grouped(self, group: Group, item: Any) -> Future:
        """Queue ``item`` for ``group.run_many`` (interactive priority), with whatever waits in its group."""
        return self._put(_Job(INTERACTIVE, next(self._order), item, Future(), group))

    def stop(self) -> None:
        with self._ready:
            heapq.heappush(self._heap, _Job(_STOP, next(self._order), None, Future()))
            self._ready.notify()
        self._thread.join(timeout=30)

    def _put(self, job: _Job) -> Future:
        with self._ready:
            if job.priority == INTERACTIVE:
                if self._waiting >= self.max_waiting:
                    raise Busy(f"{self._waiting} requests are waiting for the models")
                self._waiting += 1
            heapq.heappush(self._heap, job)
            self._ready.notify()
        return job.future

    def _run(self) -> None:
        while True:
            jobs = self._next()
            if jobs[0].priority == _STOP:
                return
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            if jobs[0].group is None:
                _settle(jobs[0].future, jobs[0].work)
            else:
                _run_group(jobs[0].group, jobs)

    def _next(self) -> list[_Job]:
        """The first job, and the waiting jobs of its group (if any), taken off the queue."""
        with self._ready:
            while not self._heap:
                self._ready.wait()
            first = heapq.heappop(self._heap)
            jobs = [first]
            if first.group is not None:
                limit = first.group.sizer().size
                same = [j for j in sorted(self._heap) if j.group is not None and j.group.key == first.group.key]
                jobs += same[: limit - 1]
                if len(jobs) > 1:
                    taken = {id(j) for j in jobs}
                    self._heap = [j for j in self._heap if id(j) not in taken]
                    heapq.heapify(self._heap)
            self._waiting -= sum(job.priority == INTERACTIVE for job in jobs)
            return jobs


def _settle(future: Future, work: Callable[[], Any]) -> None:
    try:
        future.set_result(work())
    except BaseException as exc:  # handed to whoever waits on the future
        future.set_exception(exc)


def _run_group(group: Group, jobs: list[_Job]) -> None:
    """One call for all (split on out-of-memory); if it fails, each alone, so one bad request fails alone."""
    for job, outcome in zip(jobs, push([job.work for job in jobs], group.run_many, group.sizer())):
        if outcome.error is not None:
            job.future.set_exception(outcome.error)
        else:
            job.future.set_result(outcome.result)


class QueuedEngine:
    """An engine for batch jobs whose model calls run on the worker at batch priority."""

    def __init__(self, engine: ServingEngine, worker: ModelWorker) -> None:
        self._engine, self._worker = engine, worker
        self.prompter, self.segmenter = engine.prompter, engine.segmenter

    def infer_batch(self, *args: Any, **kwargs: Any) -> Any:
        return self._worker.submit(lambda: self._engine.infer_batch(*args, **kwargs), priority=BATCH).result()
