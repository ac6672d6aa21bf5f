"""How many tiles go through the models together: a fixed number, or ``auto``.

``auto`` sizes batches to the GPU memory that is free once the models are loaded, from each
model's own estimate of what one more tile costs (its KV cache and activations), capped at
:data:`AUTO_CAP`; on a CPU it is 1, since batching buys nothing there. Whatever the size, a batch
that runs out of GPU memory is split in halves and the halves are run instead, and the size stays
halved for the batches after it: no tile is lost and none is run twice.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from think2seg.errors import InputError

log = logging.getLogger(__name__)

AUTO: Literal["auto"] = "auto"
AUTO_CAP = 64
"""The largest ``auto`` batch: beyond it decoding is compute-bound on current GPUs and gains little."""
MEMORY_HEADROOM = 0.8
"""The share of the free GPU memory ``auto`` plans to use (allocator fragmentation, CUDA graphs)."""
MAX_BATCH_SIZE = 256

BatchSize = int | Literal["auto"]
Item = TypeVar("Item")
Result = TypeVar("Result")


def parse_batch_size(text: str) -> BatchSize:
    """``auto`` or a whole number from 1 to :data:`MAX_BATCH_SIZE` (an argparse ``type``)."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"use auto or a whole number from 1 to {MAX_BATCH_SIZE}, got {text!r}")
    return size


def check_batch_size(size: object) -> BatchSize:
    """``size`` if it is ``auto`` or a whole number in range; else an :class:`InputError`."""
    if size == AUTO:
        return AUTO
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE:
        raise InputError(f"--batch-size must be auto or a whole number from 1 to {MAX_BATCH_SIZE}, got {size!r}")
    return size


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator running out of memory: CUDA's (``torch.OutOfMemoryError``),
    the CPU's (``MemoryError``), or a runtime error that says so (also when a model error wraps it).

    The one test of every driver and of the server's 503 reply; it needs no torch import.
    """
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_gpu_memory() -> None:
    """Return cached, unused GPU memory to the driver (after an out-of-memory error)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class BatchSizer:
    """The batch size of a run: fixed or ``auto``, halved after each out-of-memory error."""

    def __init__(self, size: int, *, requested: BatchSize) -> None:
        self.size = max(1, size)
        self.requested = requested
        self.shrinks = 0

    @classmethod
    def plan(cls, requested: BatchSize, engine: Any) -> BatchSizer:
        """The sizer for ``requested`` (a number, or ``auto`` measured on the loaded ``engine``)."""
        requested = check_batch_size(requested)
        size = auto_batch_size(engine) if requested == AUTO else requested
        if requested == AUTO:
            log.info("batch size auto: %d", size)
        return cls(size, requested=requested)

    def shrink(self, failed: int) -> int:
        """The size after a batch of ``failed`` tiles ran out of memory: half of it (at least 1)."""
        self.size = max(1, min(self.size, failed // 2))
        self.shrinks += 1
        log.warning("out of GPU memory with %d tiles at once: continuing with batches of %d", failed, self.size)
        return self.size

    def run(self, items: Sequence[Item], infer: Callable[[list[Item]], Sequence[Result]]) -> list[Result]:
        """``infer(items)``, split into smaller batches on out-of-memory; results in ``items`` order.

        An out-of-memory error of a single item is raised (to be recorded as that item's failure).
        """
        items = list(items)
        try:
            results = infer(items)
        except Exception as exc:
            if not is_out_of_memory(exc) or len(items) == 1:
                raise
            release_gpu_memory()
            self.shrink(len(items))
        else:
            if len(results) != len(items):
                raise RuntimeError(f"{len(items)} items in, {len(results)} results out")
            return list(results)
        gathered: list[Result] = []
        start = 0
        while start < len(items):  # at the size of the moment, which may shrink again
            chunk = items[start : start + self.size]
            gathered.extend(self.run(chunk, infer))
            start += len(chunk)
        return gathered


def auto_batch_size(engine: Any, *, free_bytes: int | None = None, cap: int = AUTO_CAP) -> int:
    """The largest batch whose estimated memory fits :data:`MEMORY_HEADROOM` of the free GPU memory.

    ``engine`` has a ``prompter`` and a ``segmenter``; each may say what one tile costs it
    (``memory_per_sample()`` and ``memory_per_image()``, in bytes). On a CPU the answer is 1.
    """
    device = getattr(engine.prompter, "device", None)
    if free_bytes is None:
        if device is None or getattr(device, "type", "cpu") != "cuda":
            return 1
        import torch

        free_bytes = torch.cuda.mem_get_info(device)[0]
    per_tile = _per_tile_bytes(engine)
    if per_tile <= 0:
        return 1
    return max(1, min(cap, int(free_bytes * MEMORY_HEADROOM) // per_tile))


def _per_tile_bytes(engine: Any) -> int:
    prompter = getattr(engine.prompter, "memory_per_sample", None)
    segmenter = getattr(engine.segmenter, "memory_per_image", None)
    return (int(prompter()) if prompter else 0) + (int(segmenter()) if segmenter else 0)
