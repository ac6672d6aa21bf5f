"""Run one question over every tile of a raster: plan, read ahead, infer, record, stitch.

    grid ─▶ (reader thread) read + 840 view ─▶ engine.infer_batch ─▶ core pieces ─▶ GeoPackage
                                                       └──────── per tile ────────┘
    finished tiles ─▶ stitch seams ─▶ segments

Memory stays flat in the raster's size: tiles are read one window at a time, results go to the
GeoPackage as tiles finish, and stitching keeps only the pieces that touch a seam.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import shapely
from rasterio.windows import Window
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry
from tqdm import tqdm

from think2seg.batch.finalize import FinalStats, Finishing, finalize
from think2seg.batch.grid import GridTile, TileGrid
from think2seg.batch.options import BatchEngine, BatchOptions, BatchProgress, BatchSummary, ModelSpec
from think2seg.batch.params import BatchParams, raster_fingerprint
from think2seg.batch.region import aoi_fingerprint, batch_region, load_aoi
from think2seg.batch.store import BatchStore, TileRecord
from think2seg.batch.tiles import Prefetcher, ReadTile, read_tiles
from think2seg.engine import Inference
from think2seg.errors import Cancelled
from think2seg.geo.read import RasterSource
from think2seg.geo.vectorize import georeference, pixel_polygons
from think2seg.options import check_min_area
from think2seg.output.frames import RunStamp
from think2seg.runs.microbatch import BatchSizer
from think2seg.runs.push import push
from think2seg.runs.states import RETRY_STATUSES, TileStatus
from think2seg.think2seg_rs.prompt import validate_question
from think2seg.timing import StageTimer

log = logging.getLogger(__name__)


def run_batch(
    raster: str | os.PathLike[str],
    question: str,
    output: str | os.PathLike[str],
    *,
    models: ModelSpec | BatchEngine,
    options: BatchOptions = BatchOptions(),  # frozen dataclass, safe as a default
    progress: bool = False,
    on_progress: Callable[[BatchProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> BatchSummary:
    """Segment ``question`` over the whole raster (or its bounds/AOI) into the GeoPackage ``output``.

    ``models`` is a :class:`ModelSpec` (loaded only if unfinished tiles remain) or an engine: anything with
    ``infer_batch`` and ``prompter``/``segmenter`` names, like :class:`Engine`. ``progress`` shows
    a progress bar; ``on_progress`` is called after every tile. Setting ``stop`` ends the run
    between tiles with :class:`Cancelled`, leaving a resumable output. Returns the run's summary;
    raises only for bad input (a tile's failure is recorded instead).
    """
    started = time.perf_counter()
    question = validate_question(question)
    with RasterSource(raster, pixel_coords=options.pixel_coords) as source:
        check_min_area(options.min_area_m2, source.crs)
        aoi = load_aoi(options.aoi, source.crs) if options.aoi else None
        region = batch_region(source, bounds=options.bounds, aoi=aoi)
        grid = TileGrid(region, options.tile_size_px, options.overlap_px)
        params = _params(source, question, region, aoi, models, options)
        stamp = RunStamp(
            uuid.uuid4().hex, question, params.model, params.segmenter, params.source, datetime.now(timezone.utc)
        )
        store = BatchStore.open(Path(output), params, stamp, source.crs, options.continuation)
        run = _Run(source, grid, aoi, store, question, models, options, on_progress, stop)
    run.execute(progress)
    finishing = Finishing(source.crs, source.transform, aoi, options.simplify_px, options.min_area_m2)
    with run.timer.stage("finalize"):
        stats = finalize(store.path, store.stamp, finishing)
    return run.summary(stats, time.perf_counter() - started)


def _params(
    source: RasterSource,
    question: str,
    region: Window,
    aoi: BaseGeometry | None,
    models: ModelSpec | BatchEngine,
    options: BatchOptions,
) -> BatchParams:
    model, segmenter, max_new_tokens = _model_names(models)
    limits = source.stretch_limits(region)
    return BatchParams(
        question=question,
        source=str(Path(source.path).resolve()),
        raster=raster_fingerprint(source),
        region=(int(region.col_off), int(region.row_off), int(region.width), int(region.height)),
        tile_size_px=options.tile_size_px,
        overlap_px=options.overlap_px,
        aoi=aoi_fingerprint(aoi),
        model=model,
        segmenter=segmenter,
        max_new_tokens=max_new_tokens,
        simplify_px=float(options.simplify_px),
        min_area_m2=float(options.min_area_m2),
        pixel_coords=options.pixel_coords,
        stretch={str(k): [float(lo), float(hi)] for k, (lo, hi) in limits.items()},
    )


def _model_names(models: ModelSpec | BatchEngine) -> tuple[str, str, int | None]:
    if isinstance(models, ModelSpec):
        return models.lvlm, models.segmenter, models.max_new_tokens
    return models.prompter.name, models.segmenter.name, getattr(models.prompter, "max_new_tokens", None)


class _Run:
    """The mutable state of one execution: plan, engine, counters and timings."""

    def __init__(
        self,
        source: RasterSource,
        grid: TileGrid,
        aoi: BaseGeometry | None,
        store: BatchStore,
        question: str,
        models: ModelSpec | BatchEngine,
        options: BatchOptions,
        on_progress: Callable[[BatchProgress], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.path, self.transform, self.pixel_coords = Path(source.path), source.transform, options.pixel_coords
        self.limits = {int(k): (lo, hi) for k, (lo, hi) in store.params.stretch.items()}
        self.grid, self.aoi, self.store, self.question = grid, aoi, store, question
        self.models, self.options = models, options  # a ModelSpec until _engine() loads it
        self.sizer = BatchSizer(1, requested=1)
        self.on_progress, self.stop = on_progress, stop
        self.finished_before = store.finished()
        self.counts: Counter[str] = Counter()
        self.timer = StageTimer()
        self.started = time.perf_counter()

    def execute(self, progress: bool) -> None:
        todo = [t for t in self.grid if t.tile_id not in self.finished_before]
        if todo:
            try:
                # before the progress bar, so loading messages do not break it
                self.sizer = BatchSizer.plan(self.options.batch_size, self._engine())
            except BaseException:
                self.store.discard()  # a new, empty output would only block the next attempt
                raise
        self.bar = tqdm(
            total=len(self.grid), initial=len(self.finished_before), unit="tile", disable=not progress, smoothing=0.1
        )
        try:
            inside = [t for t in todo if self._in_aoi(t) or self._record_outside(t)]
            for batch in self._batches(inside):
                if self.stop is not None and self.stop.is_set():
                    raise Cancelled(f"stopped after {len(self.finished_before) + sum(self.counts.values())} tiles")
                self._process(batch)
        finally:
            self.store.flush()
            self.bar.close()
            self.timer.add("write", self.store.write_s)

    def summary(self, stats: FinalStats, wall_s: float) -> BatchSummary:
        return BatchSummary(
            output=self.store.path,
            tiles_total=len(self.grid),
            tiles_before=len(self.finished_before),
            counts=dict(self.counts),
            previously_failed=sum(s.is_failure for s in self.finished_before.values()),
            polygons=stats.polygons,
            total_area_m2=stats.total_area_m2,
            seconds=dict(self.timer.seconds),
            wall_s=wall_s,
            georeferenced=not self.pixel_coords,
            batch_size=self.sizer.size,
            oom_splits=self.sizer.shrinks,
        )

    def _in_aoi(self, grid_tile: GridTile) -> bool:
        return self.aoi is None or bool(shapely.intersects(self._footprint(grid_tile.core), self.aoi))

    def _record_outside(self, grid_tile: GridTile) -> bool:
        footprint = self._footprint(grid_tile.window)
        self._record(TileRecord(grid_tile, footprint, TileStatus.OUTSIDE_AOI, "the tile misses the AOI"))
        return False

    def _batches(self, plan: list[GridTile]) -> Iterator[list[ReadTile]]:
        """Tiles with data, in groups of the current batch size; the others are recorded on the way.

        The reader keeps the next batch (and ``prefetch`` tiles more) ready while the models work.
        """
        items = read_tiles(self.path, plan, limits=self.limits, pixel_coords=self.pixel_coords)
        depth = self.options.prefetch + self.sizer.size
        prefetcher = Prefetcher(items, depth) if self.options.prefetch > 0 else None
        batch: list[ReadTile] = []
        try:
            for item in prefetcher if prefetcher is not None else items:
                self.timer.merge(item.timer.seconds)
                if not item.error and item.tile is not None and item.tile.has_data:
                    batch.append(item)
                    if len(batch) >= self.sizer.size:
                        yield batch
                        batch = []
                else:
                    self._record_unread(item)
            if batch:
                yield batch
        finally:
            if prefetcher is not None:
                prefetcher.close()

    def _record_unread(self, item: ReadTile) -> None:
        footprint = self._footprint(item.grid_tile.window)
        if item.error:
            record = TileRecord(item.grid_tile, footprint, TileStatus.FAILED, item.error)
        else:
            record = TileRecord(item.grid_tile, footprint, TileStatus.NO_DATA, "the tile holds only nodata pixels")
        self._record(record)

    def _process(self, batch: list[ReadTile]) -> None:
        engine = self._engine()

        def infer(items: list[ReadTile]) -> list[Inference]:
            tiles = [i.tile for i in items if i.tile is not None]  # all: _batches keeps the tiles read
            return engine.infer_batch(tiles, self.question, views=[i.view for i in items])

        for outcome in push(batch, infer, self.sizer):
            item, inference = outcome.item, outcome.result
            footprint = self._footprint(item.grid_tile.window)
            if inference is None:
                log.warning("tile %d failed: %s", item.grid_tile.tile_id, outcome.message)
                self._record(TileRecord(item.grid_tile, footprint, TileStatus.FAILED, outcome.message, outcome.seconds))
                continue
            with self.timer.stage("vectorize"):
                pieces, seams = self._core_pieces(item.grid_tile, inference)
            self.timer.merge(inference.timings_s)
            record = TileRecord(
                item.grid_tile,
                footprint,
                TileStatus.from_result(inference.status),
                inference.message,
                outcome.seconds + item.timer.total,
                inference.instances,
                inference.reasoning,
                inference.raw_answer,
                pieces,
                seams,
            )
            self._record(record)

    def _engine(self) -> BatchEngine:
        if isinstance(self.models, ModelSpec):
            with self.timer.stage("load"):
                self.models = self.models.load()
        return self.models

    def _core_pieces(self, grid_tile: GridTile, inference: Inference) -> tuple[np.ndarray, np.ndarray]:
        """The core's polygons in whole-pixel coordinates of the raster (georeferenced only when
        finalizing) and whether each touches a seam."""
        window, core = grid_tile.window, grid_tile.core
        row0, col0 = int(core.row_off - window.row_off), int(core.col_off - window.col_off)
        mask = inference.mask[row0 : row0 + int(core.height), col0 : col0 + int(core.width)]
        polygons = pixel_polygons(mask, origin_px=(int(core.col_off), int(core.row_off)))
        if not len(polygons):
            return polygons, np.array([], dtype=bool)
        minx, miny, maxx, maxy = shapely.bounds(polygons).T
        left, top, right, bottom = grid_tile.core_edges_with_neighbours(self.grid)
        seams = (
            (left & (minx <= core.col_off))
            | (top & (miny <= core.row_off))
            | (right & (maxx >= core.col_off + core.width))
            | (bottom & (maxy >= core.row_off + core.height))
        )
        return polygons, seams

    def _footprint(self, window: Window) -> Polygon:
        x0, y0 = int(window.col_off), int(window.row_off)
        square = box(x0, y0, x0 + int(window.width), y0 + int(window.height))
        return georeference(np.array([square], dtype=object), self.transform)[0]

    def _record(self, record: TileRecord) -> None:
        self.store.add(record)
        self.counts[record.status.value] += 1
        self.bar.update(1)
        failed = sum(self.counts[s] for s in RETRY_STATUSES)
        if failed:
            self.bar.set_postfix(failed=failed, refresh=False)
        if self.on_progress is not None:
            done = len(self.finished_before) + sum(self.counts.values())
            elapsed = time.perf_counter() - self.started
            self.on_progress(BatchProgress(done, len(self.grid), dict(self.counts), elapsed))
