"""Clean pixel outlines: keep them, simplify them, smooth them or square them up, in pixel space.

The input is what :func:`think2seg.geo.vectorize.pixel_polygons` returns for one binary mask:
Polygons in pixel coordinates (x = column, y = row, whole-number corners) that never overlap but
may touch at a corner, one possibly inside another's hole. Every outline keeps these guarantees:

- every result is a valid Polygon;
- no two results overlap (their interiors are disjoint; they may still touch);
- the results of one input polygon together keep its area within :data:`AREA_TOLERANCE`
  (relative). Where a cleaned outline would not (it collapsed, or a small polygon changed
  too much: a 3-pixel L smoothed, a 1-pixel square simplified to a triangle), the polygon
  keeps its exact pixel outline instead. So no polygon is ever dropped, and small ones (a few
  pixels) mostly stay as they are;
- the results depend only on the shapes given, not on their order, nor on where and which way
  their rings run, nor on collinear vertices (:func:`~think2seg.geo.simplify.canonical_form`):
  ``batch``, which stitches a raster's objects across tile seams, and ``segment`` agree.

Georeferencing comes after (:func:`think2seg.geo.vectorize.georeference`), so ``tolerance_px`` is
in pixels whatever the raster's CRS.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import shapely
from shapely.geometry import MultiPolygon
from shapely.geometry.base import BaseGeometry

from think2seg.errors import InputError
from think2seg.geo.regularize import regularized
from think2seg.geo.simplify import canonical_form, geometry_array, simplified

OUTLINES = ("pixel", "simplify", "smooth", "regularize")
"""``pixel`` exact pixel edges; ``simplify`` Douglas-Peucker, topology kept within and between
polygons; ``smooth`` staircase removed, then corners rounded (natural features: water, fields,
forest); ``regularize`` straight edges at right angles along the polygon's dominant direction
(buildings)."""

DEFAULT_TOLERANCE_PX = {"pixel": 0.0, "simplify": 1.0, "smooth": 1.0, "regularize": 1.5}
"""The ``tolerance_px`` each outline takes when none is given."""

AREA_TOLERANCE = 0.1
"""Largest relative change of a polygon's area (against its pixel area) a cleaned outline may
make; past it the polygon keeps its pixel outline."""

SMOOTH_ITERATIONS = 3
"""Rounds of Chaikin corner cutting in ``smooth``."""

SMOOTH_CUT = 2.0
"""In ``smooth``, a corner is cut at most ``SMOOTH_CUT * tolerance_px`` pixels along each edge."""


_CRUMB_PX2 = 1e-3  # parts smaller than this (px²) left over by cutting overlaps are dropped
_MITRE_LIMIT = 5.0  # GEOS's default: a mitre longer than this many offset distances is bevelled


def clean_outlines(
    polygons: np.ndarray, *, outline: str, tolerance_px: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Clean the outlines of ``polygons`` (an object array of N pixel-coordinate Polygons).

    ``outline`` is one of :data:`OUTLINES`; ``tolerance_px`` (pixels, >= 0; None takes
    :data:`DEFAULT_TOLERANCE_PX` of the outline) is how far an edge may move: the Douglas-Peucker
    distance of ``simplify`` and of the staircase removal before ``smooth`` and ``regularize``.
    ``pixel`` returns the polygons unchanged, as does a tolerance of 0.

    Returns ``(cleaned, index)``: an object array of M valid Polygons in pixel coordinates and an
    int array of M indices into ``polygons`` (each cleaned polygon's source, ascending; a source
    cut in two by a neighbour appears twice). See the module docstring for the guarantees.
    Raises :class:`InputError` for an unknown outline or a negative or non-finite tolerance.
    """
    tolerance = _checked(outline, tolerance_px)
    polygons = np.asarray(polygons, dtype=object)
    if outline == "pixel" or tolerance == 0 or not len(polygons):
        return polygons.copy(), np.arange(len(polygons))
    canonical, order = canonical_form(polygons)
    cleaned = _valid(_METHODS[outline](canonical, tolerance))
    cleaned = _separated(cleaned, canonical)
    cleaned, index = _within_area(cleaned, canonical)
    index = order[index]
    back = np.argsort(index, kind="stable")
    return cleaned[back], index[back]


