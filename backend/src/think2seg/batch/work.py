"""The work on one raster's tiles, the same in the driver's process and in a Ray worker.

    planned tiles ─▶ read + 840 view ─▶ engine.infer_batch (micro-batches of tile × question) ─▶ core pieces
                 ─▶ one outcome per tile and question

Every question of the run (its classes) is asked of a tile in the same model batch: the tile is read
and its view made once, and SAM encodes it once for all its questions.

An outcome is everything the driver needs to record a tile except what depends on the whole grid
(which core edges are seams) or on the output (footprints): both are added by the driver, which
alone writes the GeoPackage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from think2seg.batch.grid import GridTile
from think2seg.batch.options import BatchEngine
from think2seg.batch.tiles import Prefetcher, ReadTile, read_tiles
from think2seg.classes import Ask
from think2seg.geo.bands import StretchLimits
from think2seg.geo.read import RasterSpec
from think2seg.geo.vectorize import owner_scores, pixel_polygons, polygon_owners
from think2seg.inference import Inference, scored_mask
from think2seg.result import InstanceResult
from think2seg.runs.microbatch import BatchSizer
from think2seg.runs.push import push
from think2seg.runs.states import TileStatus
from think2seg.timing import StageTimer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RasterTiles:
    """Which tiles of which raster to segment, and how to read them (picklable: sent to workers)."""

    source: str
    raster: RasterSpec
    asks: tuple[Ask, ...]
    """The questions asked of each of these tiles (all of the run's, or those a tile still lacks)."""
    tiles: tuple[GridTile, ...]
    limits: StretchLimits
    pixel_coords: bool = False
    min_score: float = 0.0


@dataclass
class TileOutcome:
    """What one tile attempt produced for one question (``ask``); ``pieces`` are its core's polygons in whole-pixel
    coordinates of the raster, ``scores`` the score of the instance that produced each piece (NaN:
    unknown), ``timings`` the seconds of each stage it went through."""

    grid_tile: GridTile
    status: TileStatus
    message: str = ""
    seconds: float = 0.0
    instances: tuple[InstanceResult, ...] = ()
    reasoning: str = ""
    raw_answer: str = ""
    pieces: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    timings: dict[str, float] = field(default_factory=dict)
    scores: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.float64))
    ask: Ask | None = None
    """The question this outcome answers (set by every producer; None only in hand-made outcomes)."""


def failed_tile(grid_tile: GridTile, asks: tuple[Ask, ...], status: TileStatus, message: str) -> list[TileOutcome]:
    """One outcome per question for a tile that got no answer (failed, outside the AOI...)."""
    return [TileOutcome(grid_tile, status, message, ask=ask) for ask in asks]


def segment_tiles(
    engine: BatchEngine,
    work: RasterTiles,
    sizer: BatchSizer,
    *,
    prefetch: int = 0,
    stop: threading.Event | None = None,
) -> Iterator[TileOutcome]:
    """Outcomes of ``work``'s tiles, one per tile and question, in micro-batches of about the
    sizer's current size (counted in tile-question pairs, in whole tiles so that all the questions
    of a tile share its SAM encoding).

    The reader keeps the next batch (and ``prefetch`` tiles more) ready while the models work.
    Tiles without data or that cannot be read cost no model call. Setting ``stop`` ends the
    iteration before the next batch; the tiles not yielded are not done.
    """
    items = read_tiles(work.raster, work.tiles, limits=work.limits)
    prefetcher = Prefetcher(items, prefetch + sizer.size) if prefetch > 0 else None
    batch: list[ReadTile] = []
    try:
        for item in prefetcher if prefetcher is not None else items:
            if item.error or item.tile is None or not item.tile.has_data:
                yield from _unread(item, work.asks)
                continue
            batch.append(item)
            if len(batch) * len(work.asks) >= sizer.size:
                if stop is not None and stop.is_set():
                    return
                yield from _infer(engine, work, batch, sizer)
                batch = []
        if batch and not (stop is not None and stop.is_set()):
            yield from _infer(engine, work, batch, sizer)
    finally:
        if prefetcher is not None:
            prefetcher.close()


def _unread(item: ReadTile, asks: tuple[Ask, ...]) -> Iterator[TileOutcome]:
    status, message = (
        (TileStatus.FAILED, item.error) if item.error else (TileStatus.NO_DATA, "the tile holds only nodata pixels")
    )
    for ask in asks:  # the read's time is counted once, with the first question
        timings = dict(item.timer.seconds) if ask is asks[0] else {}
        yield TileOutcome(item.grid_tile, status, message, timings=timings, ask=ask)


def _infer(engine: BatchEngine, work: RasterTiles, batch: list[ReadTile], sizer: BatchSizer) -> Iterator[TileOutcome]:
    def infer(pairs: list[tuple[ReadTile, Ask]]) -> list[Inference]:
        tiles = [i.tile for i, _ in pairs if i.tile is not None]  # all: only tiles read are batched
        questions = [ask.question for _, ask in pairs]
        return engine.infer_batch(tiles, questions, views=[i.view for i, _ in pairs])

    pairs = [(item, ask) for item in batch for ask in work.asks]  # one tile object per tile: encoded once
    for outcome in push(pairs, infer, sizer):
        (item, ask), inference = outcome.item, outcome.result
        read_s = dict(item.timer.seconds) if ask is work.asks[0] else {}  # the read counted once per tile
        if inference is None:
            log.warning("tile %d failed (%s): %s", item.grid_tile.tile_id, ask.label, outcome.message)
            yield TileOutcome(
                item.grid_tile, TileStatus.FAILED, outcome.message, outcome.seconds, timings=read_s, ask=ask
            )
            continue
        timer = StageTimer()
        timer.merge(read_s)
        timer.merge(inference.timings_s)
        with timer.stage("vectorize"):
            pieces, scores = core_pieces(item.grid_tile, inference, min_score=work.min_score)
        yield TileOutcome(
            item.grid_tile,
            TileStatus.from_result(inference.status),
            inference.message,
            outcome.seconds + sum(read_s.values()),
            inference.instances,
            inference.reasoning,
            inference.raw_answer,
            pieces,
            dict(timer.seconds),
            scores,
            ask,
        )


def core_pieces(grid_tile: GridTile, inference: Inference, *, min_score: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The polygons of the tile's core in whole-pixel coordinates of the raster, and the score of
    the instance that produced each (instances scored below ``min_score`` left out)."""
    window, core = grid_tile.window, grid_tile.core
    row0, col0 = int(core.row_off - window.row_off), int(core.col_off - window.col_off)
    rows, cols = slice(row0, row0 + int(core.height)), slice(col0, col0 + int(core.width))
    mask, masks = scored_mask(inference, min_score)
    core_mask = mask[rows, cols]
    origin = (int(core.col_off), int(core.row_off))
    pieces = pixel_polygons(core_mask, origin_px=origin)
    core_masks = masks[:, rows, cols] if masks is not None else None
    owners = polygon_owners(pieces, core_masks, core_mask.shape, origin_px=origin)
    return pieces, owner_scores(owners, [i.score for i in inference.instances])
