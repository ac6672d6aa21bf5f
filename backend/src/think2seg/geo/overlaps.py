"""Where two classes claim the same ground: their polygons' intersections, kept and reported.

Each class's polygons come from its own question, so a roof can be both "buildings" and "solar
panels". Nothing is removed from either class; the overlaps are measured so that the analyst sees
them (a ``class_overlaps`` layer and a line in the summary).
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.crs import CRS

from think2seg.geo.areas import areas_m2

CLASS_COLUMN = "class"


def class_overlaps(segments: gpd.GeoDataFrame, *, crs: CRS | None) -> gpd.GeoDataFrame:
    """The intersections of polygons of different classes (``segments[CLASS_COLUMN]``), one row
    per pair of classes and connected piece: columns ``class_a``, ``class_b`` (a < b),
    ``area_m2`` (NaN in pixel coordinates) and the polygonal geometry in ``crs``.

    Each pair of classes is one overlay of the two classes' polygons taken as wholes (GEOS indexes
    their edges), not one intersection per pair of polygons: a mask riddled with holes is one
    polygon of a hundred thousand vertices, which every small polygon of the other class would
    otherwise be tested and cut against (minutes instead of seconds)."""
    classes = segments[CLASS_COLUMN].astype(str).to_numpy()
    geometries = segments.geometry.to_numpy()
    wholes = {name: _whole(geometries[classes == name]) for name in sorted(set(classes))}
    firsts, seconds, pieces = [], [], []
    names = list(wholes)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            parts = _polygonal(shapely.intersection(wholes[first], wholes[second]))
            firsts += [first] * len(parts)
            seconds += [second] * len(parts)
            pieces += list(parts)
    return gpd.GeoDataFrame(
        {
            "class_a": pd.Series(firsts, dtype="object"),
            "class_b": pd.Series(seconds, dtype="object"),
            "area_m2": np.asarray(areas_m2(pieces, crs), dtype=np.float64),
        },
        geometry=gpd.GeoSeries(pieces, crs=crs),
    )


def _whole(geometries: np.ndarray) -> shapely.Geometry:
    """One class's polygons as one geometry: a MultiPolygon of them as they are when they are
    disjoint (one mask's polygons), else their union (a class asked by several questions)."""
    parts = shapely.get_parts(geometries)
    whole = shapely.multipolygons(parts[shapely.get_type_id(parts) == shapely.GeometryType.POLYGON])
    return whole if shapely.is_valid(whole) else shapely.union_all(parts)


def _polygonal(geometry: shapely.Geometry) -> np.ndarray:
    """The polygons of an overlay's result with an area (touching edges and points dropped)."""
    parts = shapely.get_parts(geometry)
    return parts[(shapely.get_type_id(parts) == shapely.GeometryType.POLYGON) & (shapely.area(parts) > 0)]


def overlap_totals(overlaps: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Total overlap area (m²) per pair of classes, largest first."""
    if not len(overlaps):
        return {}
    totals: dict[tuple[str, str], float] = {}
    for a, b, area in zip(overlaps["class_a"], overlaps["class_b"], overlaps["area_m2"]):
        totals[(str(a), str(b))] = totals.get((str(a), str(b)), 0.0) + float(area)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))
