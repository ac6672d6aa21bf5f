"""Turn a binary mask into polygons in the tile's CRS, holes kept, nodata excluded."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio import features
from rasterio.crs import CRS
from shapely.geometry import LinearRing, Polygon

from think2seg.geo.areas import areas_m2
from think2seg.options import check_min_area


def mask_to_polygons(
    mask: np.ndarray,
    *,
    transform: Affine,
    valid: np.ndarray | None = None,
    simplify_px: float = 0.0,
) -> list[Polygon]:
    """Polygons of the True pixels of ``mask`` (H, W bool), mapped through ``transform``.

    Pixels outside ``valid`` never become polygons. Connectivity is 4 (pixels touching only at a
    corner are separate polygons), which keeps every polygon valid. ``simplify_px`` is a
    Douglas-Peucker tolerance in pixels applied before georeferencing (topology preserved).
    Exteriors are counter-clockwise and holes clockwise (GeoJSON's right-hand rule).
    """
    keep = mask.astype(bool)
    if valid is not None:
        keep &= valid
    polygons = pixel_polygons(keep)
    if simplify_px > 0 and len(polygons):
        polygons, _ = repaired(shapely.simplify(polygons, simplify_px, preserve_topology=True))
    return list(georeference(polygons, transform))


def pixel_polygons(mask: np.ndarray, *, origin_px: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Polygons of the True pixels of ``mask`` in pixel coordinates offset by ``origin_px``.

    Coordinates are whole numbers (pixel corners), so pieces vectorized from different windows of
    one raster share vertices exactly. Returns an object array of Polygons.
    """
    if not mask.any():
        return np.array([], dtype=object)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    row0, col0 = int(rows[0]), int(cols[0])
    crop = mask[row0 : rows[-1] + 1, col0 : cols[-1] + 1]  # polygonize only where the mask is
    offset = Affine.translation(origin_px[0] + col0, origin_px[1] + row0)
    pieces = features.shapes(crop.astype(np.uint8), mask=crop, connectivity=4, transform=offset)
    return np.array([_polygon(geometry["coordinates"]) for geometry, _value in pieces], dtype=object)


def georeference(polygons: np.ndarray, transform: Affine) -> np.ndarray:
    """Map pixel-coordinate polygons through ``transform``; exteriors counter-clockwise.

    Computed element by element (x = a*col + b*row + c), so the same pixel corner gives the same
    map coordinate to the last bit whichever polygon it belongs to.
    """
    if not len(polygons):
        return polygons

    def to_map(xy: np.ndarray) -> np.ndarray:
        col, row = xy[:, 0], xy[:, 1]
        x = col * transform.a + row * transform.b + transform.xoff
        y = col * transform.d + row * transform.e + transform.yoff
        return np.column_stack([x, y])

    return shapely.orient_polygons(shapely.transform(polygons, to_map), exterior_cw=False)


def _polygon(rings: list) -> Polygon:
    shell, *holes = (LinearRing(np.asarray(ring, dtype=np.float64)) for ring in rings)
    return shapely.polygons(shell, holes=holes or None)


def repaired(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Repair the rare invalid result of simplification and drop what collapsed.

    Only the invalid polygons go through ``make_valid``; the parts of what it returns that are
    polygons are kept and the rest (lines, points, empties) dropped. Returns the polygons and, for
    each, the index in ``polygons`` it came from. Polygons straight from the 4-connected
    polygonizer (or unions of them) are valid by construction, so only simplified ones need this.
    """
    polygons = np.array(polygons, dtype=object)  # a copy: the caller's array is left as it was
    invalid = ~shapely.is_valid(polygons)
    if invalid.any():
        polygons[invalid] = shapely.make_valid(polygons[invalid])
    parts, index = shapely.get_parts(polygons, return_index=True)
    keep = (shapely.get_type_id(parts) == shapely.GeometryType.POLYGON) & ~shapely.is_empty(parts)
    return parts[keep], index[keep]


def polygons_frame(
    mask: np.ndarray,
    *,
    transform: Affine,
    crs: CRS | None,
    valid: np.ndarray | None = None,
    simplify_px: float = 0.0,
    min_area_m2: float = 0.0,
) -> gpd.GeoDataFrame:
    """The mask's polygons as a GeoDataFrame in ``crs`` with an ``area_m2`` column.

    Polygons smaller than ``min_area_m2`` are dropped; ``min_area_m2`` needs a CRS.
    """
    check_min_area(min_area_m2, crs)
    polygons = mask_to_polygons(mask, transform=transform, valid=valid, simplify_px=simplify_px)
    areas = areas_m2(polygons, crs)
    if min_area_m2 > 0:
        kept = [(p, a) for p, a in zip(polygons, areas) if a >= min_area_m2]
        polygons, areas = [p for p, _ in kept], [a for _, a in kept]
    return gpd.GeoDataFrame(
        {"area_m2": np.asarray(areas, dtype=np.float64)},
        geometry=gpd.GeoSeries(polygons, crs=crs),
    )