def check_outline(outline: object) -> str:
    """``outline`` if it is one of :data:`OUTLINES`; an :class:`InputError` naming the choices."""
    if not isinstance(outline, str) or outline not in OUTLINES:
        raise InputError(f"outline must be one of {', '.join(OUTLINES)}, got {outline!r}")
    return outline


def _checked(outline: str, tolerance_px: float | None) -> float:
    """The tolerance to use; an :class:`InputError` naming the choices or the limit."""
    if outline not in OUTLINES:
        raise InputError(f"outline must be one of {', '.join(OUTLINES)}, got {outline!r}")
    if tolerance_px is None:
        return DEFAULT_TOLERANCE_PX[outline]
    if isinstance(tolerance_px, bool) or not isinstance(tolerance_px, (int, float)):
        raise InputError(f"tolerance_px must be a number >= 0 (pixels), got {tolerance_px!r}")
    if not math.isfinite(tolerance_px) or tolerance_px < 0:
        raise InputError(f"tolerance_px must be a number >= 0 (pixels), got {tolerance_px}")
    return float(tolerance_px)


# --- smooth -----------------------------------------------------------------------------------


def _smoothed(polygons: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Staircase removed (:func:`simplified`), each ring's corners cut (:func:`_chaikin`), then
    the outline offset by the one distance that gives back the pixel area (corner cutting shrinks
    convex shapes: a 10 x 10 square loses about 8%)."""
    rings, owner = shapely.get_rings(simplified(polygons, tolerance_px), return_index=True)
    xy, ring = _open_rings(rings)
    xy, ring = _chaikin(xy, ring, SMOOTH_CUT * tolerance_px)
    smooth = _valid(
        geometry_array(shapely.polygons(geometry_array(shapely.linearrings(xy, indices=ring)), indices=owner))
    )
    length = shapely.length(smooth)
    offset_px = (shapely.area(polygons) - shapely.area(smooth)) / np.where(length > 0, length, 1.0)
    return _offset(smooth, offset_px)


def _open_rings(rings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The corners of all ``rings`` ((n, 2), closing points left out) and each one's ring index."""
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    closing = np.append(ring[1:] != ring[:-1], True)
    return xy[~closing], ring[~closing]


def _next_corner(ring: np.ndarray) -> np.ndarray:
    """For corners grouped by ``ring`` (as :func:`_open_rings` gives them): the next one's index,
    the first corner of its ring after the last."""
    first = np.flatnonzero(np.append(True, ring[1:] != ring[:-1]))
    following = np.arange(1, len(ring) + 1)
    following[np.append(first[1:], len(ring)) - 1] = first
    return following


def _chaikin(xy: np.ndarray, ring: np.ndarray, cut_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Corners ``xy`` of rings ``ring`` (see :func:`_open_rings`) after :data:`SMOOTH_ITERATIONS`
    rounds of corner cutting: each edge gives the points a quarter of its length (at most
    ``cut_px``) from its ends. Corners are rounded, long straight edges stay straight."""
    for _ in range(SMOOTH_ITERATIONS):
        edge = xy[_next_corner(ring)] - xy
        length = np.hypot(edge[:, 0], edge[:, 1])[:, None]
        share = np.minimum(0.25, cut_px / np.maximum(length, 1e-12))
        xy = np.stack([xy + share * edge, xy + (1 - share) * edge], axis=1).reshape(-1, 2)
        ring = np.repeat(ring, 2)
    return xy, ring


def _offset(polygons: np.ndarray, distance_px: np.ndarray) -> np.ndarray:
    """Each polygon grown by ``distance_px`` (negative: shrunk), mitre joins.

    The buffer of a polygon is its shell's buffer less its holes' buffers by the opposite
    distance, so each ring is offset on its own, all at once (:func:`_mitred`): every corner
    moved along its mitre, at a fraction of the cost of GEOS's buffer on a polygon with thousands
    of holes. Where that does not give a valid Polygon (the offset closed a gap or a hole, or a
    corner is too sharp) GEOS's buffer decides, ring by ring.
    """
    result = np.asarray(polygons, dtype=object).copy()
    simple = (shapely.get_type_id(result) == shapely.GeometryType.POLYGON) & ~shapely.is_empty(result)
    index = np.flatnonzero(simple)
    rings, local = shapely.get_rings(result[simple], return_index=True)  # local: position in index
    shell = np.append(True, local[1:] != local[:-1])
    ring_distance = np.where(shell, 1.0, -1.0) * distance_px[index][local]
    moved, fine = _mitred(rings, ring_distance)
    joined = geometry_array(shapely.polygons(moved, indices=local))
    fine = (np.bincount(local, weights=~fine, minlength=len(index)) == 0) & shapely.is_valid(joined)
    result[index[fine]] = joined[fine]
    for k in np.flatnonzero(~fine):
        result[index[k]] = _offset_ring_by_ring(rings[local == k], ring_distance[local == k])
    rest = np.flatnonzero(~simple)
    result[rest] = shapely.buffer(result[rest], distance_px[rest], join_style="mitre")
    return result


def _offset_ring_by_ring(rings: np.ndarray, distance_px: np.ndarray) -> object:
    """The shell ``rings[0]`` grown by ``distance_px[0]`` less the holes ``rings[1:]`` grown by
    theirs (negative: the holes shrink as the polygon grows), GEOS's buffer where mitres fail."""
    moved, fine = _mitred(rings, distance_px)
    areas = geometry_array(shapely.polygons(moved))
    fine &= shapely.is_valid(areas)
    areas[~fine] = shapely.buffer(shapely.polygons(rings[~fine]), distance_px[~fine], join_style="mitre")
    return _less_holes(areas[0], areas[1:])


def _mitred(rings: np.ndarray, distance_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each ring with its edges moved ``distance_px`` away from the area it encloses (negative:
    into it), corners on the mitres, so each edge stays parallel to itself; and whether that
    worked (no repeated corner, no corner past :data:`_MITRE_LIMIT`, no edge turned around; the
    ring may still cross itself)."""
    xy, ring = _open_rings(rings)
    following = _next_corner(ring)
    edge = xy[following] - xy
    length = np.hypot(edge[:, 0], edge[:, 1])
    out = np.stack([edge[:, 1], -edge[:, 0]], axis=1) / np.maximum(length, 1e-12)[:, None]
    out *= np.where(shapely.is_ccw(rings), 1.0, -1.0)[ring, None]  # right of a counter-clockwise ring
    before = np.empty_like(out)
    before[following] = out  # the edge arriving at each corner
    cosine = 1 + (before * out).sum(axis=1)
    moved = xy + distance_px[ring, None] * (before + out) / np.maximum(cosine, 1e-12)[:, None]
    turned = (moved[following] - moved) * edge
    bad = (length <= 1e-12) | (cosine < 2 / _MITRE_LIMIT**2) | (turned.sum(axis=1) <= 0)
    fine = np.bincount(ring, weights=bad, minlength=len(rings)) == 0
    return shapely.linearrings(moved, indices=ring), fine


# --- regularize -------------------------------------------------------------------------------


def _valid(polygons: np.ndarray) -> np.ndarray:
    """``polygons`` with the invalid ones repaired: their shells unioned, their holes subtracted
    (GEOS ``make_valid`` "structure", which drops what collapsed to a line or point)."""
    polygons = np.array(polygons, dtype=object)
    invalid = ~shapely.is_valid(polygons)
    holed = invalid & (shapely.get_num_interior_rings(polygons) > 0)  # -1 for a non-Polygon
    for k in np.flatnonzero(holed):  # the same, with the holes no repair can touch set aside
        rings = shapely.get_rings(polygons[k])
        areas = shapely.make_valid(geometry_array(shapely.polygons(rings)), method="structure", keep_collapsed=False)
        plain = _plain_holes(areas[0], areas[1:])
        rest = shapely.make_valid(
            shapely.polygons(rings[0], holes=rings[1:][~plain]), method="structure", keep_collapsed=False
        )
        polygons[k] = _with_holes(rest, areas[1:][plain])
    rest = invalid & ~holed
    polygons[rest] = shapely.make_valid(polygons[rest], method="structure", keep_collapsed=False)
    return polygons


def _less_holes(shell: BaseGeometry, holes: np.ndarray) -> BaseGeometry:
    """The area ``shell`` less the areas ``holes``, the :func:`_plain_holes` set aside (a difference
    with the union of thousands of holes takes seconds)."""
    plain = _plain_holes(shell, holes)
    rest = holes[~plain]
    return _with_holes(shapely.difference(shell, shapely.union_all(rest)) if len(rest) else shell, holes[plain])


def _plain_holes(shell: BaseGeometry, holes: np.ndarray) -> np.ndarray:
    """Which ``holes`` (areas) are simple Polygons strictly inside the Polygon ``shell`` (an area)
    meeting no other hole: whatever is done with the rest, they are holes of the result."""
    plain = np.zeros(len(holes), dtype=bool)
    if not len(holes) or shapely.get_type_id(shell) != shapely.GeometryType.POLYGON:
        return plain
    plain = (shapely.get_type_id(holes) == shapely.GeometryType.POLYGON) & ~shapely.is_empty(holes)
    plain &= shapely.get_num_interior_rings(holes) == 0
    shapely.prepare(shell)  # this module's own object
    plain[plain] = shapely.contains_properly(shell, holes[plain])
    left, right = shapely.STRtree(holes).query(holes, predicate="intersects")
    plain[left[left != right]] = False
    return plain


def _with_holes(area: BaseGeometry, holes: np.ndarray) -> BaseGeometry:
    """``area`` (a Polygon or MultiPolygon) with each of ``holes`` (Polygons strictly inside it,
    meeting none of its holes) made a hole of the part it lies in; any that lies in none is
    subtracted."""
    if not len(holes):
        return area
    parts = shapely.get_parts(area)
    if len(parts) == 1:  # then each hole lies in it
        part, hole = np.zeros(len(holes), dtype=np.int64), np.arange(len(holes))
    else:
        part, hole = shapely.STRtree(holes).query(parts, predicate="contains_properly")  # parts prepared
    for k in np.unique(part):
        own = shapely.get_rings(parts[k])
        parts[k] = shapely.polygons(
            own[0], holes=np.concatenate([own[1:], shapely.get_exterior_ring(holes[hole[part == k]])])
        )
    lost = np.setdiff1d(np.arange(len(holes)), hole)
    whole: BaseGeometry = parts[0] if len(parts) == 1 else MultiPolygon(list(parts))
    return shapely.difference(whole, shapely.union_all(holes[lost])) if len(lost) else whole


def _separated(cleaned: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """``cleaned`` (one geometry per pixel polygon) with every overlap cut away.

    First no outline keeps any part of another polygon's pixels; then, where two outlines still
    share ground (background both moved into), the one with the lower index keeps it (the
    polygons are in :func:`~think2seg.geo.simplify.canonical_form`'s order, so which one that is
    depends on the shapes alone).
    """
    cleaned = cleaned.copy()
    for i, others in _overlapping(cleaned, pixels):
        cleaned[i] = _cut(cleaned[i], pixels[others])
    for i, others in _overlapping(cleaned, cleaned):
        earlier = others[others < i]
        if len(earlier):
            cleaned[i] = _cut(cleaned[i], cleaned[earlier])
    return cleaned


def _cut(geometry: BaseGeometry, cutters: np.ndarray) -> BaseGeometry:
    """``geometry`` less ``cutters``: the small ones unioned first, each one larger than
    ``geometry`` on its own (GEOS clips it to ``geometry``'s extent; a union would not)."""
    large = shapely.get_num_coordinates(cutters) > shapely.get_num_coordinates(geometry)
    if (~large).any():
        geometry = shapely.difference(geometry, shapely.union_all(cutters[~large]))
    for cutter in cutters[large]:
        geometry = shapely.difference(geometry, cutter)
    return geometry


def _overlapping(geometries: np.ndarray, others: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """For each ``geometries[i]`` whose interior meets that of some ``others[j]`` (j != i): (i, js).

    Candidates by bounding box, then by a test with the geometry with more vertices prepared (a
    huge polygon with thousands of holes then costs ``log n`` per neighbour, not ``n``): against
    its shell alone first (GEOS's test of two areas also looks for each ring of the prepared one
    inside the other, thousands of rings per neighbour), then whole; only the pairs that meet at
    all are related in full.
    """
    left, right = shapely.STRtree(others).query(geometries)
    pairs = left != right
    left, right = left[pairs], right[pairs]
    big_left = shapely.get_num_coordinates(geometries)[left] >= shapely.get_num_coordinates(others)[right]
    first = np.where(big_left, geometries[left], others[right])
    second = np.where(big_left, others[right], geometries[left])
    shell = np.where(big_left, _shells(geometries)[left], _shells(others)[right])
    fresh = first[~shapely.is_prepared(first)]
    shapely.prepare(fresh)
    try:
        meet = np.ones(len(first), dtype=bool)
        holed = ~shapely.is_missing(shell)
        meet[holed] = shapely.intersects(shell[holed], second[holed])
        meet[meet] = shapely.intersects(first[meet], second[meet])
        meet[meet] = shapely.relate_pattern(first[meet], second[meet], "T********")
    finally:
        shapely.destroy_prepared(fresh)  # the caller's polygons are left as they came
    left, right = left[meet], right[meet]  # left ascending: STRtree answers in query order
    starts = np.flatnonzero(np.append(True, left[1:] != left[:-1])) if len(left) else np.array([], dtype=np.int64)
    return [(int(left[k]), js) for k, js in zip(starts, np.split(right, starts[1:]))]


def _shells(geometries: np.ndarray) -> np.ndarray:
    """For each Polygon of ``geometries`` with holes, its shell as a prepared Polygon; else None."""
    shells = np.full(len(geometries), None, dtype=object)
    holed = (shapely.get_type_id(geometries) == shapely.GeometryType.POLYGON) & (
        shapely.get_num_interior_rings(geometries) > 0
    )
    shells[holed] = shapely.polygons(shapely.get_exterior_ring(geometries[holed]))
    shapely.prepare(shells[holed])
    return shells


def _within_area(cleaned: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The polygon parts of ``cleaned`` (crumbs dropped) with their source indices; a source whose
    parts do not keep its pixel area within :data:`AREA_TOLERANCE`, or has no parts, keeps its
    pixel outline (which no other result overlaps: :func:`_separated` cut every pixel polygon
    out of the others)."""
    parts, index = shapely.get_parts(cleaned, return_index=True)
    area = shapely.area(parts)
    keep = (shapely.get_type_id(parts) == shapely.GeometryType.POLYGON) & (area >= _CRUMB_PX2)
    parts, index, area = parts[keep], index[keep], area[keep]
    pixel_area = shapely.area(pixels)
    kept_area = np.bincount(index, weights=area, minlength=len(pixels))
    failed = np.abs(kept_area - pixel_area) > AREA_TOLERANCE * pixel_area
    fine = ~failed[index]
    parts = np.concatenate([parts[fine], pixels[failed]])
    index = np.concatenate([index[fine], np.flatnonzero(failed)])
    order = np.argsort(index, kind="stable")
    return parts[order], index[order]


_METHODS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "simplify": simplified,
    "smooth": _smoothed,
    "regularize": regularized,
}
