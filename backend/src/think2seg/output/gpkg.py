"""Write results to a GeoPackage: ``segments``, ``prompt_boxes``, ``prompt_points`` and ``runs``.

All layers are in the raster's CRS. Every feature carries the run's question, class, status,
model, segmenter, source raster and creation time; ``runs`` (a plain table, one row per question)
keeps the reasoning, the raw answer, the window and the timings. Several classes of one tile go
into one file, and where they overlap a ``class_overlaps`` layer measures it. The file is written
beside the target and renamed into place.

Every GeoPackage think2seg creates (here, and a batch run's) is made by :func:`write_layer`, as
GeoPackage 1.2.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError

from think2seg._version import __version__
from think2seg.errors import OutputError
from think2seg.geo.overlaps import class_overlaps
from think2seg.output.atomic import atomic_output
from think2seg.output.frames import RunStamp, boxes_frame, points_frame
from think2seg.result import SegmentationResult

LAYERS = ("segments", "prompt_boxes", "prompt_points", "runs")
LAYER_TYPES = {"segments": "Polygon", "prompt_boxes": "Polygon", "prompt_points": "Point", "class_overlaps": "Polygon"}
"""The geometry type each layer declares (``runs`` is a plain table)."""

# GDAL 3.7+ creates GeoPackage 1.4 by default, which QGIS 3.22 (GDAL 3.6) opens with the warning
# "v1.4.0, may only be partially supported"; 1.2 holds everything we write.
GPKG_DATASET_OPTIONS = {"VERSION": "1.2"}


def write_layer(
    frame: pd.DataFrame,
    path: Path,
    *,
    layer: str,
    geometry_type: str | None = None,
    append: bool = False,
    replace: bool = False,
) -> None:
    """Write ``frame`` as ``layer`` of the GeoPackage ``path``, creating the file (as GeoPackage 1.2)
    if it does not exist; ``append`` adds rows to the layer, ``replace`` replaces the whole layer.
    ``geometry_type`` (e.g. "Polygon"; None for a plain table) is what the layer declares."""
    pyogrio.write_dataframe(
        frame,
        path,
        layer=layer,
        driver="GPKG",
        geometry_type=geometry_type,
        append=append,
        dataset_options=GPKG_DATASET_OPTIONS,
        layer_options={"OVERWRITE": "YES"} if replace else None,
    )


def write_gpkg(
    result: SegmentationResult | Sequence[SegmentationResult], path: Path, *, overwrite: bool = False
) -> None:
    """Write ``result`` (or several, e.g. one per class) to the GeoPackage ``path`` (replaced only
    when ``overwrite``)."""
    write_gpkg_layers(result_layers(result), path, overwrite=overwrite)


def write_gpkg_layers(layers: dict[str, pd.DataFrame], path: Path, *, overwrite: bool = False) -> None:
    """Write the frames of :func:`result_layers` to the GeoPackage ``path``, whole or not at all."""
    with atomic_output(path, overwrite=overwrite) as temporary:
        try:
            _write_layers(layers, temporary)
        except (DataSourceError, DataLayerError, OSError) as exc:
            raise OutputError(f"cannot write {path}: {exc}") from exc


def result_layers(result: SegmentationResult | Sequence[SegmentationResult]) -> dict[str, pd.DataFrame]:
    """The output layers of one or several results of one tile: ``segments``, ``prompt_boxes``,
    ``prompt_points``, ``runs``, and ``class_overlaps`` when several classes overlap."""
    results = [result] if isinstance(result, SegmentationResult) else list(result)
    if not results:
        raise ValueError("no result to write")
    segments = _concat([segments_frame(r) for r in results])
    layers: dict[str, pd.DataFrame] = {
        "segments": segments,
        "prompt_boxes": _concat([_boxes(r) for r in results]),
        "prompt_points": _concat([_points(r) for r in results]),
        "runs": pd.concat([runs_frame(r) for r in results], ignore_index=True),
    }
    overlaps = _overlaps(results, segments)
    if overlaps is not None:
        layers["class_overlaps"] = overlaps
    return layers


def class_overlaps_of(results: Sequence[SegmentationResult]) -> gpd.GeoDataFrame | None:
    """Where the results' classes overlap (see :func:`~think2seg.geo.overlaps.class_overlaps`);
    None when they are all one class."""
    return _overlaps(results, None)


def _overlaps(results: Sequence[SegmentationResult], segments: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame | None:
    if len({r.class_name or r.question for r in results}) < 2:
        return None
    if segments is None:
        segments = _concat([segments_frame(r) for r in results])
    return class_overlaps(segments, crs=results[0].crs)


def _boxes(result: SegmentationResult) -> gpd.GeoDataFrame:
    status = result.status.value
    return boxes_frame(result.instances, stamp(result), status=status, reasoning=result.reasoning, crs=result.crs)


def _points(result: SegmentationResult) -> gpd.GeoDataFrame:
    return points_frame(result.instances, stamp(result), status=result.status.value, crs=result.crs)


def _concat(frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    filled = [f for f in frames if len(f)]
    if len(filled) <= 1:
        return (filled or frames)[0]
    return gpd.GeoDataFrame(pd.concat(filled, ignore_index=True), crs=frames[0].crs)


def _write_layers(layers: dict[str, pd.DataFrame], path: Path) -> None:
    with warnings.catch_warnings(), _sqlite_unsynchronized():
        # Pixel-coordinate results have no CRS on purpose; the runs table says so.
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        for name, frame in layers.items():
            write_layer(frame, path, layer=name, geometry_type=LAYER_TYPES.get(name))


@contextmanager
def _sqlite_unsynchronized() -> Iterator[None]:
    """Skip SQLite's fsync after each layer: the file is new and atomic_output syncs it once."""
    previous = pyogrio.get_gdal_config_option(_SYNC_OPTION)
    pyogrio.set_gdal_config_options({_SYNC_OPTION: "OFF"})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({_SYNC_OPTION: previous})


