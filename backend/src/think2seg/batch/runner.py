"""Run questions (one, or every question of several classes) over every tile of one or more rasters:
plan, infer, record, stitch.

    rasters ─▶ grids ─▶ segment_tiles (here, or on Ray workers) ─▶ outcomes ─▶ GeoPackage (this process only)
    finished tiles of each raster and question ─▶ stitch seams ─▶ segments

Each tile is read once and asked all the questions in one model batch (one SAM encoding); a result
is recorded per tile and question, so a resumed run redoes only the questions a tile still lacks.

Memory stays flat in the rasters' size: tiles are read one window at a time, results go to the
GeoPackage as tiles finish, and stitching keeps only the pieces that touch a seam. Every raster is
checked before any model loads; with ``options.workers`` the models run on Ray workers
(:mod:`think2seg.batch.workers`) and this process stays the only writer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry
from tqdm import tqdm

from think2seg.batch.finalize import FinalStats, Finishing, finalize
from think2seg.batch.grid import GridTile, TileGrid
from think2seg.batch.inputs import RasterRef, check_one_crs, check_rasters, raster_name, raster_ref
from think2seg.batch.options import BatchEngine, BatchOptions, BatchProgress, BatchSummary, ModelSpec
from think2seg.batch.overlaps import write_class_overlaps
from think2seg.batch.params import BatchParams, raster_fingerprint, stored_classes
from think2seg.batch.region import aoi_fingerprint, batch_region, load_aoi
from think2seg.batch.store import BatchStore, RasterEntry, TileRecord
from think2seg.batch.work import RasterTiles, TileOutcome, failed_tile, segment_tiles
from think2seg.batch.workers import WorkerPool, require_ray, worker_pool
from think2seg.classes import Ask, ClassQuestions, asks_of, classes_from_questions
from think2seg.errors import BoundsError, Cancelled, InputError
from think2seg.geo.read import RasterSource, RasterSpec
from think2seg.geo.reproject import crs_label
from think2seg.geo.vectorize import georeference
from think2seg.options import check_min_area
from think2seg.output.frames import RunStamp
from think2seg.runs.microbatch import BatchSizer
from think2seg.runs.states import RETRY_STATUSES, TileStatus
from think2seg.think2seg_rs.prompt import validate_question
from think2seg.timing import StageTimer

log = logging.getLogger(__name__)

Rasters = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def run_batch(
    rasters: Rasters,
    question: str | Sequence[ClassQuestions],
    output: str | os.PathLike[str],
    *,
    models: ModelSpec | BatchEngine,
    options: BatchOptions = BatchOptions(),  # frozen dataclass, safe as a default
    progress: bool = False,
    on_progress: Callable[[BatchProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> BatchSummary:
    """Segment ``question`` over the whole of each raster (or its bounds/AOI) into the GeoPackage ``output``.

    ``question`` is one question, or classes (:mod:`think2seg.classes`): every question of every
    class is asked of each tile in one pass, and every row says its ``class``.

    ``rasters`` is one path or several (see :func:`~think2seg.batch.inputs.expand_rasters` for
    globs and folders). ``models`` is a :class:`ModelSpec` (loaded only if unfinished tiles remain;
    required with ``options.workers``) or an engine: anything with ``infer_batch`` and
    ``prompter``/``segmenter`` names, like :class:`Engine`. ``progress`` shows a progress bar;
    ``on_progress`` is called after every tile. Setting ``stop`` ends the run between batches with
    :class:`Cancelled`, leaving a resumable output. Returns the run's summary; raises only for bad
    input (a tile's failure is recorded instead).
    """
    started = time.perf_counter()
    asks = _asks(question)
    paths = [raster_ref(rasters)] if isinstance(rasters, (str, os.PathLike)) else [raster_ref(r) for r in rasters]
    infos = check_rasters(  # every problem at once, before any model
        paths, pixel_coords=options.pixel_coords, resolution_m=options.resolution_m, stac_asset=options.stac_asset
    )
    out_crs = check_one_crs(infos, target_crs=options.target_crs)
    if options.workers:
        if not isinstance(models, ModelSpec):
            raise InputError("Ray workers load their own models: give a ModelSpec, not a loaded engine")
        require_ray()  # the missing extra is said before anything is written
    run_id = uuid.uuid4().hex
    plans, skipped = _plan_all(paths, asks, models, options, out_crs, run_id)
    store = BatchStore.open(Path(output), [p.entry for p in plans], out_crs, options.continuation)
    run = _Run(plans, store, models, options, on_progress, stop)
    run.execute(progress)
    with run.timer.stage("finalize"):
        stats = {
            (plan.source, ask): finalize(
                store.path, plan.entry.stamp_for(ask), plan.finishing(options, store), crs=out_crs
            )
            for plan in plans
            for ask in plan.entry.asks
        }
        overlaps = write_class_overlaps(store.path, [p.source for p in plans], crs=out_crs) if len(asks) > 1 else {}
    return run.summary(stats, skipped, time.perf_counter() - started, overlaps)


def _asks(question: str | Sequence[ClassQuestions]) -> tuple[Ask, ...]:
    """The questions of the run: one, or every question of the classes (checked before any work)."""
    if isinstance(question, str):
        return asks_of(classes_from_questions([validate_question(question)]))
    asks = asks_of(question)
    if not asks:
        raise InputError("give at least one question or class")
    repeated = [a.label for a, n in Counter(asks).items() if n > 1]
    if repeated:
        raise InputError(f"{repeated[0]!r} is asked twice: give each class and question once")
    return asks


@dataclass
class _Raster:
    """One raster of the run: where its tiles are, and how its results are georeferenced."""

    spec: RasterSpec
    transform: Affine
    crs: CRS | None
    grid: TileGrid
    aoi: BaseGeometry | None
    entry: RasterEntry

    @property
    def source(self) -> str:
        return self.entry.source

    def finishing(self, options: BatchOptions, store: BatchStore) -> Finishing:
        return Finishing(
            self.crs,
            self.transform,
            self.aoi,
            options.simplify_px,
            options.min_area_m2,
            store.reprojection(self.source),
            options.outline,
        )

    def footprint(self, window: Window) -> Polygon:
        """The window's outline in the raster's CRS."""
        x0, y0 = int(window.col_off), int(window.row_off)
        square = box(x0, y0, x0 + int(window.width), y0 + int(window.height))
        return georeference(np.array([square], dtype=object), self.transform)[0]

    def seams(self, grid_tile: GridTile, pieces: np.ndarray) -> np.ndarray:
        """Whether each core piece touches a core edge shared with a neighbouring tile."""
        if not len(pieces):
            return np.array([], dtype=bool)
        core = grid_tile.core
        minx, miny, maxx, maxy = shapely.bounds(pieces).T
        left, top, right, bottom = grid_tile.core_edges_with_neighbours(self.grid)
        return (
            (left & (minx <= core.col_off))
            | (top & (miny <= core.row_off))
            | (right & (maxx >= core.col_off + core.width))
            | (bottom & (maxy >= core.row_off + core.height))
        )


def _plan_all(
    paths: list[RasterRef],
    asks: tuple[Ask, ...],
    models: ModelSpec | BatchEngine,
    options: BatchOptions,
    out_crs: CRS | None,
    run_id: str,
) -> tuple[list[_Raster], list[str]]:
    """The plan of every raster; with several, one that the bounds or the AOI miss is skipped (named)."""
    plans, skipped, errors = [], [], []
    for path in paths:
        try:
            plans.append(_plan(path, asks, models, options, out_crs, run_id))
        except BoundsError as exc:
            if len(paths) == 1:
                raise
            skipped.append(f"{raster_name(path)}: {exc}")
            errors.append(exc)
    if not plans:
        raise BoundsError(f"the bounds or AOI miss every raster ({errors[0]})")
    return plans, skipped


def _plan(
    path: RasterRef,
    asks: tuple[Ask, ...],
    models: ModelSpec | BatchEngine,
    options: BatchOptions,
    out_crs: CRS | None,
    run_id: str,
) -> _Raster:
    b = options.bounds  # resolution_m is converted into map units at the centre of the bounds (else of the raster)
    at_xy = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) if b is not None and len(b) == 4 else None
    spec = RasterSpec(path, options.pixel_coords, options.resolution_m, options.stac_asset, at_xy)
    with spec.open() as source:
        check_min_area(options.min_area_m2, source.crs)
        aoi = load_aoi(options.aoi, source.crs) if options.aoi else None
        region = batch_region(source, bounds=options.bounds, aoi=aoi)
        grid = TileGrid(region, options.tile_size_px, options.overlap_px)
        params = _params(source, asks, region, aoi, models, options, out_crs)
        stamp = RunStamp(
            run_id, params.question, params.model, params.segmenter, params.source, datetime.now(timezone.utc)
        )
        return _Raster(spec, source.transform, source.crs, grid, aoi, RasterEntry(params, stamp, source.crs))


def _params(
    source: RasterSource,
    asks: tuple[Ask, ...],
    region: Window,
    aoi: BaseGeometry | None,
    models: ModelSpec | BatchEngine,
    options: BatchOptions,
    out_crs: CRS | None,
) -> BatchParams:
    model, segmenter, max_new_tokens = _model_names(models)
    limits = source.stretch_limits(region)
    return BatchParams(
        question=asks[0].question,
        classes=stored_classes(asks),
        source=str(source.path.resolve()) if source.location.is_local else source.location.label,
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
        min_score=float(options.min_score),
        outline=options.outline,
        pixel_coords=options.pixel_coords,
        stretch={str(k): [float(lo), float(hi)] for k, (lo, hi) in limits.items()},
        target_crs=crs_label(out_crs) if options.target_crs else None,
    )


def _model_names(models: ModelSpec | BatchEngine) -> tuple[str, str, int | None]:
    if isinstance(models, ModelSpec):
        return models.lvlm, models.segmenter, models.max_new_tokens
    return models.prompter.name, models.segmenter.name, getattr(models.prompter, "max_new_tokens", None)


class _Run:
    """The mutable state of one execution: plans, engine, counters and timings."""

    def __init__(
        self,
        rasters: list[_Raster],
        store: BatchStore,
        models: ModelSpec | BatchEngine,
        options: BatchOptions,
        on_progress: Callable[[BatchProgress], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.rasters = {r.source: r for r in rasters}
        self.store, self.models, self.options = store, models, options  # models: a ModelSpec until loaded
        self.sizer = BatchSizer(1, requested=1)
        self.on_progress, self.stop = on_progress, stop
        self.finished_before = {source: store.finished(source) for source in self.rasters}
        self.questions = len(rasters[0].entry.asks)
        self.total = sum(len(r.grid) for r in rasters) * self.questions  # tile-question pairs
        self.before = sum(len(d) for done in self.finished_before.values() for d in done.values())
        self.counts: Counter[str] = Counter()
        self.workers_alive, self.retries = 0, 0
        self.timer = StageTimer()
        self.started = time.perf_counter()

    def execute(self, progress: bool) -> None:
        works, outside = self._split()
        self.bar: tqdm | None = None
        try:
            with ExitStack() as stack:
                # the models or the workers first, so that their messages do not break the progress bar
                pool = self._start_workers(stack) if works and self.options.workers else None
                if works and pool is None:
                    self._load()
                self.bar = tqdm(
                    total=self.total,
                    initial=self.before,
                    unit="tile" if self.questions == 1 else "result",
                    disable=not progress,
                    smoothing=0.1,
                )
                for source, tile, asks in outside:
                    self._record_outside(source, tile, asks)
                if pool is not None:
                    report = pool.run(works, self.record, self._status, self.stop)
                    self.sizer = BatchSizer(report.batch_size, requested=report.batch_size)
                else:
                    self._in_process(works)
                self._check_stop()
        except BaseException:
            self.store.discard()  # a new output that holds no finished tile would only block the next attempt
            raise
        finally:
            self.store.flush()
            if self.bar is not None:
                self.bar.close()
            self.timer.add("write", self.store.write_s)

    def _split(self) -> tuple[list[RasterTiles], list[tuple[str, GridTile, tuple[Ask, ...]]]]:
        """The unfinished tiles: per raster and set of questions still to ask, those to segment; and
        those outside the AOI (with the questions they lack)."""
        works, outside = [], []
        for source, raster in self.rasters.items():
            done = self.finished_before[source]
            inside: dict[tuple[Ask, ...], list[GridTile]] = {}  # usually one set: every question
            for tile in raster.grid:
                missing = tuple(a for a in raster.entry.asks if tile.tile_id not in done.get(a.key, {}))
                if not missing:
                    continue
                if raster.aoi is None or shapely.intersects(raster.footprint(tile.core), raster.aoi):
                    inside.setdefault(missing, []).append(tile)
                else:
                    outside.append((source, tile, missing))
            limits = {int(k): (lo, hi) for k, (lo, hi) in raster.entry.params.stretch.items()}
            for asks, tiles in inside.items():
                options = self.options
                works.append(
                    RasterTiles(
                        source, raster.spec, asks, tuple(tiles), limits, options.pixel_coords, options.min_score
                    )
                )
        return works, outside

    def _load(self) -> None:
        if isinstance(self.models, ModelSpec):
            with self.timer.stage("load"):
                self.models = self.models.load()
        self.sizer = BatchSizer.plan(self.options.batch_size, self.models)

    def _in_process(self, works: list[RasterTiles]) -> None:
        for work in works:
            assert not isinstance(self.models, ModelSpec)  # noqa: S101 (loaded by execute)
            for outcome in segment_tiles(self.models, work, self.sizer, prefetch=self.options.prefetch, stop=self.stop):
                self.record(work.source, outcome)
            if self.stop is not None and self.stop.is_set():
                return

    def _start_workers(self, stack: ExitStack) -> WorkerPool:
        assert isinstance(self.models, ModelSpec)  # noqa: S101 (run_batch checked it)
        return stack.enter_context(worker_pool(self.models, self.options))

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Cancelled(f"stopped after {self.before + sum(self.counts.values())} tiles")

    def _status(self, alive: int, retries: int) -> None:
        """The workers' state, from :meth:`~think2seg.batch.workers.WorkerPool.run`."""
        self.workers_alive, self.retries = alive, retries
        if self.bar is not None:
            self._postfix()
            self.bar.refresh()

    def summary(
        self,
        stats: dict[tuple[str, Ask], FinalStats],
        skipped: list[str],
        wall_s: float,
        overlaps: dict[tuple[str, str], float],
    ) -> BatchSummary:
        by_class: Counter[str] = Counter()
        for (_source, ask), final in stats.items():
            by_class[ask.label] += final.polygons
        return BatchSummary(
            output=self.store.path,
            tiles_total=self.total,
            tiles_before=self.before,
            counts=dict(self.counts),
            previously_failed=sum(
                s.is_failure for done in self.finished_before.values() for d in done.values() for s in d.values()
            ),
            polygons=sum(s.polygons for s in stats.values()),
            total_area_m2=sum(s.total_area_m2 for s in stats.values()),
            seconds=dict(self.timer.seconds),
            wall_s=wall_s,
            georeferenced=not self.options.pixel_coords,
            batch_size=self.sizer.size,
            oom_splits=self.sizer.shrinks,
            rasters=len(self.rasters),
            skipped_rasters=tuple(skipped),
            workers=self.options.workers,
            retries=self.retries,
            output_crs=crs_label(self.store.crs),
            reprojected=self.options.target_crs is not None,
            questions=self.questions,
            class_overlaps=overlaps,
            class_polygons=dict(by_class) if self.questions > 1 else {},
        )

    def _record_outside(self, source: str, grid_tile: GridTile, asks: tuple[Ask, ...]) -> None:
        footprint = self.rasters[source].footprint(grid_tile.window)
        for outcome in failed_tile(grid_tile, asks, TileStatus.OUTSIDE_AOI, "the tile misses the AOI"):
            self._record(TileRecord(source, outcome, footprint))

    def record(self, source: str, outcome: TileOutcome) -> None:
        """Record a finished tile of ``source`` (from this process or a worker)."""
        raster = self.rasters[source]
        grid_tile = outcome.grid_tile
        self.timer.merge(outcome.timings)
        record = TileRecord(
            source, outcome, raster.footprint(grid_tile.window), raster.seams(grid_tile, outcome.pieces)
        )
        self._record(record)

    def _record(self, record: TileRecord) -> None:
        self.store.add(record)
        self.counts[record.status.value] += 1
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()
        if self.on_progress is not None:
            elapsed = time.perf_counter() - self.started
            done = self.before + sum(self.counts.values())
            figures = BatchProgress(
                done, self.total, dict(self.counts), elapsed, self.options.workers, self.workers_alive, self.retries
            )
            self.on_progress(figures)

    def _postfix(self) -> None:
        assert self.bar is not None  # noqa: S101
        figures: dict[str, object] = {}
        failed = sum(self.counts[s] for s in RETRY_STATUSES)
        if failed:
            figures["failed"] = failed
        if self.options.workers:
            figures["workers"] = f"{self.workers_alive}/{self.options.workers}"
            if self.retries:
                figures["retried"] = self.retries
        if figures:
            self.bar.set_postfix(figures, refresh=False)
