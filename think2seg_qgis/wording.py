"""Counts and areas as the panel writes them."""

from __future__ import annotations


def plural(count: int, word: str, many: str = "") -> str:
    """“1 polygon”, “2,345 polygons”."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def area_text(area_m2: float) -> str:
    if area_m2 >= 1e6:
        return f"{area_m2 / 1e6:,.3f} km²"
    if area_m2 >= 1e4:
        return f"{area_m2 / 1e4:,.2f} ha"
    return f"{area_m2:,.1f} m²"
