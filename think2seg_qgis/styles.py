"""Default looks of the plugin's layers: results filled, prompt boxes outlined, points as markers."""

from __future__ import annotations

from qgis.core import QgsFillSymbol, QgsMarkerSymbol, QgsSingleSymbolRenderer, QgsVectorLayer

_SYMBOLS = {
    "results": lambda: QgsFillSymbol.createSimple(
        {"color": "255,140,0,90", "outline_color": "200,80,0,255", "outline_width": "0.5"}
    ),
    "boxes": lambda: QgsFillSymbol.createSimple(
        {"color": "0,0,0,0", "outline_color": "30,120,255,255", "outline_width": "0.6", "outline_style": "dash"}
    ),
    "points": lambda: QgsMarkerSymbol.createSimple(
        {"name": "circle", "color": "40,200,60,255", "outline_color": "255,255,255,255", "size": "2.6"}
    ),
}


def apply(layer: QgsVectorLayer, role: str) -> None:
    layer.setRenderer(QgsSingleSymbolRenderer(_SYMBOLS[role]()))
