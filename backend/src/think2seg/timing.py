"""Wall-clock time per pipeline stage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

STAGES = (
    "read",
    "prepare",
    "lvlm_prefill",
    "lvlm_decode",
    "parse",
    "sam_encode",
    "sam_decode",
    "vectorize",
    "write",
)
"""The stages in pipeline order; `prepare` is the 840 view and the processor's input tensors."""

NON_MODEL_STAGES = ("read", "parse", "vectorize", "write")
"""The glue around the models; `prepare` (building model inputs) is counted with the LVLM."""


class StageTimer:
    """Accumulates seconds per named stage; ``seconds`` keeps the order stages first ran in."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def merge(self, other: dict[str, float]) -> None:
        for name, seconds in other.items():
            self.add(name, seconds)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())
