"""The model worker: one thread runs all GPU work, interactive requests before batch tiles.

Requests and batch jobs hand it closures; it runs them one at a time in priority order, so a
question typed in QGIS waits at most for the batch tile in progress, never for a whole job. The
interactive queue is bounded: when it is full, :meth:`submit` raises :class:`Busy` (429).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

INTERACTIVE, BATCH = 0, 1
_STOP = 99


class Busy(Exception):
    """The interactive queue is full."""


class ModelWorker:
    """Runs submitted callables on one daemon thread, lowest priority number first, then FIFO."""

    def __init__(self, *, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._waiting = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="think2seg-model-worker", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Interactive requests queued and not started."""
        return self._waiting

    def submit(self, work: Callable[[], T], *, priority: int = INTERACTIVE) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if priority == INTERACTIVE:
                if self._waiting >= self.max_waiting:
                    raise Busy(f"{self._waiting} requests are waiting for the models")
                self._waiting += 1
            self._queue.put((priority, next(self._order), work, future))
        return future

    def stop(self) -> None:
        self._queue.put((_STOP, next(self._order), None, None))
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            priority, _order, work, future = self._queue.get()
            if priority == _STOP:
                return
            if priority == INTERACTIVE:
                with self._lock:
                    self._waiting -= 1
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)


class QueuedEngine:
    """An engine for batch jobs whose model calls run on the worker at batch priority."""

    def __init__(self, engine: Any, worker: ModelWorker) -> None:
        self._engine, self._worker = engine, worker
        self.prompter, self.segmenter = engine.prompter, engine.segmenter

    def infer_batch(self, *args: Any, **kwargs: Any) -> Any:
        return self._worker.submit(lambda: self._engine.infer_batch(*args, **kwargs), priority=BATCH).result()
