"""The ``regularize`` outline: buildings squared up along their dominant direction, in pixel space
(see :mod:`think2seg.geo.outline` for the guarantees every outline keeps)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from shapely.geometry import LinearRing, Polygon

from think2seg.geo.simplify import simplified

AXIS_SNAP_DEG = 1.5
"""In ``regularize``, a dominant direction this close to the pixel axes is taken as the axes: pixel
noise tilts the measured direction of an axis-aligned building by a fraction of a degree."""


def regularized(polygons: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Staircase removed (:func:`simplified`), then every ring squared up along the polygon's
    dominant direction (:func:`_dominant_angle`): each edge becomes parallel or perpendicular to
    it, runs of parallel edges become one edge at their length-weighted offset, and jogs that step
    less than ``2 * tolerance_px`` are removed."""
    return np.array([_squared_polygon(p, 2 * tolerance_px) for p in simplified(polygons, tolerance_px)], dtype=object)


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
