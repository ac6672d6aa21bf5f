"""Build the ``segments`` layer of a batch run from its committed tile pieces.

The pieces are in whole-pixel coordinates of the raster (see ``store``). Pieces that touch no seam
are final as they are and are streamed through in chunks; pieces that touch a seam are merged
across tiles first, still in pixels. Then, per polygon: outline cleaning in pixels (as ``segment``
does it: ``simplify_px`` is a tolerance in pixels whatever the geotransform), georeferencing,
clipping to the AOI, areas (in the raster's own CRS), the minimum area, and last the explicit
reprojection into a target CRS. Cleaning outlines (any ``outline`` but ``pixel``) looks at each
polygon's neighbours, so then all of a raster's polygons are cleaned together, as ``segment`` cleans
all of a window's: the same polygons in both. Each raster and question of a run is finalized on its
own: its rows of ``segments`` are replaced and the other rows stay. Running it again gives the same layer,
so a run interrupted while finalizing simply finalizes again when resumed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry.base import BaseGeometry

from think2seg.batch.layout import sql_text
from think2seg.batch.stitch import merge_seam_pieces
from think2seg.geo.areas import areas_m2
from think2seg.geo.reproject import Reprojection
from think2seg.geo.vectorize import georeference, outlined
from think2seg.output.frames import RunStamp
from think2seg.output.gpkg import write_layer

CHUNK_PIECES = 20_000
_COMMITTED = "FROM tile_pieces p JOIN tiles t ON p.attempt = t.attempt"


@dataclass(frozen=True)
class Finishing:
    """How one raster's pieces become final polygons: ``crs`` and ``transform`` are the raster's,
    ``reproject`` maps them into the output CRS."""

    crs: CRS | None
    transform: Affine
    aoi: BaseGeometry | None = None
    simplify_px: float = 0.0
    min_area_m2: float = 0.0
    reproject: Reprojection = field(default_factory=lambda: Reprojection(None, None))
    outline: str = "pixel"


@dataclass(frozen=True)
class FinalStats:
    polygons: int
    total_area_m2: float


def finalize(path: Path, stamp: RunStamp, finishing: Finishing, *, crs: CRS | None) -> FinalStats:
    """(Re)write the ``segments`` rows of ``stamp``'s raster and question in ``path`` (output CRS
    ``crs``) from the pieces of its finished tiles."""
    writer = _SegmentsWriter(path, stamp, crs)
    together = finishing.outline != "pixel" or finishing.simplify_px > 0  # cleaning looks at neighbours
    held: list[Polygons] = []
    for chunk in _single_pieces(path, stamp):
        if together:
            held.append(chunk)
        else:
            writer.write(*_finish(*chunk, finishing))
    held.append(_stitched(path, stamp))
    geometries, tiles, scores = (np.concatenate(parts) for parts in zip(*held))
    writer.write(*_finish(geometries, tiles, scores, finishing))
    writer.close()
    return FinalStats(writer.count, writer.area)


Polygons = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Pixel-coordinate polygons, the tiles each spans, and their scores."""


def _where(stamp: RunStamp) -> str:
    """The SQL condition on ``tile_pieces p`` for ``stamp``'s raster and question."""
    return " AND ".join(f"p.{name} = {sql_text(value)}" for name, value in _keys(stamp).items())


def _keys(stamp: RunStamp) -> dict[str, str]:
    return {"source": stamp.source, "class": stamp.label, "question": stamp.question}


def _single_pieces(path: Path, stamp: RunStamp) -> Iterator[Polygons]:
    """The pieces that touch no seam (each a whole object of one tile), in chunks of :data:`CHUNK_PIECES`."""
    last_fid = -1
    while True:
        chunk = pyogrio.read_dataframe(
            path,
            sql=f"SELECT p.fid, p.score, p.geom {_COMMITTED} WHERE {_where(stamp)} AND p.seam = 0 "
            f"AND p.fid > {last_fid} ORDER BY p.fid LIMIT {CHUNK_PIECES}",
            fid_as_index=True,
        )
        if chunk.empty:
            return
        last_fid = int(chunk.index[-1])
        yield chunk.geometry.to_numpy(), np.ones(len(chunk), dtype=np.int32), _floats(chunk["score"])


