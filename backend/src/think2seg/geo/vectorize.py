"""Turn a binary mask into polygons in the tile's CRS, holes kept, nodata excluded."""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio import features
from rasterio.crs import CRS
from shapely.geometry import LinearRing, Polygon

from think2seg.geo.areas import areas_m2
from think2seg.geo.outline import clean_outlines
from think2seg.options import check_min_area


def mask_to_polygons(
    mask: np.ndarray,
    *,
    transform: Affine,
    valid: np.ndarray | None = None,
    simplify_px: float = 0.0,
    outline: str = "pixel",
) -> list[Polygon]:
    """Polygons of the True pixels of ``mask`` (H, W bool), mapped through ``transform``.

    Pixels outside ``valid`` never become polygons. Connectivity is 4 (pixels touching only at a
    corner are separate polygons), which keeps every polygon valid. ``outline`` and
    ``simplify_px`` clean the outlines in pixels before georeferencing (:func:`outlined`).
    Exteriors are counter-clockwise and holes clockwise (GeoJSON's right-hand rule).
    """
    keep = mask.astype(bool)
    if valid is not None:
        keep &= valid
    polygons, _ = outlined(pixel_polygons(keep), outline=outline, simplify_px=simplify_px)
    return list(georeference(polygons, transform))


def outlined(
    polygons: np.ndarray, *, outline: str = "pixel", simplify_px: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-coordinate polygons with clean outlines, and each one's index in ``polygons``.

    ``outline`` is one of :data:`~think2seg.geo.outline.OUTLINES`; ``simplify_px`` is its
    tolerance in pixels (0: the outline's default). ``simplify_px`` alone (outline ``pixel``) means
    ``simplify``, as before outlines existed. Results stay valid, never overlap, and keep each
    polygon's area within :data:`~think2seg.geo.outline.AREA_TOLERANCE`.
    """
    if outline == "pixel" and simplify_px > 0:
        outline = "simplify"
    return clean_outlines(polygons, outline=outline, tolerance_px=simplify_px if simplify_px > 0 else None)


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
    outline: str = "pixel",
    instance_masks: np.ndarray | None = None,
    scores: np.ndarray | None = None,
) -> gpd.GeoDataFrame:
    """The mask's polygons as a GeoDataFrame in ``crs`` with ``area_m2``, ``instance`` and ``score``.

    Outlines are cleaned as ``outline`` and ``simplify_px`` say (:func:`outlined`). Polygons
    smaller than ``min_area_m2`` are dropped; ``min_area_m2`` needs a CRS. With
    ``instance_masks`` (N, H, W bool, one per instance) and their ``scores`` (N,), each polygon's
    ``instance`` is the instance whose mask covers most of its pixels (the one that produced it;
    overlapping instances are unioned into one polygon) and ``score`` is that instance's score;
    without them ``instance`` is -1 and ``score`` NaN.
    """
    check_min_area(min_area_m2, crs)
    keep = mask.astype(bool)
    if valid is not None:
        keep &= valid
    pixel = pixel_polygons(keep)
    owners = polygon_owners(pixel, instance_masks, keep.shape)
    pixel, index = outlined(pixel, outline=outline, simplify_px=simplify_px)
    owners = owners[index]
    polygons = georeference(pixel, transform)
    areas = np.asarray(areas_m2(list(polygons), crs), dtype=np.float64)
    if min_area_m2 > 0:
        big = areas >= min_area_m2
        polygons, areas, owners = polygons[big], areas[big], owners[big]
    return gpd.GeoDataFrame(
        {"area_m2": areas, "instance": owners.astype(np.int32), "score": owner_scores(owners, scores)},
        geometry=gpd.GeoSeries(list(polygons), crs=crs),
    )


def polygon_owners(
    polygons: np.ndarray,
    instance_masks: np.ndarray | None,
    shape: tuple[int, int],
    *,
    origin_px: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """For each pixel-coordinate polygon (from :func:`pixel_polygons` of a mask of ``shape`` with
    the same ``origin_px``), the index of the instance mask (N, H, W) covering most of its pixels;
    -1 without instance masks. Ties go to the lower index (the earlier instance of the answer).
    """
    owners = np.full(len(polygons), -1, dtype=np.int64)
    if instance_masks is None or not len(instance_masks) or not len(polygons):
        return owners
    labels = features.rasterize(
        ((polygon, k + 1) for k, polygon in enumerate(polygons)),
        out_shape=shape,
        fill=0,
        transform=Affine.translation(*origin_px),
        dtype="int32",
    )
    overlaps = np.stack([np.bincount(labels[m], minlength=len(polygons) + 1)[1:] for m in instance_masks])
    covered = overlaps.max(axis=0) > 0
    owners[covered] = overlaps.argmax(axis=0)[covered]
    return owners


def owner_scores(owners: np.ndarray, scores: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """``scores[owner]`` for each owner index (float64), NaN where the owner is -1 or unknown."""
    known = np.asarray(scores if scores is not None else [], dtype=np.float64)
    if not len(known):
        return np.full(len(owners), np.nan)
    return np.where(owners >= 0, known[np.maximum(owners, 0)], np.nan)
