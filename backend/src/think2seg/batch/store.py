"""The batch run's GeoPackage: parameters, per-tile status and results, written as tiles finish.

Layers: ``runs`` (the parameters, one row per raster), ``tiles`` (one row per finished tile:
footprint, status, time, instances, reasoning), ``tile_pieces`` (each tile's core polygons, the raw
material of ``segments``), ``prompt_boxes``, ``prompt_points`` and, once the run ends, ``segments``.
One file holds any number of rasters and questions: every row says its ``source`` raster, its
``class`` and its ``question``, and tile results are keyed by (source, class, question, tile_id).

``tile_pieces`` is in whole-pixel coordinates of its raster (x = column, y = row, y down; vertices
are pixel corners), so it has no CRS: pieces of one object from neighbouring tiles share their seam
edges exactly whatever the geotransform, and ``finalize`` simplifies them in pixels before it
georeferences them, as ``segment`` does. Every other layer is in the output CRS: the rasters' own,
or the ``--target-crs`` they were explicitly reprojected into (recorded in ``runs``). The ``runs``
parameters record the format (``pieces``, ``layout``); a file of an older format is not resumed.

Every row of a tile attempt carries the attempt's id, and the ``tiles`` row is written last, so a
run killed at any instant leaves a file whose ``tiles`` rows are exactly the finished tiles. Rows of
an attempt that never got its ``tiles`` row are deleted when the run is resumed.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
import warnings
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from pyogrio.errors import DataLayerError, DataSourceError
from rasterio.crs import CRS
from shapely.geometry import Polygon

from think2seg._version import __version__
from think2seg.batch.grid import GridTile
from think2seg.batch.layout import ADDED_COLUMNS, add_missing_columns, has_all_layers, remove_gpkg, sql_text
from think2seg.batch.params import BatchParams
from think2seg.batch.work import TileOutcome
from think2seg.classes import Ask
from think2seg.errors import InputError, OutputError
from think2seg.geo.reproject import Reprojection, crs_label
from think2seg.output.atomic import check_output_path
from think2seg.output.frames import RunStamp, boxes_frame, points_frame
from think2seg.output.gpkg import write_layer
from think2seg.runs.policy import Continuation, Opened, differences, open_run
from think2seg.runs.states import RETRY_STATUSES, TileStatus

STAGED_LAYERS = ("tile_pieces", "prompt_boxes", "prompt_points")
FLUSH_EVERY_S = 2.0
FLUSH_EVERY_TILES = 64


@dataclass
class RasterEntry:
    """One raster of the run: its parameters, the stamp its features carry, and its own CRS."""

    params: BatchParams
    stamp: RunStamp
    crs: CRS | None

    @property
    def source(self) -> str:
        return self.params.source

    @property
    def asks(self) -> tuple[Ask, ...]:
        return self.params.asks()

    def stamp_for(self, ask: Ask) -> RunStamp:
        """The stamp of the features ``ask`` finds (its question and class)."""
        return replace(self.stamp, question=ask.question, class_name=ask.class_name)


Finished = dict[tuple[str, str], dict[int, TileStatus]]
"""(class, question) -> tile_id -> status of the committed tile results of one raster."""


@dataclass
class TileRecord:
    """A tile attempt as stored: the worker's outcome (its core's polygons in whole-pixel
    coordinates), the raster it belongs to, its footprint in the raster's own CRS, and which
    pieces touch a seam."""

    source: str
    outcome: TileOutcome
    footprint: Polygon
    seams: np.ndarray = field(default_factory=lambda: np.array([], dtype=bool))
    attempt: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def tile(self) -> GridTile:
        return self.outcome.grid_tile

    @property
    def status(self) -> TileStatus:
        return self.outcome.status

    @property
    def pieces(self) -> np.ndarray:
        return self.outcome.pieces

    @property
    def ask(self) -> Ask:
        assert self.outcome.ask is not None  # noqa: S101 (every producer of outcomes sets it)
        return self.outcome.ask


class BatchStore:
    """Opens or creates the output GeoPackage and appends tile records in committed batches.

    ``crs`` is the output CRS; each entry's geometries are reprojected into it (only when a target
    CRS was asked for: otherwise every raster has this CRS).
    """

    def __init__(self, path: Path, entries: Sequence[RasterEntry], crs: CRS | None) -> None:
        self.path, self.crs = path, crs
        self.entries = {entry.source: entry for entry in entries}
        self._pending: list[TileRecord] = []
        self._last_flush = time.monotonic()
        self.write_s = 0.0
        self.created = False
        self._stored: dict[str, RasterEntry] = {}
        self._reprojections: dict[str, Reprojection] = {}
        self._field_order: dict[str, list[str]] = {}

    @classmethod
    def open(cls, path: Path, entries: Sequence[RasterEntry], crs: CRS | None, policy: Continuation) -> BatchStore:
        """Start a new run at ``path``, or continue the one there, as ``policy`` says
        (:func:`~think2seg.runs.policy.open_run`). A continued run keeps the stored stamps of its
        rasters and adds the rasters it did not hold yet."""
        path = check_output_path(path, overwrite=True, suffixes=(".gpkg",))
        store = cls(path, entries, crs)
        if open_run(store, entries[0].params.run_level(), policy) is Opened.CONTINUED:
            store._continue()
        return store

    def entry(self, source: str) -> RasterEntry:
        return self.entries[source]

    # The RunStore protocol (think2seg.runs.policy), used by open().
    @property
    def where(self) -> Path:
        return self.path

    def exists(self) -> bool:
        return self.path.exists()

    def stored_params(self, policy: Continuation) -> dict[str, Any]:
        """The stored run's shared parameters; a raster it holds must also have its own unchanged."""
        self._stored = _read_runs(self.path, policy)
        for source, entry in self.entries.items():
            self._check_raster(entry, self._stored.get(source), policy)
        return next(iter(self._stored.values())).params.run_level()

    def complete(self) -> bool:
        return has_all_layers(self.path)

    def remove(self) -> None:
        remove_gpkg(self.path)

    def create(self) -> None:
        self._write("runs", self._runs_frame(list(self.entries.values())), None)
        self._write("tiles", self._tiles_frame([]), "Polygon")
        self._write("tile_pieces", self._pieces_frame([]), "Polygon")
        self._write("prompt_boxes", self._boxes_frame([]), "Polygon")
        self._write("prompt_points", self._points_frame([]), "Point")
        self.created = True

    def clean(self, *, retry_failed: bool) -> None:
        """Delete rows of unfinished attempts (and, to retry them, the failed tiles of this run's rasters)."""
        with closing(sqlite3.connect(self.path)) as connection, connection:
            if retry_failed:
                statuses, sources = ",".join("?" * len(RETRY_STATUSES)), ",".join("?" * len(self.entries))
                connection.execute(
                    f"DELETE FROM tiles WHERE status IN ({statuses}) AND source IN ({sources})",
                    (*RETRY_STATUSES, *self.entries),
                )
            for layer in STAGED_LAYERS:
                connection.execute(f'DELETE FROM "{layer}" WHERE attempt NOT IN (SELECT attempt FROM tiles)')

    def _check_raster(self, entry: RasterEntry, stored: RasterEntry | None, policy: Continuation) -> None:
        """Refuse a raster whose stored parameters differ, or one that does not fit the stored CRS."""
        name = Path(entry.source).name
        if stored is not None:
            own = {k: v for k, v in entry.params.as_dict().items() if k not in entry.params.run_level()}
            changes = differences(stored.params.as_dict(), own)
            if changes:
                raise InputError(policy.differs_message(self.path, [f"{name}: {c}" for c in changes]))
            return
        first = next(iter(self._stored.values()))
        if entry.params.target_crs is None and first.crs != entry.crs:
            raise InputError(
                f"{name} is in {crs_label(entry.crs)} but {self.path} holds rasters in {crs_label(first.crs)}: "
                f"write it to another output, or {policy.terms.overwrite} and give --target-crs for them all"
            )

    def _continue(self) -> None:
        """Adopt the stored stamps, add the columns a file written before them lacks, and record
        the rasters the file did not hold yet."""
        add_missing_columns(self.path, ADDED_COLUMNS, question=next(iter(self._stored.values())).params.question)
        run_id = next(iter(self._stored.values())).stamp.run_id
        added = []
        for source, entry in self.entries.items():
            stored = self._stored.get(source)
            if stored is not None:
                entry.params, entry.stamp = stored.params, stored.stamp
            else:
                entry.stamp = replace(entry.stamp, run_id=run_id)
                added.append(entry)
        if added:
            self._write("runs", self._in_stored_order("runs", self._runs_frame(added)), None, append=True)

    def discard(self) -> None:
        """Delete a file this run created and that holds no finished tile (e.g. the models failed to load)."""
        if self.created and not self._pending and not any(self.finished(s) for s in self.entries):
            remove_gpkg(self.path)

    def finished(self, source: str) -> Finished:
        """(class, question) -> tile_id -> status of every tile result of ``source`` committed."""
        frame = pyogrio.read_dataframe(
            self.path,
            layer="tiles",
            columns=["class", "question", "tile_id", "status"],
            read_geometry=False,
            where=f"source = {sql_text(source)}",
        )
        done: Finished = {}
        for label, question, tile_id, status in frame[["class", "question", "tile_id", "status"]].itertuples(
            index=False
        ):
            done.setdefault((label, question), {})[int(tile_id)] = TileStatus(status)
        return done

    def add(self, record: TileRecord) -> None:
        """Queue a tile's result; written with others at most every few seconds or tiles."""
        self._pending.append(record)
        due = time.monotonic() - self._last_flush >= FLUSH_EVERY_S or len(self._pending) >= FLUSH_EVERY_TILES
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the queued records: staged layers first, the ``tiles`` rows (the commit) last."""
        if not self._pending:
            return
        start = time.perf_counter()
        records, self._pending = self._pending, []
        self._append("tile_pieces", self._pieces_frame(records), "Polygon")
        self._append("prompt_boxes", self._boxes_frame(records), "Polygon")
        self._append("prompt_points", self._points_frame(records), "Point")
        self._append("tiles", self._tiles_frame(records), "Polygon")
        self._last_flush = time.monotonic()
        self.write_s += time.perf_counter() - start

    def _write(self, layer: str, frame: pd.DataFrame, geometry_type: str | None, *, append: bool = False) -> None:
        try:
            with warnings.catch_warnings():
                # tile_pieces (and every layer of a --pixel-coords run) has no CRS on purpose
                warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
                write_layer(frame, self.path, layer=layer, geometry_type=geometry_type, append=append)
        except (DataSourceError, DataLayerError, OSError) as exc:
            raise OutputError(f"cannot write {self.path}: {exc}") from exc

    def _append(self, layer: str, frame: pd.DataFrame, geometry_type: str) -> None:
        if len(frame):
            self._write(layer, self._in_stored_order(layer, frame), geometry_type, append=True)

    def _in_stored_order(self, layer: str, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame``'s columns in the layer's field order: GDAL appends fields by position, and a
        run continued from an older file has its added columns last."""
        if layer not in self._field_order:
            self._field_order[layer] = [str(name) for name in pyogrio.read_info(self.path, layer=layer)["fields"]]
        order = self._field_order[layer]
        if list(frame.columns[: len(order)]) == order:
            return frame
        rest = [c for c in frame.columns if c not in order]
        return frame[[c for c in order if c in frame.columns] + rest]

    def _runs_frame(self, entries: Sequence[RasterEntry]) -> pd.DataFrame:
        rows = []
        for entry in entries:
            for ask in entry.asks:  # one row per raster and question, as in ``segment``
                row = entry.stamp_for(ask).row(status="batch")
                row.update(
                    kind="batch",
                    params=entry.params.to_json(),
                    raster_crs=crs_label(entry.crs),
                    output_crs=crs_label(self.crs),
                    think2seg_version=__version__,
                )
                rows.append(row)
        frame = pd.DataFrame(rows)
        frame["created_at"] = frame["created_at"].astype("datetime64[ms, UTC]")
        return frame

    def _reprojected(self, records: Sequence[TileRecord], geometries: list[Any]) -> list[Any]:
        """Each record's geometry in the output CRS (from its raster's CRS)."""
        return [
            self.reprojection(record.source)(np.array([geometry], dtype=object))[0]
            for record, geometry in zip(records, geometries)
        ]

    def reprojection(self, source: str) -> Reprojection:
        """From ``source``'s CRS to the output CRS (the identity without a target CRS)."""
        if source not in self._reprojections:
            self._reprojections[source] = Reprojection(self.entries[source].crs, self.crs)
        return self._reprojections[source]

    def _tiles_frame(self, records: Sequence[TileRecord]) -> gpd.GeoDataFrame:
        def ints(values: list[int]) -> pd.Series:
            return pd.Series(values, dtype="int32")

        def texts(values: list[str]) -> pd.Series:
            return pd.Series(values, dtype="object")

        windows = [(r.tile.window, r.tile.core) for r in records]
        columns = {
            "source": texts([r.source for r in records]),
            "class": texts([r.ask.label for r in records]),
            "question": texts([r.ask.question for r in records]),
            "tile_id": ints([r.tile.tile_id for r in records]),
            "row": ints([r.tile.row for r in records]),
            "col": ints([r.tile.col for r in records]),
            "col_off": ints([int(w.col_off) for w, _ in windows]),
            "row_off": ints([int(w.row_off) for w, _ in windows]),
            "width": ints([int(w.width) for w, _ in windows]),
            "height": ints([int(w.height) for w, _ in windows]),
            "core_col_off": ints([int(c.col_off) for _, c in windows]),
            "core_row_off": ints([int(c.row_off) for _, c in windows]),
            "core_width": ints([int(c.width) for _, c in windows]),
            "core_height": ints([int(c.height) for _, c in windows]),
            "status": texts([r.status.value for r in records]),
            "message": texts([r.outcome.message for r in records]),
            "instances": ints([len(r.outcome.instances) for r in records]),
            "pieces": ints([len(r.pieces) for r in records]),
            "seconds": pd.Series([r.outcome.seconds for r in records], dtype="float64"),
            "reasoning": texts([r.outcome.reasoning for r in records]),
            "raw_answer": texts([r.outcome.raw_answer for r in records]),
            "attempt": texts([r.attempt for r in records]),
            "finished_at": pd.Series(
                [pd.Timestamp(datetime.now(timezone.utc))] * len(records), dtype="datetime64[ms, UTC]"
            ),
        }
        footprints = self._reprojected(records, [r.footprint for r in records])
        return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(footprints, crs=self.crs))

    def _pieces_frame(self, records: Sequence[TileRecord]) -> gpd.GeoDataFrame:
        counts = [len(r.pieces) for r in records]
        columns = {
            "source": pd.Series(np.repeat([r.source for r in records], counts), dtype="object"),
            "class": pd.Series(np.repeat([r.ask.label for r in records], counts), dtype="object"),
            "question": pd.Series(np.repeat([r.ask.question for r in records], counts), dtype="object"),
            "tile_id": pd.Series(np.repeat([r.tile.tile_id for r in records], counts), dtype="int32"),
            "attempt": pd.Series(np.repeat([r.attempt for r in records], counts), dtype="object"),
            "seam": pd.Series(np.concatenate([r.seams for r in records] or [np.array([], dtype=bool)]), dtype="int32"),
            "score": pd.Series(np.concatenate([_scores(r) for r in records] or [np.array([])]), dtype="float64"),
        }
        geometry = np.concatenate([r.pieces for r in records] or [np.array([], dtype=object)])
        return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(geometry, crs=None))  # pixel coordinates

    def _boxes_frame(self, records: Sequence[TileRecord]) -> gpd.GeoDataFrame:
        frames = []
        for r in records:
            entry = self.entries[r.source]
            frame = boxes_frame(
                r.outcome.instances,
                entry.stamp_for(r.ask),
                status=r.status.value,
                reasoning=r.outcome.reasoning,
                crs=entry.crs,
                tags=_tags(r),
            )
            frames.append(self._in_output_crs(frame, entry))
        return _concat(
            frames or [boxes_frame((), self._any_stamp(), status="", reasoning="", crs=self.crs, tags=EMPTY_TAGS)]
        )

    def _points_frame(self, records: Sequence[TileRecord]) -> gpd.GeoDataFrame:
        frames = []
        for r in records:
            entry = self.entries[r.source]
            frame = points_frame(
                r.outcome.instances, entry.stamp_for(r.ask), status=r.status.value, crs=entry.crs, tags=_tags(r)
            )
            frames.append(self._in_output_crs(frame, entry))
        return _concat(frames or [points_frame((), self._any_stamp(), status="", crs=self.crs, tags=EMPTY_TAGS)])

    def _in_output_crs(self, frame: gpd.GeoDataFrame, entry: RasterEntry) -> gpd.GeoDataFrame:
        reprojection = self.reprojection(entry.source)
        if reprojection.identity or not len(frame):
            return frame
        geometry = reprojection(frame.geometry.to_numpy())
        return gpd.GeoDataFrame(frame.drop(columns="geometry"), geometry=gpd.GeoSeries(geometry, crs=self.crs))

    def _any_stamp(self) -> RunStamp:
        return next(iter(self.entries.values())).stamp


