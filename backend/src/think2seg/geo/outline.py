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
  pixels) mostly stay as they are.

Georeferencing comes after (:func:`think2seg.geo.vectorize.georeference`), so ``tolerance_px`` is
in pixels whatever the raster's CRS.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import shapely
from shapely.geometry import LinearRing, Polygon

from think2seg.errors import InputError

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

AXIS_SNAP_DEG = 1.5
"""In ``regularize``, a dominant direction this close to the pixel axes is taken as the axes: pixel
noise tilts the measured direction of an axis-aligned building by a fraction of a degree."""

_CRUMB_PX2 = 1e-3  # parts smaller than this (px²) left over by cutting overlaps are dropped


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
    cleaned = _valid(_METHODS[outline](polygons, tolerance))
    cleaned = _separated(cleaned, polygons)
    return _within_area(cleaned, polygons)


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


# --- simplify ---------------------------------------------------------------------------------


def _simplified(polygons: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Douglas-Peucker over all polygons at once, so no ring crosses its own or another's rings.

    GEOS's topology-preserving simplifier takes every ring of a collection into account (an
    island in a hole stays in the hole, neighbours one pixel apart stay apart) and never
    collapses a ring, so the collection's parts come back one for one.
    """
    collection = shapely.geometrycollections(list(polygons))
    simple = shapely.get_parts(shapely.simplify(collection, tolerance_px, preserve_topology=True))
    if len(simple) != len(polygons):  # GEOS keeps every part; anything else is a bug to report
        raise RuntimeError(f"simplification returned {len(simple)} polygons for {len(polygons)}")
    return simple


# --- smooth -----------------------------------------------------------------------------------


def _smoothed(polygons: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Staircase removed (:func:`_simplified`), each ring's corners cut (:func:`_chaikin`), then
    the outline offset by the one distance that gives back the pixel area (corner cutting shrinks
    convex shapes: a 10 x 10 square loses about 8%)."""
    cut_px = SMOOTH_CUT * tolerance_px
    smooth = _valid(
        np.array([_map_rings(p, lambda xy: _chaikin(xy, cut_px)) for p in _simplified(polygons, tolerance_px)])
    )
    length = shapely.length(smooth)
    offset_px = (shapely.area(polygons) - shapely.area(smooth)) / np.where(length > 0, length, 1.0)
    return shapely.buffer(smooth, offset_px, join_style="mitre")


def _chaikin(ring_xy: np.ndarray, cut_px: float) -> np.ndarray:
    """A closed ring ((n + 1, 2), first point repeated) after :data:`SMOOTH_ITERATIONS` rounds of
    corner cutting: each edge gives the points a quarter of its length (at most ``cut_px``) from
    its ends. Corners are rounded, long straight edges stay straight."""
    xy = ring_xy[:-1]
    for _ in range(SMOOTH_ITERATIONS):
        edge = np.roll(xy, -1, axis=0) - xy
        length = np.hypot(edge[:, 0], edge[:, 1])[:, None]
        share = np.minimum(0.25, cut_px / np.maximum(length, 1e-12))
        near, far = xy + share * edge, xy + (1 - share) * edge
        xy = np.stack([near, far], axis=1).reshape(-1, 2)
    return np.vstack([xy, xy[:1]])


# --- regularize -------------------------------------------------------------------------------


