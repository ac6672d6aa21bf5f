"""Compare two dates' polygons on one grid: what appeared, what disappeared, what persisted.

The rule is a geometric overlay of the two polygon sets (each date's polygons do not overlap one
another: they are the pieces of one union mask):

    appeared    = AFTER minus BEFORE        (each piece keeps the attributes of its AFTER polygon)
    disappeared = BEFORE minus AFTER        (... of its BEFORE polygon)
    persisted   = BEFORE intersected with AFTER  (... of both, one piece per overlapping pair)

Why an overlay and not an object-level rule (an object persists when it overlaps its counterpart
by more than a threshold): the overlay is exact and needs no threshold, its areas add up
(BEFORE = disappeared + persisted, AFTER = appeared + persisted, before the filters below), and it
reports the partial changes that matter for extents, not objects: a flood, a clearing or a
quarry that grew, a field half built over. An object rule would call the grown flood "persisted"
and hide the growth, and it has no good answer when objects merge or split between dates. What
the overlay gets wrong is noise along edges that did not really move (the two dates' masks never
match to the pixel, and AFTER was resampled); two filters remove it, on every layer: pieces
smaller than ``min_change_m2`` (specks), and pieces nowhere wider than ``sliver_px`` pixels of the
grid (the thin slivers along an unchanged edge, whose area grows with the object's perimeter, so
no area threshold alone removes them for large objects). A piece is "nowhere wider" when eroding
it by ``sliver_px / 2`` leaves nothing; the default 1.5 removes the one-pixel L- and staircase-shaped
bands a one-pixel shift leaves (their corners are about 1.2 px across) and keeps any change two
pixels wide. A real change is kept whole: the width test only decides whether a piece is kept, it
never erodes it.

Both sets are first clipped to ``footprint``, the area both rasters cover, so that what lies
outside one of them is neither "appeared" nor "disappeared".
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.crs import CRS
from shapely.geometry.base import BaseGeometry

from think2seg.geo.areas import areas_m2
from think2seg.options import Option

MIN_CHANGE_M2 = Option(
    "min_change_m2", 25.0, "m²", "drop change pieces smaller than this (specks from the dates' misalignment)"
)
SLIVER_PX = Option(
    "sliver_px",
    1.5,
    "pixels of BEFORE's grid",
    "drop change pieces nowhere wider than this (slivers along unchanged edges); 0 keeps them",
    maximum=100,
)
CHANGE_LAYERS = ("appeared", "disappeared", "persisted")
_NOISE_PX2 = 1e-6  # what is left of a sliver by floating-point error, in square pixels


@dataclass(frozen=True)
class ChangeFilter:
    """The sliver filters: ``min_change_m2`` in m², ``sliver_px`` in grid pixels of side ``pixel_size``
    (map units of ``crs``)."""

    crs: CRS | None
    pixel_size: float
    min_change_m2: float = MIN_CHANGE_M2.default
    sliver_px: float = SLIVER_PX.default

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_change_m2", MIN_CHANGE_M2.check(self.min_change_m2))
        object.__setattr__(self, "sliver_px", SLIVER_PX.check(self.sliver_px))

    def keep(self, pieces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which pieces pass both filters (a bool array), and the pieces' areas in m²."""
        areas = np.asarray(areas_m2(list(pieces), self.crs), dtype=np.float64)
        kept = areas >= self.min_change_m2
        if self.sliver_px > 0 and len(pieces):
            core = shapely.buffer(pieces, -self.sliver_px * self.pixel_size / 2)
            kept &= shapely.area(core) > _NOISE_PX2 * self.pixel_size**2
        return kept, areas


@dataclass(frozen=True)
class Changes:
    """The three change layers, in the grid's CRS: each has ``geometry`` (Polygons), ``area_m2`` and
    the carried columns of its source polygons, prefixed ``before_`` / ``after_``."""

    appeared: gpd.GeoDataFrame
    disappeared: gpd.GeoDataFrame
    persisted: gpd.GeoDataFrame

    def layers(self) -> dict[str, gpd.GeoDataFrame]:
        return {name: getattr(self, name) for name in CHANGE_LAYERS}


def compare(
    before: gpd.GeoDataFrame, after: gpd.GeoDataFrame, *, footprint: BaseGeometry, filters: ChangeFilter
) -> Changes:
    """Overlay two dates' polygons (both in ``filters.crs``) inside ``footprint``.

    Every column of ``before`` and ``after`` but the geometry and ``area_m2`` is carried into the
    pieces made from its rows, prefixed ``before_`` / ``after_``; ``area_m2`` is each piece's own.
    """
    before, after = _clipped(before, footprint), _clipped(after, footprint)
    b, a = _geometries(before), _geometries(after)
    appeared = _difference(a, b)
    disappeared = _difference(b, a)
    persisted, pairs = _intersection(b, a)
    return Changes(
        _frame(appeared[0], filters, after=(after, appeared[1])),
        _frame(disappeared[0], filters, before=(before, disappeared[1])),
        _frame(persisted, filters, before=(before, pairs[0]), after=(after, pairs[1])),
    )