EMPTY_TAGS = {"tile_id": 0, "attempt": ""}


def _scores(record: TileRecord) -> np.ndarray:
    """The record's piece scores (NaN for each piece when the outcome has none, e.g. a failed tile)."""
    scores = record.outcome.scores
    return scores if len(scores) == len(record.pieces) else np.full(len(record.pieces), np.nan)


def _tags(record: TileRecord) -> dict[str, object]:
    return {"tile_id": record.tile.tile_id, "attempt": record.attempt}


def _concat(frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """One frame from several with the same columns (the first frame's types when all are empty)."""
    filled = [f for f in frames if len(f)]
    return pd.concat(filled, ignore_index=True) if len(filled) > 1 else (filled or frames)[0]


def _read_runs(path: Path, policy: Continuation) -> dict[str, RasterEntry]:
    """source -> stored entry for every raster of the run, or a clear error when ``path`` is no batch output."""
    try:
        runs = pyogrio.read_dataframe(path, layer="runs", read_geometry=False)
        all_params = [BatchParams.from_json(text) for text in runs["params"]]
        if not all_params:
            raise IndexError("no runs row")
    except (DataSourceError, DataLayerError, KeyError, IndexError, ValueError, TypeError) as exc:
        raise OutputError(policy.unreadable_message(path, "is not a think2seg batch output")) from exc
    problem = all_params[0].format_problem()  # e.g. map-coordinate tile pieces, which cannot be mixed with ours
    if problem:
        raise OutputError(policy.unreadable_message(path, problem))
    entries = {}
    for (_, row), params in zip(runs.iterrows(), all_params):
        if params.source in entries:  # one row per question of a raster: the first holds its stamp
            continue
        created = pd.Timestamp(row["created_at"]).to_pydatetime()
        stamp = RunStamp(row["run_id"], row["question"], row["model"], row["segmenter"], row["source"], created)
        crs_wkt = params.raster.get("crs")
        entries[params.source] = RasterEntry(params, stamp, CRS.from_wkt(crs_wkt) if crs_wkt else None)
    return entries