def _regularized(polygons: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Staircase removed (:func:`_simplified`), then every ring squared up along the polygon's
    dominant direction (:func:`_dominant_angle`): each edge becomes parallel or perpendicular to
    it, runs of parallel edges become one edge at their length-weighted offset, and jogs that step
    less than ``2 * tolerance_px`` are removed."""
    return np.array([_squared_polygon(p, 2 * tolerance_px) for p in _simplified(polygons, tolerance_px)], dtype=object)


def _squared_polygon(polygon: Polygon, min_run_px: float) -> Polygon:
    """``polygon`` with every ring squared up (:func:`_squared`) along its exterior's direction."""
    angle = _dominant_angle(np.asarray(polygon.exterior.coords))
    return _map_rings(polygon, lambda xy: _squared(xy, angle, min_run_px))


def _dominant_angle(ring_xy: np.ndarray) -> float:
    """The ring's dominant edge direction in radians, modulo 90°: the length-weighted circular mean
    of the edge angles taken four times (so 0°, 90°, 180° and 270° count as one direction), in
    (-45°, 45°]; 0 within :data:`AXIS_SNAP_DEG` of the axes."""
    edge = np.diff(ring_xy, axis=0)
    length = np.hypot(edge[:, 0], edge[:, 1])
    four = 4 * np.arctan2(edge[:, 1], edge[:, 0])
    angle = float(np.arctan2((length * np.sin(four)).sum(), (length * np.cos(four)).sum()) / 4)
    return 0.0 if abs(math.degrees(angle)) < AXIS_SNAP_DEG else angle


def _squared(ring_xy: np.ndarray, angle: float, min_run_px: float) -> np.ndarray:
    """A closed ring with right angles only, its edges at ``angle`` (radians) or perpendicular.

    In a frame rotated by ``-angle`` each edge is horizontal or vertical (whichever is nearer);
    consecutive edges of one kind form a run, which becomes one line at the run's length-weighted
    mean offset; a run stepping less than ``min_run_px`` between two runs of the other kind is merged
    into them. The corners are where consecutive lines meet. A ring left with fewer than four runs
    (a sliver) is returned as it was.
    """
    cos, sin = math.cos(angle), math.sin(angle)
    turn = np.array([[cos, sin], [-sin, cos]])  # xy @ turn.T turns by -angle, xy @ turn back
    xy = ring_xy @ turn.T
    runs = _runs(xy, min_run_px)
    if len(runs) < 4:
        return ring_xy
    corners = []
    for (kind, offset), (_next_kind, next_offset) in zip(runs, runs[1:] + runs[:1]):
        corners.append((next_offset, offset) if kind == "h" else (offset, next_offset))
    square = np.array(corners + corners[:1], dtype=np.float64)
    return square @ turn


def _runs(xy: np.ndarray, min_run_px: float) -> list[tuple[str, float]]:
    """Alternating ``("h", y)`` / ``("v", x)`` lines of a ring in its rotated frame (see :func:`_squared`)."""
    edge = np.diff(xy, axis=0)
    middle = (xy[:-1] + xy[1:]) / 2
    horizontal = np.abs(edge[:, 0]) >= np.abs(edge[:, 1])
    length = np.hypot(edge[:, 0], edge[:, 1])
    # [kind, length, length-weighted offset sum, signed extent along the kind], cyclic
    runs: list[list] = []
    for is_h, size, mid, step in zip(horizontal, length, middle, edge):
        kind, offset, along = ("h", mid[1], step[0]) if is_h else ("v", mid[0], step[1])
        if runs and runs[-1][0] == kind:
            _absorb(runs[-1], [kind, size, size * offset, along])
        else:
            runs.append([kind, size, size * offset, along])
    if len(runs) > 1 and runs[0][0] == runs[-1][0]:
        _absorb(runs[0], runs.pop())
    _drop_jogs(runs, min_run_px)
    return [(kind, total / size if size else total) for kind, size, total, _along in runs]


def _absorb(run: list, other: list) -> None:
    """Add ``other`` (a run of the same kind) to ``run``."""
    run[1] += other[1]
    run[2] += other[2]
    run[3] += other[3]


def _drop_jogs(runs: list[list], min_run_px: float) -> None:
    """Merge each run whose extent is under ``min_run_px`` (smallest first; a zigzag's extent is
    its net step) with its two neighbours, while more than four runs are left; ``runs`` alternate
    in kind, so the neighbours share one."""
    while len(runs) > 4:
        smallest = min(range(len(runs)), key=lambda k: abs(runs[k][3]))
        if abs(runs[smallest][3]) >= min_run_px:
            return
        before, after = (smallest - 1) % len(runs), (smallest + 1) % len(runs)
        _absorb(runs[before], runs[after])
        for k in sorted({smallest, after}, reverse=True):
            del runs[k]


# --- shared steps -----------------------------------------------------------------------------


def _map_rings(polygon: Polygon, change: Callable[[np.ndarray], np.ndarray]) -> Polygon:
    """``polygon`` with ``change`` applied to the coordinates ((n + 1, 2)) of each of its rings."""
    shell = LinearRing(change(np.asarray(polygon.exterior.coords)))
    holes = [LinearRing(change(np.asarray(ring.coords))) for ring in polygon.interiors]
    return Polygon(shell, holes)


def _valid(polygons: np.ndarray) -> np.ndarray:
    """``polygons`` with the invalid ones repaired: their shells unioned, their holes subtracted
    (GEOS ``make_valid`` "structure", which drops what collapsed to a line or point)."""
    polygons = np.array(polygons, dtype=object)
    invalid = ~shapely.is_valid(polygons)
    if invalid.any():
        polygons[invalid] = shapely.make_valid(polygons[invalid], method="structure", keep_collapsed=False)
    return polygons


def _separated(cleaned: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """``cleaned`` (one geometry per pixel polygon) with every overlap cut away.

    First no outline keeps any part of another polygon's pixels; then, where two outlines still
    share ground (background both moved into), the one with the lower index keeps it.
    """
    cleaned = cleaned.copy()
    for i, others in _overlapping(cleaned, pixels):
        cleaned[i] = shapely.difference(cleaned[i], shapely.union_all(pixels[others]))
    for i, others in _overlapping(cleaned, cleaned):
        earlier = others[others < i]
        if len(earlier):
            cleaned[i] = shapely.difference(cleaned[i], shapely.union_all(cleaned[earlier]))
    return cleaned


def _overlapping(geometries: np.ndarray, others: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """For each ``geometries[i]`` whose interior meets that of some ``others[j]`` (j != i): (i, js)."""
    left, right = shapely.STRtree(others).query(geometries, predicate="intersects")
    pairs = left != right
    left, right = left[pairs], right[pairs]
    inside = shapely.relate_pattern(geometries[left], others[right], "T********")
    left, right = left[inside], right[inside]
    return [(int(i), right[left == i]) for i in np.unique(left)]


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
    "simplify": _simplified,
    "smooth": _smoothed,
    "regularize": _regularized,
}
