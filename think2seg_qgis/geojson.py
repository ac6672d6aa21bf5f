"""GeoJSON geometries from the API as WKT, which every QGIS version parses the same way."""

from __future__ import annotations


def _ring(coordinates: list) -> str:
    return "(" + ", ".join(f"{x!r} {y!r}" for x, y, *_ in coordinates) + ")"


def to_wkt(geometry: dict) -> str:
    """WKT of a GeoJSON Point, Polygon or MultiPolygon (full float precision)."""
    kind, coordinates = geometry["type"], geometry["coordinates"]
    if kind == "Point":
        x, y, *_ = coordinates
        return f"POINT ({x!r} {y!r})"
    if kind == "Polygon":
        return "POLYGON (" + ", ".join(_ring(r) for r in coordinates) + ")"
    if kind == "MultiPolygon":
        return "MULTIPOLYGON (" + ", ".join("(" + ", ".join(_ring(r) for r in p) + ")" for p in coordinates) + ")"
    raise ValueError(f"unexpected geometry type {kind}")
