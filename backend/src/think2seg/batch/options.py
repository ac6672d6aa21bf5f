"""What a batch run is asked to do, with which models, and what it reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from think2seg.batching import BatchSize, check_batch_size
from think2seg.errors import InputError
from think2seg.models.qwen import MAX_NEW_TOKENS
from think2seg.models.weights import DEFAULT_LVLM, DEFAULT_SEGMENTER

DEFAULT_TILE_SIZE_PX = 1024
DEFAULT_OVERLAP_PX = 128


@dataclass(frozen=True)
class BatchOptions:
    """Options of :func:`~think2seg.batch.runner.run_batch` (the CLI's flags).

    ``batch_size`` is a number of tiles or ``auto`` (see :mod:`think2seg.batching`). ``prefetch``
    is how many tiles a background thread reads and prepares ahead of the models, beyond the next
    batch (0 reads them in the same thread, one after the other).
    """

    tile_size_px: int = DEFAULT_TILE_SIZE_PX
    overlap_px: int = DEFAULT_OVERLAP_PX
    bounds: Sequence[float] | None = None
    aoi: Path | None = None
    batch_size: BatchSize = 1
    prefetch: int = 4
    resume: bool = False
    retry_failed: bool = False
    overwrite: bool = False
    simplify_px: float = 0.0
    min_area_m2: float = 0.0
    pixel_coords: bool = False

    def __post_init__(self) -> None:
        check_batch_size(self.batch_size)
        if self.prefetch < 0:
            raise InputError(f"prefetch must be >= 0, got {self.prefetch}")
        if self.simplify_px < 0 or self.min_area_m2 < 0:
            raise InputError("--simplify-px and --min-area-m2 must be >= 0")

    @classmethod
    def named_like(cls, source: object, **given: Any) -> BatchOptions:
        """The options that ``source`` (the CLI's arguments, an API request) holds under the same
        names, then ``given``; defaults for the rest."""
        found = {f.name: getattr(source, f.name) for f in fields(cls) if hasattr(source, f.name)}
        return cls(**{**found, **given})


@dataclass(frozen=True)
class ModelSpec:
    """Which models to load, and where; a batch run loads them only when unfinished tiles remain."""

    lvlm: str = DEFAULT_LVLM
    segmenter: str = DEFAULT_SEGMENTER
    device: str = "auto"
    max_new_tokens: int = MAX_NEW_TOKENS
    compile: bool = False

    def load(self):  # noqa: ANN201 - returns an Engine (imported lazily: models pull in torch)
        from think2seg.engine import Engine

        return Engine.load(
            lvlm=self.lvlm,
            segmenter=self.segmenter,
            device=self.device,
            max_new_tokens=self.max_new_tokens,
            compile=self.compile,
        )


@dataclass(frozen=True)
class BatchSummary:
    """What a run did. ``counts`` holds this execution's tiles per status (ok, no_target,
    unparseable, failed, no_data, outside_aoi); ``tiles_before`` were finished by earlier ones.
    ``batch_size`` is the size the run ended with, after ``oom_splits`` halvings on out-of-memory."""

    output: Path
    tiles_total: int
    tiles_before: int
    counts: dict[str, int]
    previously_failed: int
    polygons: int
    total_area_m2: float
    seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    georeferenced: bool = True
    batch_size: int = 1
    oom_splits: int = 0

    @property
    def processed(self) -> int:
        """Tiles this execution tried to segment (finished or failed)."""
        return sum(self.counts.get(s, 0) for s in ("ok", "no_target", "unparseable", "failed"))

    @property
    def skipped(self) -> int:
        return self.counts.get("no_data", 0) + self.counts.get("outside_aoi", 0)

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0) + self.counts.get("unparseable", 0)


@dataclass(frozen=True)
class BatchProgress:
    """Where a running batch stands: tiles finished (by any execution) out of the grid's total."""

    done: int
    total: int
    counts: dict[str, int]
    elapsed_s: float

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0) + self.counts.get("unparseable", 0)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at this execution's pace; None before the first tile."""
        finished_now = sum(self.counts.values())
        if not finished_now:
            return None
        return (self.total - self.done) * self.elapsed_s / finished_now
