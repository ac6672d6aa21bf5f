"""A result as a GeoJSON FeatureCollection that says its CRS."""

from __future__ import annotations

import math
from typing import Any

from rasterio.crs import CRS
from shapely.geometry import mapping

from think2seg.result import SegmentationResult


def crs_member(crs: CRS | None) -> dict[str, Any] | None:
    """The (2008-style) named ``crs`` member: an OGC URN when the CRS has an authority code."""
    if crs is None:
        return None
    authority = crs.to_authority()
    if authority is None:
        return None
    name, code = authority
    return {"type": "name", "properties": {"name": f"urn:ogc:def:crs:{name}::{code}"}}


def to_feature_collection(result: SegmentationResult) -> dict[str, Any]:
    """Polygons as features (``area_m2``, the ``instance`` that produced each, its ``score``, its
    ``class``: the class name, or the question when the run names none),
    prompts under ``prompts`` (each with its instance's ``score``), plus the run's fields.

    Coordinates are in the raster's CRS (``crs``, and ``crs_wkt`` always), never reprojected.
    Unknown numbers (a score the segmenter did not predict) are null.
    """
    polygons = result.polygons
    name = result.class_name or result.question
    features = [
        {
            "type": "Feature",
            "geometry": mapping(geometry),
            "properties": {
                "area_m2": json_number(area),
                "instance": int(instance),
                "score": json_number(score),
                "class": name,
            },
        }
        for geometry, area, instance, score in zip(
            polygons.geometry, polygons["area_m2"], polygons["instance"], polygons["score"]
        )
    ]
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    member = crs_member(result.crs)
    if member is not None:
        collection["crs"] = member
    collection.update(
        crs_wkt=result.crs.to_wkt() if result.crs else None,
        question=result.question,
        status=result.status.value,
        message=result.message,
        reasoning=result.reasoning,
        raw_answer=result.raw_answer,
        model=result.model,
        segmenter=result.segmenter,
        created_at=result.created_at.isoformat(),
        total_area_m2=json_number(result.total_area_m2),
        notes=list(result.notes),
        timings_ms={k: round(v * 1000, 3) for k, v in result.timings_s.items()},
        prompts={"type": "FeatureCollection", "features": _prompt_features(result, name)},
    )
    return collection


def _prompt_features(result: SegmentationResult, name: str) -> list[dict[str, Any]]:
    features: list[dict[str, Any]] = []
    for instance in result.instances:
        if instance.box_map is not None:
            features.append(_feature(instance.box_map, instance.index, "box", instance.view.box_xyxy, instance.score))
        for k, point in enumerate(instance.points_map):
            view_xy = instance.view.points_xy[k] if instance.view.points_xy else None
            features.append(_feature(point, instance.index, "positive_point", view_xy, instance.score))
    for feature in features:
        feature["properties"]["class"] = name
    return features


def _feature(geometry: Any, index: int, kind: str, view: Any, score: float) -> dict[str, Any]:
    properties = {
        "instance": index,
        "kind": kind,
        "view_840": list(view) if view is not None else None,
        "score": json_number(score),
    }
    return {"type": "Feature", "geometry": mapping(geometry), "properties": properties}


def json_number(value: float) -> float | None:
    """``value`` for JSON: NaN (unknown) as null."""
    return None if math.isnan(value) else float(value)
