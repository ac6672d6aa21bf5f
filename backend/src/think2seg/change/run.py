"""Change between two dates: the same question about BEFORE and AFTER, and what differs.

    BEFORE, AFTER ─▶ align (common extent on BEFORE's grid) ─▶ AFTER resampled onto it (warped VRT)
      ─▶ each date's polygons: one window each (engine), or tile by tile (two batch runs)
      ─▶ overlay: appeared / disappeared / persisted ─▶ one GeoPackage, whole or not at all

Everything is checked before any model loads: the question, the output path, the options, and both
rasters (present, readable, georeferenced, overlapping). Tiled (``--tile-size-px``), the two batch runs
live in a work folder beside the output (``OUT.change-work``: ``before.gpkg``, ``after.gpkg`` and
the AFTER VRT); it is removed once the output is written and kept when the run stops, so that
``resume`` continues it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import geopandas as gpd

from think2seg.batch.options import BatchOptions, ModelSpec
from think2seg.change.align import (
    DEFAULT_RESAMPLING,
    Alignment,
    align,
    check_resampling,
    write_after_vrt,
)
from think2seg.change.compare import MIN_CHANGE_M2, SLIVER_PX, ChangeFilter, Changes, compare
from think2seg.change.dates import AcquiredDate, acquired_date, parse_date
from think2seg.change.layers import ChangeRun, carried, change_layer, date_segments, runs_table, write_change
from think2seg.change.segment import DateSegments, read_window_tiles, segment_tiles, segment_window
from think2seg.engine import Engine
from think2seg.errors import InputError
from think2seg.geo.read import check_bounds
from think2seg.inference import VectorArgs
from think2seg.options import MAX_SIDE_PX, TILE_SIZE_PX
from think2seg.output.atomic import check_output_path
from think2seg.think2seg_rs.prompt import validate_question

log = logging.getLogger(__name__)

AFTER_VRT = "after_on_before_grid.vrt"


@dataclass(frozen=True)
class ChangeOptions:
    """Options of :func:`run_change` (the CLI's flags).

    ``batch`` holds the options the two dates share with ``think2seg batch``: how masks become
    polygons (``simplify_px``, ``min_area_m2``...: used in both modes), and with ``tiled`` the
    tiling and the run policy (``tile_size_px``, ``overlap_px``, ``batch_size``, ``prefetch``,
    ``resume``, ``retry_failed``); ``batch.overwrite`` also replaces the output. Without ``tiled``
    each date is read as one window, decimated beyond ``max_side_px``. Dates are YYYY-MM-DD and win
    over the rasters' metadata. ``bounds`` (minx, miny, maxx, maxy in BEFORE's CRS) limits the run to
    the part of the common extent inside them. Units and limits: :mod:`think2seg.options`,
    :mod:`think2seg.change.compare`.
    """

    resampling: str = DEFAULT_RESAMPLING
    min_change_m2: float = MIN_CHANGE_M2.default
    sliver_px: float = SLIVER_PX.default
    before_date: str | None = None
    after_date: str | None = None
    tiled: bool = False
    max_side_px: int = MAX_SIDE_PX.default
    bounds: tuple[float, float, float, float] | None = None
    batch: BatchOptions = BatchOptions()  # frozen dataclass, safe as a default

    def __post_init__(self) -> None:
        check_resampling(self.resampling)
        if self.bounds is not None:
            object.__setattr__(self, "bounds", check_bounds(self.bounds))
        for option in (MIN_CHANGE_M2, SLIVER_PX, MAX_SIDE_PX):
            object.__setattr__(self, option.name, option.check(getattr(self, option.name)))
        if not self.tiled and (self.batch.resume or self.batch.retry_failed):
            raise InputError("resuming continues a tiled change run: give the same --tile-size-px as before")
        for name in ("before_date", "after_date"):
            value = getattr(self, name)
            object.__setattr__(self, name, parse_date(value) if value else None)

    @classmethod
    def named_like(cls, source: object, **given: Any) -> ChangeOptions:
        """The options ``source`` (the CLI's arguments) holds under the same names, then ``given``;
        ``tile_size_px`` None (or absent) means one window per date."""
        tile_size_px = getattr(source, "tile_size_px", None)
        sizes = {"tile_size_px": TILE_SIZE_PX.default if tile_size_px is None else tile_size_px}
        found: dict[str, Any] = {f.name: getattr(source, f.name) for f in fields(cls) if hasattr(source, f.name)}
        found.update(tiled=tile_size_px is not None, batch=BatchOptions.named_like(source, **sizes))
        return cls(**{**found, **given})

    @property
    def overwrite(self) -> bool:
        return self.batch.overwrite

    def vector(self) -> VectorArgs:
        """How both dates' masks become polygons (the same options as ``segment`` and ``batch``)."""
        return cast(VectorArgs, {name: getattr(self.batch, name) for name in VectorArgs.__annotations__})

    def recorded(self) -> dict[str, Any]:
        """The options that shape the result, as the ``runs`` table records them."""
        tiling = {"tile_size_px": self.batch.tile_size_px if self.tiled else 0, "overlap_px": self.batch.overlap_px}
        mine = {"min_change_m2": self.min_change_m2, "sliver_px": self.sliver_px, "max_side_px": self.max_side_px}
        return {**tiling, **mine, **self.vector()}


@dataclass(frozen=True)
class LayerFigures:
    polygons: int
    area_m2: float


@dataclass(frozen=True)
class ChangeSummary:
    """What a change run wrote: per layer (the three change layers and both dates' segments) its
    polygon count and total area, the grid (BEFORE's CRS, size in pixels) and how AFTER was put on it."""

    output: Path
    crs: str
    layers: dict[str, LayerFigures]
    dates: tuple[AcquiredDate, AcquiredDate]
    grid_px: tuple[int, int]
    resampling: str
    same_grid: bool
    tiles: tuple[int, int]
    notes: tuple[str, ...] = ()
    wall_s: float = 0.0


def work_folder(output: Path) -> Path:
    """Where a tiled change run keeps its batch runs: ``OUT.change-work`` beside ``OUT.gpkg``."""
    return output.with_name(output.stem + ".change-work")


def run_change(
    before: str | os.PathLike[str],
    after: str | os.PathLike[str],
    question: str,
    output: str | os.PathLike[str],
    *,
    models: ModelSpec | Engine,
    options: ChangeOptions = ChangeOptions(),  # frozen dataclass, safe as a default
    progress: bool = False,
) -> ChangeSummary:
    """Ask ``question`` about both rasters over their common extent and write what changed to ``output``.

    AFTER is resampled onto BEFORE's grid (``options.resampling``); every layer is in BEFORE's CRS.
    ``models`` is a :class:`ModelSpec` (loaded after every check) or a loaded :class:`Engine`.
    Raises :class:`~think2seg.errors.InputError` (and its kinds) for bad input, before any model
    loads, and :class:`~think2seg.errors.ModelError` when a date's answer could not be read (nothing
    is written then: a missing answer would show every object of the other date as changed).
    """
    started = time.perf_counter()
    question = validate_question(question)
    target = check_output_path(output, overwrite=options.overwrite, suffixes=(".gpkg",))
    alignment = align(before, after, resampling=options.resampling, bounds=options.bounds)
    dates = (
        acquired_date(alignment.before.path, given=options.before_date),
        acquired_date(alignment.after.path, given=options.after_date),
    )
    if dates[0].value and dates[1].value and dates[0].value > dates[1].value:
        log.warning("BEFORE is dated %s, after AFTER (%s): check the order of the rasters", *(d.value for d in dates))
    engine, dated = _segment(alignment, question, models, options, target, progress)
    run = ChangeRun(
        uuid.uuid4().hex,
        question,
        engine.prompter.name,
        engine.segmenter.name,
        datetime.now(timezone.utc),
        (alignment.before.path, alignment.after.path),
        dates,
    )
    written = _write(target, dated, run, alignment, options)
    if options.tiled:
        shutil.rmtree(work_folder(target), ignore_errors=True)  # the output holds what the work was for
    figures = {name: LayerFigures(len(f), float(f["area_m2"].sum()) if len(f) else 0.0) for name, f in written.items()}
    tiles = (len(dated[0].tiles), len(dated[1].tiles))
    notes = tuple(dict.fromkeys(dated[0].notes + dated[1].notes))
    return ChangeSummary(
        target,
        alignment.describe()["grid_crs"],
        figures,
        dates,
        (alignment.width, alignment.height),
        alignment.resampling,
        alignment.same_grid,
        tiles,
        notes,
        time.perf_counter() - started,
    )


def _segment(
    alignment: Alignment,
    question: str,
    models: ModelSpec | Engine,
    options: ChangeOptions,
    output: Path,
    progress: bool,
) -> tuple[Engine, tuple[DateSegments, DateSegments]]:
    """Both dates' segments: in one window each, or (``tiled``) as two batch runs."""
    if not options.tiled:
        with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as folder:
            vrt = write_after_vrt(alignment, Path(folder) / AFTER_VRT)
            tiles = read_window_tiles(alignment, vrt, max_side_px=options.max_side_px)
            engine = _loaded(models)
            return engine, segment_window(engine, tiles, question, vector=options.vector())
    work = work_folder(output)
    work.mkdir(exist_ok=True)
    vrt = write_after_vrt(alignment, work / AFTER_VRT)
    engine = _loaded(models)
    return engine, segment_tiles(engine, alignment, vrt, question, work=work, options=options.batch, progress=progress)


def _loaded(models: ModelSpec | Engine) -> Engine:
    if isinstance(models, ModelSpec):
        log.info("loading %s and %s (device %s)", models.lvlm, models.segmenter, models.device)
        return models.load()
    return models


def _write(
    output: Path, dated: tuple[DateSegments, DateSegments], run: ChangeRun, alignment: Alignment, options: ChangeOptions
) -> dict[str, gpd.GeoDataFrame]:
    """Compare the dates and write every layer; returns the polygon layers as written."""
    crs = alignment.crs.to_wkt()
    segments = (date_segments(dated[0], run, 0, crs), date_segments(dated[1], run, 1, crs))
    filters = ChangeFilter(alignment.crs, alignment.pixel_size, options.min_change_m2, options.sliver_px)
    found = compare(carried(segments[0]), carried(segments[1]), footprint=alignment.footprint, filters=filters)
    changes = Changes(*(change_layer(frame, run) for frame in found.layers().values()))
    runs = runs_table(dated, run, alignment, options.recorded())
    write_change(output, overwrite=options.overwrite, changes=changes, segments=segments, runs=runs)
    return {**changes.layers(), "before_segments": segments[0], "after_segments": segments[1]}
