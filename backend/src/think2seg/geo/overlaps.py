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
    ``area_m2`` (NaN in pixel coordinates) and the polygonal geometry in ``crs``."""
    geometries = segments.geometry.to_numpy()
    classes = segments[CLASS_COLUMN].astype(str).to_numpy()
    left, right = shapely.STRtree(geometries).query(geometries, predicate="intersects") if len(segments) else ([], [])
    left, right = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
    pairs = (left < right) & (classes[left] != classes[right])
    left, right = left[pairs], right[pairs]
    shared = shapely.intersection(geometries[left], geometries[right])
    parts, index = shapely.get_parts(shared, return_index=True)
    polygonal = (shapely.get_type_id(parts) == shapely.GeometryType.POLYGON) & (shapely.area(parts) > 0)
    parts, index = parts[polygonal], index[polygonal]
    a, b = classes[left[index]], classes[right[index]]
    first, second = np.minimum(a, b), np.maximum(a, b)
    frame = gpd.GeoDataFrame(
        {
            "class_a": pd.Series(first, dtype="object"),
            "class_b": pd.Series(second, dtype="object"),
            "area_m2": np.asarray(areas_m2(list(parts), crs), dtype=np.float64),
        },
        geometry=gpd.GeoSeries(list(parts), crs=crs),
    )
    return frame


def overlap_totals(overlaps: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Total overlap area (m²) per pair of classes, largest first."""
    if not len(overlaps):
        return {}
    totals: dict[tuple[str, str], float] = {}
    for a, b, area in zip(overlaps["class_a"], overlaps["class_b"], overlaps["area_m2"]):
        totals[(str(a), str(b))] = totals.get((str(a), str(b)), 0.0) + float(area)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))
