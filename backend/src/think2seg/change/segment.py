"""Each date's polygons on the common grid: in one window (the engine), or tile by tile (two batch runs).

Both ways read BEFORE over the alignment's window and AFTER through its warped VRT, which covers
exactly that window, so the two dates share every pixel edge. The result of each date is a
:class:`DateSegments`: its ``segments`` (every column the engine or the batch run writes, so new
columns flow through) and one row per tile of what the models said.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
from pyogrio.errors import DataLayerError, DataSourceError

from think2seg.batch.options import BatchOptions, BatchSummary
from think2seg.batch.runner import run_batch
from think2seg.change.align import Alignment
from think2seg.engine import Engine
from think2seg.errors import EmptyWindowError, ModelError, OutputError
from think2seg.geo.read import RasterSource
from think2seg.inference import NO_DATA_MESSAGE, VectorArgs
from think2seg.output.gpkg import segments_frame
from think2seg.result import ResultStatus, SegmentationResult
from think2seg.tile import Tile

log = logging.getLogger(__name__)

ROLES = ("before", "after")
TILE_COLUMNS = ("tile_id", "status", "message", "reasoning", "raw_answer")
_FAILED = (ResultStatus.UNPARSEABLE.value, "failed")


@dataclass(frozen=True)
class DateSegments:
    """One date's result: ``segments`` in the grid's CRS, and ``tiles`` (one row per tile: id,
    status, message, reasoning, raw answer, and the tile's window in grid pixels)."""

    role: str
    segments: gpd.GeoDataFrame
    tiles: pd.DataFrame
    model: str
    segmenter: str
    notes: tuple[str, ...] = ()


def read_window_tiles(alignment: Alignment, after_vrt: Path, *, max_side_px: int) -> tuple[Tile, Tile]:
    """Both dates' pixels over the common window (read decimated alike beyond ``max_side_px``).

    Raises :class:`EmptyWindowError` when either holds no data there, before any model loads.
    """
    tiles = []
    for role, path, window in (("BEFORE", alignment.before.path, alignment.window), ("AFTER", after_vrt, None)):
        with RasterSource(path) as source:
            tile = source.read(window or source.full_window, max_side_px=max_side_px)
        if not tile.has_data:
            raise EmptyWindowError(f"{role} {path.name}: over the common extent {NO_DATA_MESSAGE}")
        tiles.append(tile)
    return tiles[0], tiles[1]


def segment_window(
    engine: Engine, tiles: tuple[Tile, Tile], question: str, *, vector: VectorArgs
) -> tuple[DateSegments, DateSegments]:
    """Both dates in one window each, through :meth:`Engine.segment_tile`."""
    results = [engine.segment_tile(tile, question, **vector) for tile in tiles]
    dated = tuple(_window_date(role, result) for role, result in zip(ROLES, results))
    _refuse_failures(dated, advice="try again, or another --lvlm")
    return dated[0], dated[1]


def _window_date(role: str, result: SegmentationResult) -> DateSegments:
    tile = result.tile
    row = {
        "tile_id": 0,
        "status": result.status.value,
        "message": result.message,
        "reasoning": result.reasoning,
        "raw_answer": result.raw_answer,
        "tile_col_off": 0,
        "tile_row_off": 0,
        "tile_width": int(tile.window.width) if tile.window else tile.width,
        "tile_height": int(tile.window.height) if tile.window else tile.height,
    }
    return DateSegments(role, segments_frame(result), pd.DataFrame([row]), result.model, result.segmenter, tile.notes)


def segment_tiles(
    engine: Engine,
    alignment: Alignment,
    after_vrt: Path,
    question: str,
    *,
    work: Path,
    options: BatchOptions,
    progress: bool = False,
) -> tuple[DateSegments, DateSegments]:
    """Both dates as two batch runs in ``work`` (``before.gpkg``, ``after.gpkg``; resumable), over
    the common window: BEFORE cut to it by bounds, AFTER through its VRT, which is that window."""
    runs = (
        (
            "before",
            alignment.before.path,
            {"bounds": alignment.bounds},
            (alignment.window.col_off, alignment.window.row_off),
        ),
        ("after", after_vrt, {"bounds": None}, (0, 0)),
    )
    dated = []
    for role, raster, region, offset in runs:
        log.info("%s: segmenting %s tile by tile into %s", role.upper(), raster.name, work / f"{role}.gpkg")
        run_options = replace(options, **region)
        summary = run_batch(
            raster, question, work / f"{role}.gpkg", models=engine, options=run_options, progress=progress
        )
        dated.append(_batch_date(role, summary, engine, offset))
    _refuse_failures(dated, advice="run the same command with --retry-failed to redo them")
    return dated[0], dated[1]


def _batch_date(role: str, summary: BatchSummary, engine: Engine, offset: tuple[float, float]) -> DateSegments:
    path = summary.output
    try:
        segments = pyogrio.read_dataframe(path, layer="segments")
        tiles = pyogrio.read_dataframe(path, layer="tiles", read_geometry=False)
    except (DataSourceError, DataLayerError) as exc:
        raise OutputError(f"cannot read the batch run {path} ({exc}): run again with --overwrite") from exc
    rows = tiles.loc[:, list(TILE_COLUMNS)].copy()
    rows["tile_col_off"] = tiles["col_off"].astype("int64") - int(offset[0])
    rows["tile_row_off"] = tiles["row_off"].astype("int64") - int(offset[1])
    rows["tile_width"], rows["tile_height"] = tiles["width"], tiles["height"]
    rows = rows.sort_values("tile_id", kind="stable").reset_index(drop=True)
    return DateSegments(role, segments, rows, engine.prompter.name, engine.segmenter.name)


def _refuse_failures(dated: tuple[DateSegments, ...] | list[DateSegments], *, advice: str) -> None:
    """A tile without a readable answer would show its objects as changed: refuse to compare then."""
    failed = [(d.role, d.tiles) for d in dated if d.tiles["status"].isin(_FAILED).any()]
    if not failed:
        return
    listed = "; ".join(
        f"{role.upper()} {int(tiles['status'].isin(_FAILED).sum())} of {len(tiles)} tile(s) ({_first_problem(tiles)})"
        for role, tiles in failed
    )
    raise ModelError(
        f"the models gave no usable answer for {listed}, so the change cannot be told there and nothing was "
        f"written: {advice}"
    )


def _first_problem(tiles: pd.DataFrame) -> str:
    row = tiles[tiles["status"].isin(_FAILED)].iloc[0]
    return f"{row['status']}: {row['message'] or row['raw_answer'][:80]}"