def polygon_parts(geometries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-empty Polygons inside ``geometries`` (collections and multipolygons split, however
    nested; lines and points left out), and for each the index of the geometry it came from."""
    parts = np.asarray(geometries, dtype=object)
    index = np.arange(len(parts))
    while len(parts) and np.isin(shapely.get_type_id(parts), _MULTI).any():
        parts, inner = shapely.get_parts(parts, return_index=True)
        index = index[inner]
    keep = (shapely.get_type_id(parts) == shapely.GeometryType.POLYGON) & (shapely.area(parts) > 0)
    return parts[keep], index[keep]


_MULTI = [
    shapely.GeometryType.MULTIPOLYGON,
    shapely.GeometryType.GEOMETRYCOLLECTION,
    shapely.GeometryType.MULTILINESTRING,
    shapely.GeometryType.MULTIPOINT,
]


def _clipped(frame: gpd.GeoDataFrame, footprint: BaseGeometry) -> gpd.GeoDataFrame:
    """``frame``'s polygons cut to ``footprint``, one row per polygon part (attributes repeated)."""
    if not len(frame):
        return frame
    parts, index = polygon_parts(shapely.intersection(frame.geometry.to_numpy(), footprint))
    rows = frame.iloc[index].reset_index(drop=True)
    return gpd.GeoDataFrame(rows.drop(columns=frame.geometry.name), geometry=list(parts), crs=frame.crs)


def _geometries(frame: gpd.GeoDataFrame) -> np.ndarray:
    return np.asarray(frame.geometry.to_numpy(), dtype=object) if len(frame) else np.array([], dtype=object)


def _difference(kept: np.ndarray, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The parts of each ``kept`` polygon outside every ``removed`` one, and each part's index in ``kept``."""
    left, right = _overlapping(kept, removed)
    remains = np.array(kept, dtype=object)
    once = np.flatnonzero(np.bincount(left, minlength=len(kept)) == 1)  # most polygons meet at most one other
    if len(once):
        single = np.searchsorted(left, once)
        remains[once] = shapely.difference(kept[once], removed[right[single]])
    for i in np.flatnonzero(np.bincount(left, minlength=len(kept)) > 1):
        remains[i] = shapely.difference(kept[i], shapely.union_all(removed[right[left == i]]))
    return polygon_parts(remains)


def _intersection(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The overlap of every overlapping (before, after) pair, and each part's (before, after) indices."""
    left, right = _overlapping(before, after)
    parts, index = polygon_parts(shapely.intersection(before[left], after[right]))
    return parts, (left[index], right[index])


def _overlapping(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) index pairs, sorted by i, of the polygons whose interiors meet (touching edges do not
    count: a blob in a hole of a large polygon shares its edge, not its area)."""
    if not len(first) or not len(second):
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    left, right = shapely.STRtree(second).query(first, predicate="intersects")
    shapely.prepare(second)
    overlap = ~shapely.touches(second[right], first[left])
    order = np.argsort(left[overlap], kind="stable")
    return left[overlap][order], right[overlap][order]


def _frame(
    pieces: np.ndarray,
    filters: ChangeFilter,
    *,
    before: tuple[gpd.GeoDataFrame, np.ndarray] | None = None,
    after: tuple[gpd.GeoDataFrame, np.ndarray] | None = None,
) -> gpd.GeoDataFrame:
    """The kept pieces with ``area_m2`` and the carried columns of the rows they came from."""
    kept, areas = filters.keep(pieces)
    columns = [pd.DataFrame({"area_m2": pd.Series(areas[kept], dtype="float64")})]
    for prefix, source in (("before_", before), ("after_", after)):
        if source is not None:
            frame, index = source
            carried = frame.drop(columns=[frame.geometry.name, "area_m2"], errors="ignore")
            columns.append(
                carried.iloc[np.asarray(index, dtype=np.int64)[kept]].reset_index(drop=True).add_prefix(prefix)
            )
    polygons = shapely.orient_polygons(pieces[kept], exterior_cw=False) if kept.any() else pieces[kept]
    return gpd.GeoDataFrame(pd.concat(columns, axis=1), geometry=gpd.GeoSeries(list(polygons), crs=filters.crs))
