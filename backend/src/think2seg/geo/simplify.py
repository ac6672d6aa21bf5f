"""Douglas-Peucker over many pixel-coordinate polygons at once, keeping their topology.

GEOS keeps topology across a whole collection by checking every simplified section against every
ring in it, which is quadratic (one polygon with thousands of holes takes tens of seconds). Here
each ring is simplified on its own, then only the pairs of rings within twice the tolerance of each
other are checked against how they related before (nested, apart, touching); where a pair differs,
the original vertices of the simplified edges near the other ring are put back, and the changed
pairs are checked again. A simplified edge stays within one tolerance of its original, so an edge
farther than twice the tolerance from another ring cannot cross it: the repair terminates.

Douglas-Peucker keeps a ring's first vertex and splits at its farthest one, so its result depends
on where each ring starts and on collinear vertices; :func:`canonical_form` takes both away, and
puts the polygons in an order given by their shapes alone, for whatever decides between neighbours.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import LinearRing
from shapely.geometry.base import BaseGeometry


def simplified(polygons: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Douglas-Peucker ring by ring, then untangled, so no ring crosses its own or another's rings.

    GEOS's topology-preserving simplifier keeps each ring simple and never collapses one (a ring
    keeps at least three corners), so every polygon comes back with all its holes. Run on one ring
    at a time it is fast (over a whole collection it compares every flattened section with every
    ring: minutes for a speckled mask); :func:`_untangled` then puts back the original vertices
    where two simplified rings would cross, gain a contact or change sides (an island in a hole
    stays in the hole, neighbours one pixel apart stay apart).
    """
    rings, owner = shapely.get_rings(polygons, return_index=True)
    simple = shapely.simplify(rings, tolerance_px, preserve_topology=True)
    simple = _untangled(rings, simple, owner, reach_px=2 * tolerance_px * (1 + 1e-9) + 1e-9)
    return geometry_array(shapely.polygons(simple, indices=owner))