_SYNC_OPTION = "OGR_SQLITE_SYNCHRONOUS"


def stamp(result: SegmentationResult) -> RunStamp:
    return RunStamp(
        result.run_id,
        result.question,
        result.model,
        result.segmenter,
        result.tile.source,
        result.created_at,
        result.class_name,
    )


def segments_frame(result: SegmentationResult) -> gpd.GeoDataFrame:
    polygons = result.polygons
    columns = stamp(result).columns(len(polygons), status=result.status.value)
    columns["area_m2"] = polygons["area_m2"].to_numpy()
    columns["instance"] = polygons["instance"].to_numpy()
    columns["score"] = polygons["score"].to_numpy()
    return gpd.GeoDataFrame(columns, geometry=polygons.geometry.to_numpy(), crs=result.crs)


def runs_frame(result: SegmentationResult) -> pd.DataFrame:
    tile = result.tile
    window = tile.window
    row = stamp(result).row(status=result.status.value)
    row.update(
        message=result.message,
        reasoning=result.reasoning,
        raw_answer=result.raw_answer,
        crs=tile.crs.to_string() if tile.crs else "",
        crs_wkt=tile.crs.to_wkt() if tile.crs else "",
        window_col_off=int(window.col_off) if window else 0,
        window_row_off=int(window.row_off) if window else 0,
        window_width=int(window.width) if window else tile.width,
        window_height=int(window.height) if window else tile.height,
        tile_width=tile.width,
        tile_height=tile.height,
        scale_x=tile.scale_xy[0],
        scale_y=tile.scale_xy[1],
        notes=" | ".join(tile.notes),
        polygon_count=len(result.polygons),
        total_area_m2=result.total_area_m2,
        new_tokens=result.new_tokens,
        timings_s=json.dumps({k: round(v, 6) for k, v in result.timings_s.items()}),
        think2seg_version=__version__,
    )
    frame = pd.DataFrame([row])
    frame["created_at"] = frame["created_at"].astype("datetime64[ms, UTC]")
    return frame


def with_gpkg_functions(connection: sqlite3.Connection) -> sqlite3.Connection:
    """``connection`` with the SQL functions GDAL's R-tree triggers call (ST_IsEmpty, ST_MinX...).

    Plain SQLite lacks them, and a trigger that names them stops every UPDATE of the table from
    being prepared, even one that leaves the geometry alone (the trigger then never calls them).
    Read from the GeoPackage geometry blob: its header's empty flag, and its WKB's bounds.
    """
    connection.create_function("ST_IsEmpty", 1, _blob_is_empty, deterministic=True)
    for index, name in enumerate(("ST_MinX", "ST_MinY", "ST_MaxX", "ST_MaxY")):
        connection.create_function(name, 1, functools.partial(_blob_bound, index), deterministic=True)
    return connection


_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


def _blob_geometry(blob: bytes) -> shapely.Geometry | None:
    if blob is None or len(blob) < 8 or blob[:2] != b"GP":
        return None
    envelope = _ENVELOPE_BYTES.get((blob[3] >> 1) & 0b111, 0)
    return shapely.from_wkb(bytes(blob[8 + envelope :]))


def _blob_is_empty(blob: bytes | None) -> int | None:
    if blob is None:
        return None
    if len(blob) >= 4 and blob[:2] == b"GP" and blob[3] & 0b10000:  # the header's empty-geometry flag
        return 1
    geometry = _blob_geometry(blob)
    return int(geometry is None or bool(shapely.is_empty(geometry)))


def _blob_bound(index: int, blob: bytes | None) -> float | None:
    geometry = _blob_geometry(blob) if blob is not None else None
    return None if geometry is None or shapely.is_empty(geometry) else float(shapely.bounds(geometry)[index])
