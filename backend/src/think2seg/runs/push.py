"""Push items through the models: micro-batched, split on out-of-memory, each failure alone.

Every driver (``batch``, the server's model worker, ``eval``) hands its items here with the call
that answers a list of them. The items go through together, at the size the
:class:`~think2seg.runs.microbatch.BatchSizer` plans; a batch that runs out of memory is split and the
size stays smaller; a batch that fails otherwise is run again item by item, so a failing item fails
alone, with its message, and the others get their results. Nothing is run twice once it has
succeeded, and interrupts (Ctrl-C) are never swallowed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from think2seg.runs.microbatch import BatchSizer, is_out_of_memory, release_gpu_memory

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

MESSAGE_CHARS = 300


@dataclass(frozen=True)
class Outcome(Generic[Item, Result]):
    """One item's result, or the exception it failed with; ``seconds``: its share of the model time."""

    item: Item
    result: Result | None = None
    error: Exception | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def message(self) -> str:
        """The failure in one line (empty when the item succeeded)."""
        return describe(self.error) if self.error is not None else ""


def describe(exc: BaseException) -> str:
    """``Type: message`` on one line, cut at :data:`MESSAGE_CHARS` characters."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:MESSAGE_CHARS]}" if text else type(exc).__name__


def push(
    items: Sequence[Item], infer: Callable[[list[Item]], Sequence[Result]], sizer: BatchSizer
) -> list[Outcome[Item, Result]]:
    """``infer`` on ``items`` (split by ``sizer`` on out-of-memory); one outcome per item, in order.

    If the batch fails for another reason, or a single item runs out of memory, each item is run
    alone, so only the failing ones fail.
    """
    items = list(items)
    if not items:
        return []
    start = time.perf_counter()
    try:
        results = sizer.run(items, infer)
    except Exception as exc:  # an outcome per item below, never swallowed
        if len(items) > 1:
            log.info("a batch of %d failed together (%s): running them one by one", len(items), describe(exc))
            return [outcome for item in items for outcome in push([item], infer, sizer)]
        if is_out_of_memory(exc):
            release_gpu_memory()
        log.warning("an item failed: %s", describe(exc))
        return [Outcome(items[0], error=exc, seconds=time.perf_counter() - start)]
    share = (time.perf_counter() - start) / len(items)
    return [Outcome(item, result, seconds=share) for item, result in zip(items, results)]


def batches(items: Iterable[Item], sizer: BatchSizer) -> Iterator[list[Item]]:
    """``items`` in lists of the sizer's current size (read at each list, so it follows shrinks)."""
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) >= sizer.size:
            yield batch
            batch = []
    if batch:
        yield batch
