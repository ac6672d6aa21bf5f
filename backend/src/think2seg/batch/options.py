"""What a batch run is asked to do, with which models, and what it reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from think2seg.errors import InputError
from think2seg.geo.outline import check_outline
from think2seg.models.base import Prompter, Segmenter
from think2seg.models.qwen import MAX_NEW_TOKENS
from think2seg.models.weights import DEFAULT_LVLM, DEFAULT_SEGMENTER
from think2seg.options import MIN_AREA_M2, MIN_SCORE, OVERLAP_PX, PREFETCH, SIMPLIFY_PX, TILE_SIZE_PX
from think2seg.runs.microbatch import AUTO, BatchSize, check_batch_size
from think2seg.runs.policy import CLI_TERMS, Continuation, Terms

if TYPE_CHECKING:
    from PIL import Image

    from think2seg.engine import Engine
    from think2seg.inference import Inference
    from think2seg.tile import Tile

_CHECKED = (TILE_SIZE_PX, OVERLAP_PX, PREFETCH, SIMPLIFY_PX, MIN_AREA_M2, MIN_SCORE)


@dataclass(frozen=True)
class BatchOptions:
    """Options of :func:`~think2seg.batch.runner.run_batch` (the CLI's flags).

    ``batch_size`` is a number of tiles or ``auto``, the default as in the CLI and the HTTP API (1 on
    a CPU; see :mod:`think2seg.runs.microbatch`). Limits and units: :mod:`think2seg.options`. ``prefetch``
    is how many tiles a background thread reads and prepares ahead of the models, beyond the next
    batch (0 reads them in the same thread, one after the other).
    """

    tile_size_px: int = TILE_SIZE_PX.default
    overlap_px: int = OVERLAP_PX.default
    bounds: Sequence[float] | None = None
    aoi: Path | None = None
    batch_size: BatchSize = AUTO
    prefetch: int = PREFETCH.default
    resume: bool = False
    retry_failed: bool = False
    overwrite: bool = False
    simplify_px: float = SIMPLIFY_PX.default
    min_area_m2: float = MIN_AREA_M2.default
    min_score: float = MIN_SCORE.default
    outline: str = "pixel"
    """How outlines are cleaned (:data:`~think2seg.geo.outline.OUTLINES`), with ``simplify_px`` as tolerance."""
    pixel_coords: bool = False
    resolution_m: float | None = None
    """Read every raster on a grid of this ground resolution (metres per pixel); needed for web services."""
    stac_asset: str | None = None
    """The asset read from STAC items (default: role 'visual', or named visual/image/rgb)."""
    terms: Terms = CLI_TERMS
    """How messages name resume/overwrite (the CLI's flags, or the HTTP API's fields)."""
    target_crs: str | None = None
    """Reproject the output polygons into this CRS (EPSG code, WKT...); needed when rasters' CRSs differ."""
    workers: int = 0
    """Model workers on Ray (:mod:`think2seg.batch.workers`); 0 runs the models in this process."""
    ray_address: str | None = None
    """The Ray cluster the workers join (else ``RAY_ADDRESS``, else a local instance)."""

    @property
    def continuation(self) -> Continuation:
        """What the run does with an existing output (see :mod:`think2seg.runs.policy`)."""
        return Continuation(self.resume, self.retry_failed, self.overwrite, self.terms)

    def __post_init__(self) -> None:
        check_batch_size(self.batch_size)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise InputError(f"workers must be a whole number of Ray workers (0 = none), not {self.workers!r}")
        check_outline(self.outline)
        for option in _CHECKED:  # stored as checked: ints for the whole options, floats for the others
            object.__setattr__(self, option.name, option.check(getattr(self, option.name)))

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

    def load(self) -> Engine:  # imported lazily: models pull in torch
        from think2seg.engine import Engine

        return Engine.load(
            lvlm=self.lvlm,
            segmenter=self.segmenter,
            device=self.device,
            max_new_tokens=self.max_new_tokens,
            compile=self.compile,
        )


class BatchEngine(Protocol):
    """What a batch run needs of loaded models: :class:`~think2seg.engine.Engine` is one, and so is
    the server's engine that queues its calls on the model worker."""

    prompter: Prompter
    segmenter: Segmenter

    def infer_batch(
        self, tiles: Sequence[Tile], question: str | Sequence[str], *, views: Sequence[Image.Image | None] | None = None
    ) -> list[Inference]: ...


@dataclass(frozen=True)
class BatchSummary:
    """What a run did, over all its rasters. ``counts`` holds this execution's tile results (one per
    tile and question) per status (ok,
    no_target, unparseable, failed, no_data, outside_aoi); ``tiles_before`` were finished by earlier
    ones. ``batch_size`` is the size the run ended with, after ``oom_splits`` halvings on
    out-of-memory (in this process; with workers, the first worker's planned size)."""

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
    rasters: int = 1
    skipped_rasters: tuple[str, ...] = ()
    """Rasters the bounds or the AOI miss, each with the reason."""
    workers: int = 0
    retries: int = 0
    """Tiles sent again because the worker that held them died."""
    output_crs: str = ""
    reprojected: bool = False
    """Whether the polygons were reprojected into ``output_crs`` (``--target-crs``)."""
    questions: int = 1
    """Questions asked of every tile (its classes'); tiles and counts are of tile-question pairs."""
    class_overlaps: dict[tuple[str, str], float] = field(default_factory=dict)
    """Total area (m²) per pair of classes that claim the same ground (layer ``class_overlaps``)."""
    class_polygons: dict[str, int] = field(default_factory=dict)
    """Polygons per class (label), when the run asked several questions."""

    def grid_text(self) -> str:
        """The grid's size: "16 tiles", or "16 tiles x 3 questions = 48 results" with several."""
        if self.questions == 1:
            return f"{self.tiles_total} tiles"
        tiles = self.tiles_total // self.questions
        return f"{tiles} tiles x {self.questions} questions = {self.tiles_total} results"

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
    workers: int = 0
    """Model workers asked for (0: the models run in this process)."""
    workers_alive: int = 0
    """Workers ready to take tiles now (one being restarted after a fault is not)."""
    retries: int = 0
    """Tiles sent again because the worker holding them died."""

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0) + self.counts.get("unparseable", 0)

    @property
    def tiles_per_s(self) -> float | None:
        """This execution's pace (tiles finished per second); None before the first tile."""
        finished_now = sum(self.counts.values())
        return finished_now / self.elapsed_s if finished_now and self.elapsed_s > 0 else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at this execution's pace; None before the first tile."""
        finished_now = sum(self.counts.values())
        if not finished_now:
            return None
        return (self.total - self.done) * self.elapsed_s / finished_now