def _stitched(path: Path, stamp: RunStamp) -> Polygons:
    """The objects whose pieces touch a seam, merged across tiles."""
    seams = pyogrio.read_dataframe(
        path, sql=f"SELECT p.tile_id, p.score, p.geom {_COMMITTED} WHERE {_where(stamp)} AND p.seam = 1 ORDER BY p.fid"
    )
    # Merged in whole-pixel coordinates, where seam edges are exactly collinear whatever the
    # transform (a rotated one would make them cross in floating point).
    merged = merge_seam_pieces(list(seams.geometry.to_numpy()), seams["tile_id"].tolist(), _floats(seams["score"]))
    geometries = np.array([m.geometry for m in merged], dtype=object)
    tiles = np.array([m.tiles for m in merged], dtype=np.int32)
    return geometries, tiles, np.array([m.score for m in merged], dtype=np.float64)


def _floats(values: pd.Series) -> np.ndarray:
    """A column read back as float64, NULL (a run stored before the column existed) as NaN."""
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _finish(
    geometries: np.ndarray, tiles: np.ndarray, scores: np.ndarray, finishing: Finishing
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Simplify, georeference, clip to the AOI, measure and filter pixel-coordinate polygons:
    (map-coordinate polygons, tiles spanned, scores, areas in m²)."""
    if not len(geometries):
        return geometries, tiles, scores, np.array([], dtype=np.float64)
    # outlines cleaned in pixels, exactly as ``segment`` does it (mask_to_polygons)
    geometries, index = outlined(geometries, outline=finishing.outline, simplify_px=finishing.simplify_px)
    tiles, scores = tiles[index], scores[index]
    geometries = georeference(geometries, finishing.transform)
    if finishing.aoi is not None:
        geometries = shapely.intersection(geometries, finishing.aoi)
    parts, index = shapely.get_parts(geometries, return_index=True)
    keep = (shapely.get_type_id(parts) == shapely.GeometryType.POLYGON) & ~shapely.is_empty(parts)
    parts, tiles, scores = parts[keep], tiles[index[keep]], scores[index[keep]]
    parts = shapely.orient_polygons(parts, exterior_cw=False)
    areas = np.asarray(areas_m2(list(parts), finishing.crs), dtype=np.float64)  # in the raster's CRS
    if finishing.min_area_m2 > 0:
        big = areas >= finishing.min_area_m2
        parts, tiles, scores, areas = parts[big], tiles[big], scores[big], areas[big]
    if not finishing.reproject.identity:
        parts = shapely.orient_polygons(finishing.reproject(parts), exterior_cw=False)
    return parts, tiles, scores, areas


class _SegmentsWriter:
    """Writes one raster's ``segments`` rows chunk by chunk, replacing its earlier rows (the layer
    is created by the first raster that has none)."""

    def __init__(self, path: Path, stamp: RunStamp, crs: CRS | None) -> None:
        self.path, self.stamp, self.crs = path, stamp, crs
        self.count, self.area = 0, 0.0
        self._started = _delete_rows(path, stamp)  # False: the layer is created by the first write

    def write(self, polygons: np.ndarray, tiles: np.ndarray, scores: np.ndarray, areas: np.ndarray) -> None:
        if not len(polygons) and self._started:
            return
        columns = self.stamp.columns(len(polygons), status="ok")
        columns["area_m2"] = pd.Series(areas, dtype="float64")
        columns["tiles"] = pd.Series(tiles, dtype="int32")
        columns["score"] = pd.Series(scores, dtype="float64")
        frame = gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(list(polygons), crs=self.crs))
        started = self._started
        write_layer(frame, self.path, layer="segments", geometry_type="Polygon", append=started, replace=not started)
        self._started = True
        self.count += len(polygons)
        self.area += float(np.nansum(areas))

    def close(self) -> None:
        if not self._started:
            empty = np.array([], dtype=np.float64)
            self.write(np.array([], dtype=object), np.array([], dtype=np.int32), empty, empty)


def _delete_rows(path: Path, stamp: RunStamp) -> bool:
    """Delete the rows of ``segments`` of ``stamp``'s raster and question; False when the layer does not exist yet."""
    keys = _keys(stamp)
    with closing(sqlite3.connect(path)) as connection, connection:
        found = connection.execute("SELECT 1 FROM gpkg_contents WHERE table_name = 'segments'").fetchone()
        if found is not None:
            condition = " AND ".join(f'"{name}" = ?' for name in keys)
            connection.execute(f"DELETE FROM segments WHERE {condition}", tuple(keys.values()))
    return found is not None
