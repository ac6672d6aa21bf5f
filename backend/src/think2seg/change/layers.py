"""The change GeoPackage: ``appeared``, ``disappeared``, ``persisted``, ``before_segments``,
``after_segments`` (polygons in BEFORE's CRS) and ``runs`` (a plain table).

Every change polygon carries the run (``run_id``, ``question``, ``model``, ``segmenter``,
``created_at``), both rasters (``before_source``, ``after_source``) and their dates (``before_date``,
``after_date``, YYYY-MM-DD or empty), its own ``area_m2``, and the columns of the polygons it was cut
from, prefixed ``before_`` / ``after_`` (``before_segment_id`` is the ``segment_id`` of its row in
``before_segments``). ``runs`` has one row per date and tile with the models' reasoning and raw
answers, the grid, the resampling and the options. The file appears whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from pyogrio.errors import DataLayerError, DataSourceError

from think2seg._version import __version__
from think2seg.change.align import Alignment
from think2seg.change.compare import Changes
from think2seg.change.dates import AcquiredDate
from think2seg.change.segment import DateSegments
from think2seg.errors import OutputError
from think2seg.output.atomic import atomic_output
from think2seg.output.gpkg import write_layer

STAMP_COLUMNS = ("run_id", "question", "status", "model", "segmenter", "source", "created_at", "date")
"""Columns of a date's segments that describe the run, not the polygon: not carried into change pieces."""


@dataclass(frozen=True)
class ChangeRun:
    """What every feature of a change run says about it."""

    run_id: str
    question: str
    model: str
    segmenter: str
    created_at: datetime
    sources: tuple[Path, Path]
    dates: tuple[AcquiredDate, AcquiredDate]

    def columns(self, count: int) -> dict[str, pd.Series]:
        texts = {
            "run_id": self.run_id,
            "question": self.question,
            "model": self.model,
            "segmenter": self.segmenter,
            "before_source": str(self.sources[0]),
            "after_source": str(self.sources[1]),
            "before_date": self.dates[0].value,
            "after_date": self.dates[1].value,
        }
        columns = {name: pd.Series([value] * count, dtype="object") for name, value in texts.items()}
        columns["created_at"] = pd.Series([pd.Timestamp(self.created_at)] * count, dtype="datetime64[ms, UTC]")
        return columns


def date_segments(dated: DateSegments, run: ChangeRun, index: int, crs: Any) -> gpd.GeoDataFrame:
    """A date's segments as written: a ``segment_id`` (1, 2, ...) first, ``source`` the raster the
    user gave (not the VRT read for AFTER), its ``date``; every other column as the run wrote it."""
    frame = dated.segments.reset_index(drop=True)
    data = frame.drop(columns=[frame.geometry.name])
    data.insert(0, "segment_id", pd.Series(np.arange(1, len(frame) + 1), dtype="int64"))
    data["source"] = pd.Series([str(run.sources[index])] * len(frame), dtype="object")
    data["date"] = pd.Series([run.dates[index].value] * len(frame), dtype="object")
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(list(frame.geometry.to_numpy()), crs=crs))


def carried(segments: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The columns of a date's segments that change pieces carry: all but the run's stamp."""
    return segments.drop(columns=[c for c in STAMP_COLUMNS if c in segments.columns])


def change_layer(pieces: gpd.GeoDataFrame, run: ChangeRun) -> gpd.GeoDataFrame:
    """A change layer as written: the run's columns, then ``area_m2`` and the carried columns."""
    columns: dict[str, Any] = dict(run.columns(len(pieces)))
    for name in pieces.columns:
        if name != pieces.geometry.name:
            columns[name] = pieces[name].reset_index(drop=True)
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(list(pieces.geometry.to_numpy()), crs=pieces.crs))


def runs_table(
    dated: tuple[DateSegments, DateSegments], run: ChangeRun, alignment: Alignment, options: dict[str, Any]
) -> pd.DataFrame:
    """One row per date and tile: the run, the date, the tile's answer, the grid and ``options``."""
    rows: list[dict[str, Any]] = []
    for index, date in enumerate(dated):
        shared: dict[str, Any] = {
            "run_id": run.run_id,
            "kind": "change",
            "question": run.question,
            "model": run.model,
            "segmenter": run.segmenter,
            "role": date.role,
            "source": str(run.sources[index]),
            "date": run.dates[index].value,
            "date_origin": run.dates[index].origin,
            "notes": " | ".join(date.notes),
            "think2seg_version": __version__,
        }
        for tile in date.tiles.to_dict("records"):
            rows.append({**shared, **{str(k): v for k, v in tile.items()}, **alignment.describe(), **options})
    frame = pd.DataFrame(rows)
    frame["created_at"] = pd.Series([pd.Timestamp(run.created_at)] * len(frame), dtype="datetime64[ms, UTC]")
    return frame


def write_change(
    output: Path,
    *,
    overwrite: bool,
    changes: Changes,
    segments: tuple[gpd.GeoDataFrame, gpd.GeoDataFrame],
    runs: pd.DataFrame,
) -> None:
    """Write every layer to ``output`` through :func:`~think2seg.output.atomic.atomic_output`."""
    layers = {**changes.layers(), "before_segments": segments[0], "after_segments": segments[1]}
    with atomic_output(output, overwrite=overwrite) as temporary:
        try:
            for name, frame in layers.items():
                write_layer(frame, temporary, layer=name, geometry_type="Polygon")
            write_layer(runs, temporary, layer="runs")
        except (DataSourceError, DataLayerError, OSError) as exc:
            raise OutputError(f"cannot write {output}: {exc}") from exc
