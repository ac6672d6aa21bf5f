"""Build the ``segments`` layer of a batch run from its committed tile pieces.

The pieces are in whole-pixel coordinates of the raster (see ``store``). Pieces that touch no seam
are final as they are and are streamed through in chunks; pieces that touch a seam are merged
across tiles first, still in pixels. Then, per polygon: outline cleaning in pixels (as ``segment``
does it: ``simplify_px`` is a tolerance in pixels whatever the geotransform), georeferencing,
clipping to the AOI, areas (in the raster's own CRS), the minimum area, and last the explicit
reprojection into a target CRS. Each raster of a run is finalized on its own: its rows of
``segments`` are replaced and the other rasters' rows stay. Running it again gives the same layer,
so a run interrupted while finalizing simply finalizes again when resumed.
"""

from __future__ import annotations

import sqlite3
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
    """(Re)write the ``segments`` rows of ``stamp.source`` in ``path`` (output CRS ``crs``) from the
    pieces of its finished tiles."""
    writer = _SegmentsWriter(path, stamp, crs)
    source = "'" + stamp.source.replace("'", "''") + "'"
    last_fid = -1
    while True:
        chunk = pyogrio.read_dataframe(
            path,
            sql=f"SELECT p.fid, p.score, p.geom {_COMMITTED} WHERE p.source = {source} AND p.seam = 0 AND p.fid > {last_fid} "
            f"ORDER BY p.fid LIMIT {CHUNK_PIECES}",
            fid_as_index=True,
        )
        if chunk.empty:
            break
        last_fid = int(chunk.index[-1])
        ones = np.ones(len(chunk), dtype=np.int32)
        writer.write(*_finish(chunk.geometry.to_numpy(), ones, _floats(chunk["score"]), finishing))
    seams = pyogrio.read_dataframe(
        path,
        sql=f"SELECT p.tile_id, p.score, p.geom {_COMMITTED} WHERE p.source = {source} AND p.seam = 1 ORDER BY p.fid",
    )
    # Merged in whole-pixel coordinates, where seam edges are exactly collinear whatever the
    # transform (a rotated one would make them cross in floating point).
    merged = merge_seam_pieces(list(seams.geometry.to_numpy()), seams["tile_id"].tolist(), _floats(seams["score"]))
    geometries = np.array([m.geometry for m in merged], dtype=object)
    tiles = np.array([m.tiles for m in merged], dtype=np.int32)
    writer.write(*_finish(geometries, tiles, np.array([m.score for m in merged], dtype=np.float64), finishing))
    writer.close()
    return FinalStats(writer.count, writer.area)


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
        self._started = _delete_rows(path, stamp.source)  # False: the layer is created by the first write

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


def _delete_rows(path: Path, source: str) -> bool:
    """Delete ``source``'s rows of ``segments``; False when the layer does not exist yet."""
    with closing(sqlite3.connect(path)) as connection, connection:
        found = connection.execute("SELECT 1 FROM gpkg_contents WHERE table_name = 'segments'").fetchone()
        if found is not None:
            connection.execute("DELETE FROM segments WHERE source = ?", (source,))
    return found is not None
