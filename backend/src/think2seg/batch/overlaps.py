"""Where a batch run's classes claim the same ground: the ``class_overlaps`` layer, as ``segment``
writes it (see :mod:`think2seg.geo.overlaps`), with the ``source`` raster of each piece.

Computed once the segments are final, raster by raster (polygons of different rasters are never
compared), and rewritten whole on every run, so a resumed run's layer matches its segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
from rasterio.crs import CRS

from think2seg.batch.layout import sql_text
from think2seg.geo.overlaps import CLASS_COLUMN, class_overlaps, overlap_totals
from think2seg.output.gpkg import LAYER_TYPES, write_layer


def write_class_overlaps(path: Path, sources: Sequence[str], *, crs: CRS | None) -> dict[tuple[str, str], float]:
    """(Re)write ``path``'s ``class_overlaps`` layer from its ``segments`` of ``sources``; returns
    the total overlap area (m²) per pair of classes, largest first."""
    frames = [_overlaps_of(path, source, crs) for source in sources]
    overlaps = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    write_layer(
        gpd.GeoDataFrame(overlaps, geometry="geometry", crs=crs),
        path,
        layer="class_overlaps",
        geometry_type=LAYER_TYPES["class_overlaps"],
        replace=True,
    )
    return overlap_totals(overlaps)


def _overlaps_of(path: Path, source: str, crs: CRS | None) -> gpd.GeoDataFrame:
    segments = pyogrio.read_dataframe(
        path, layer="segments", columns=[CLASS_COLUMN], where=f"source = {sql_text(source)}"
    )
    overlaps = class_overlaps(segments, crs=crs)
    overlaps.insert(0, "source", pd.Series([source] * len(overlaps), dtype="object"))
    return overlaps