def canonical_form(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``polygons`` (N pixel-coordinate Polygons) in a form and an order given by their shapes
    alone: ``(canonical, order)``, where ``canonical[k]`` is ``polygons[order[k]]`` without its
    collinear vertices (stitching across a tile seam leaves some), normalized (each ring starts at
    its smallest corner, x then y, and runs GEOS's way; holes sorted), sorted by bounds, then WKB.

    So whatever is computed from ``canonical`` is the same whatever order the caller gives the
    polygons in and wherever their rings start: ``batch`` (objects stitched across seams) and
    ``segment`` (a window vectorized whole) give the same shapes, differently written.
    """
    canonical = shapely.normalize(shapely.simplify(polygons, 0.0, preserve_topology=False))
    # GEOS makes a simplified area valid; one that would not be the same polygon keeps its vertices
    changed = (shapely.get_type_id(canonical) != shapely.GeometryType.POLYGON) | ~np.isclose(
        shapely.area(canonical), shapely.area(polygons), rtol=1e-12, atol=0.0
    )
    canonical[changed] = shapely.normalize(polygons[changed])
    bounds, wkb = shapely.bounds(canonical).tolist(), shapely.to_wkb(canonical)
    order = np.array(sorted(range(len(canonical)), key=lambda k: (bounds[k], wkb[k])), dtype=np.int64)
    return canonical[order], order


def _untangled(rings: np.ndarray, simple: np.ndarray, owner: np.ndarray, *, reach_px: float) -> np.ndarray:
    """``simple`` (``rings`` simplified one by one, each edge a chord within ``reach_px / 2`` of
    the part of its ring it replaces) with sections put back until every pair of rings relates as
    the original pair did (:func:`_tangled`).

    Rings farther apart than ``reach_px`` cannot meet, so only nearer pairs are checked. A tangled
    pair gets back the original sections of every chord that comes within ``reach_px`` of the other
    original ring; then the two cannot meet or swap sides any more (each chord left is more than
    ``reach_px`` from the other original and the other ring is within ``reach_px / 2`` of it), but
    a put-back section may tangle with a third ring, so pairs are checked again until none is.
    """
    pairs = _near_pairs(rings, reach_px)
    before = _Relations.of(rings, owner, pairs)
    current, check = simple.copy(), np.ones(len(pairs[0]), dtype=bool)
    while check.any():
        bad = np.zeros(len(check), dtype=bool)
        bad[check] = _tangled(current, before, check)
        if not bad.any():
            break
        changed = _put_back(rings, current, pairs[0][bad], pairs[1][bad], reach_px)
        if not changed.any():  # a tangled pair always has a chord to put back: a bug to report
            raise RuntimeError("untangling simplified rings made no progress")
        check = changed[pairs[0]] | changed[pairs[1]]
    return current


class _Relations:
    """How the rings of each near pair (left, right) relate: nested either way, and (for rings of
    one polygon) whether and where they touch."""

    def __init__(self, left: np.ndarray, right: np.ndarray, owner: np.ndarray) -> None:
        self.left, self.right = left, right
        self.same = owner[left] == owner[right]
        self.left_holds = np.zeros(len(left), dtype=bool)
        self.right_holds = np.zeros(len(left), dtype=bool)
        self.touch = np.zeros(len(left), dtype=bool)
        self.contact = np.full(len(left), None, dtype=object)

    @classmethod
    def of(cls, rings: np.ndarray, owner: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]) -> _Relations:
        relations = cls(*pairs, owner)
        left, right = pairs
        areas = _prepared(geometry_array(shapely.polygons(rings)))
        relations.left_holds = shapely.covers(areas[left], areas[right])
        relations.right_holds = shapely.covers(areas[right], areas[left])
        same = np.flatnonzero(relations.same)
        relations.touch[same] = _meet(rings, left[same], right[same])
        touching = same[relations.touch[same]]
        relations.contact[touching] = shapely.intersection(rings[left[touching]], rings[right[touching]])
        return relations


def _tangled(current: np.ndarray, before: _Relations, check: np.ndarray) -> np.ndarray:
    """For the pairs of ``before`` selected by ``check``: whether the ``current`` rings relate
    otherwise than the original ones (nesting changed, interiors meet, or rings of one polygon meet
    where they did not)."""
    left, right = before.left[check], before.right[check]
    left_holds, right_holds = before.left_holds[check], before.right_holds[check]
    areas = _prepared(geometry_array(shapely.polygons(current)))
    bad = np.zeros(len(left), dtype=bool)
    bad[left_holds] = ~shapely.covers(areas[left[left_holds]], areas[right[left_holds]])
    bad[right_holds] = ~shapely.covers(areas[right[right_holds]], areas[left[right_holds]])
    apart = ~(left_holds | right_holds)
    first, second = _larger_first(areas, left[apart], right[apart])
    bad[apart] = shapely.relate_pattern(areas[first], areas[second], "T********")
    same = np.flatnonzero(before.same[check] & ~bad)
    meet = _meet(_prepared(current), left[same], right[same])
    touch = before.touch[check][same]
    bad[same[meet & ~touch]] = True
    both = same[meet & touch]
    now = shapely.intersection(current[left[both]], current[right[both]])
    bad[both] = ~shapely.covers(before.contact[check][both], now)
    return bad


def _put_back(
    rings: np.ndarray, current: np.ndarray, left: np.ndarray, right: np.ndarray, reach_px: float
) -> np.ndarray:
    """Give ``current[i]`` back the original sections of its chords within ``reach_px`` of the
    original of any ring it is paired with (in place); whether each ring gained vertices."""
    changed = np.zeros(len(rings), dtype=bool)
    ring_of, partner = np.concatenate([left, right]), np.concatenate([right, left])
    order = np.argsort(ring_of, kind="stable")
    ring_of, partner = ring_of[order], partner[order]
    starts = np.flatnonzero(np.append(True, ring_of[1:] != ring_of[:-1]))
    for i, partners in zip(ring_of[starts], np.split(partner, starts[1:])):
        obstacles = shapely.multilinestrings(list(rings[partners]))
        shapely.prepare(obstacles)
        restored = _restored(rings[i], current[i], obstacles, reach_px)
        changed[i] = shapely.get_num_coordinates(restored) > shapely.get_num_coordinates(current[i])
        current[i] = restored
    return changed


def _restored(original: LinearRing, simple: LinearRing, obstacles: BaseGeometry, reach_px: float) -> LinearRing:
    """``simple`` (whose corners are corners of ``original``) with each chord that comes within
    ``reach_px`` of ``obstacles`` replaced by the run of ``original`` it cut short."""
    xy = shapely.get_coordinates(original)[:-1]
    now = shapely.get_coordinates(simple)
    position = {point: k for k, point in enumerate(map(tuple, xy))}
    start = np.array([position[point] for point in map(tuple, now[:-1])])
    chords = shapely.linestrings(np.stack([now[:-1], now[1:]], axis=1))
    near = shapely.dwithin(obstacles, geometry_array(chords), reach_px)
    span = np.where(near, (np.roll(start, -1) - start) % len(xy), 1)
    offset = np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span)
    index = (np.repeat(start, span) + offset) % len(xy)
    return LinearRing(xy[np.append(index, index[0])])


def _near_pairs(geometries: np.ndarray, distance_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of ``geometries`` at most ``distance_px`` apart: candidates by their
    grown bounding boxes, then tested with the one with more vertices prepared."""
    xmin, ymin, xmax, ymax = shapely.bounds(geometries).T
    grown = shapely.box(xmin - distance_px, ymin - distance_px, xmax + distance_px, ymax + distance_px)
    left, right = shapely.STRtree(geometries).query(grown)
    keep = left < right
    left, right = left[keep], right[keep]
    first, second = _larger_first(geometries, left, right)
    prepared = _prepared(geometries)
    near = shapely.dwithin(prepared[first], prepared[second], distance_px)
    return left[near], right[near]


def _meet(geometries: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Whether ``geometries[left]`` and ``geometries[right]`` intersect, element by element."""
    first, second = _larger_first(geometries, left, right)
    return shapely.intersects(_prepared(geometries[first]), geometries[second])


def _larger_first(geometries: np.ndarray, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(left, right)`` swapped pair by pair so the geometry with more vertices comes first (the
    one GEOS prepares: a huge polygon then costs ``log n`` per test instead of ``n``)."""
    counts = shapely.get_num_coordinates(geometries)
    swap = counts[left] < counts[right]
    return np.where(swap, right, left), np.where(swap, left, right)


def geometry_array(geometries: object) -> np.ndarray:
    """``geometries`` (what a vectorized shapely function returned for an array) as an object array."""
    return np.asarray(geometries, dtype=object)


def _prepared(geometries: np.ndarray) -> np.ndarray:
    """``geometries`` (this module's own objects) prepared for repeated predicates, in place."""
    shapely.prepare(geometries)
    return geometries
