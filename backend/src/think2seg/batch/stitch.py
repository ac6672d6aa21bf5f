"""Merge the pieces of objects that cross tile seams into one polygon each.

Every tile vectorizes only its core, in whole-pixel coordinates of the raster; the caller passes
the seam pieces in those coordinates (see ``finalize``), where two pieces that meet across a seam
share their seam edges exactly whatever the geotransform. Pieces that share an edge of positive
length are parts of one 4-connected object and are unioned; pieces that only touch at a corner
stay separate, as in a single-pass vectorization. A merged object's score is the area-weighted mean
of its pieces' scores (each piece's is the SAM score of the instance that produced it in its tile),
over the pieces whose score is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import Polygon


@dataclass(frozen=True)
class Stitched:
    """A merged object, how many tiles it spans, and its score (NaN: unknown)."""

    geometry: Polygon
    tiles: int
    score: float = float("nan")


def merge_seam_pieces(
    geometries: Sequence[Polygon], tile_ids: Sequence[int], scores: Sequence[float] | np.ndarray | None = None
) -> list[Stitched]:
    """Union the pieces that share an edge (transitively); ``tile_ids[i]`` owns ``geometries[i]``,
    whose score is ``scores[i]`` (NaN or None: unknown)."""
    if not len(geometries):
        return []
    parts = np.asarray(geometries, dtype=object)
    owners = np.asarray(tile_ids)
    known = np.asarray(scores if scores is not None else np.full(len(parts), np.nan), dtype=np.float64)
    tree = shapely.STRtree(parts)
    left, right = tree.query(parts, predicate="intersects")
    pairs = (left < right) & (owners[left] != owners[right])
    left, right = left[pairs], right[pairs]
    shared = shapely.length(shapely.intersection(parts[left], parts[right])) > 0
    groups = _components(len(parts), left[shared], right[shared])
    merged: list[Stitched] = []
    for members in groups:
        union = shapely.union_all(parts[members]) if len(members) > 1 else parts[members[0]]
        spans = len(set(owners[members].tolist()))
        score = area_weighted(known[members], shapely.area(parts[members]))
        merged.extend(Stitched(polygon, spans, score) for polygon in _polygons(union))
    return merged


def area_weighted(scores: np.ndarray, areas: np.ndarray) -> float:
    """The mean of the known (non-NaN) ``scores`` weighted by ``areas``; NaN when none is known."""
    known = ~np.isnan(scores)
    if not known.any() or areas[known].sum() <= 0:
        return float("nan")
    return float(np.average(scores[known], weights=areas[known]))


def _components(count: int, left: np.ndarray, right: np.ndarray) -> list[list[int]]:
    """Connected components of the graph with ``count`` nodes and edges (left[k], right[k])."""
    parent = list(range(count))

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in zip(left.tolist(), right.tolist()):
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)
    groups: dict[int, list[int]] = {}
    for node in range(count):
        groups.setdefault(find(node), []).append(node)
    return list(groups.values())


def _polygons(geometry: shapely.Geometry) -> list[Polygon]:
    parts = shapely.get_parts(geometry)
    return [p for p in parts if isinstance(p, Polygon) and not p.is_empty]
