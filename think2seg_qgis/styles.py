"""Looks of the plugin's layers: results coloured by run (one legend entry each, which the user can
untick to hide that run), prompt boxes outlined, points as markers, batch tiles by status."""

from __future__ import annotations

from datetime import datetime

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFeatureRequest,
    QgsFillSymbol,
    QgsMarkerSymbol,
    QgsRendererCategory,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)

# A qualitative palette (ColorBrewer Set1/Dark2 mix) so that neighbouring runs differ clearly.
PALETTE = ["228,26,28", "55,126,184", "77,175,74", "152,78,163", "255,127,0", "166,86,40", "247,129,191", "27,158,119"]
TILE_STATES = {
    "ok": ("77,175,74", "ok"),
    "no_target": ("160,160,160", "no target"),
    "no_data": ("210,210,210", "no data"),
    "unparseable": ("255,127,0", "answer unreadable"),
    "failed": ("228,26,28", "failed"),
}

_SYMBOLS = {
    "boxes": lambda: QgsFillSymbol.createSimple(
        {"color": "0,0,0,0", "outline_color": "30,120,255,255", "outline_width": "0.6", "outline_style": "dash"}
    ),
    "points": lambda: QgsMarkerSymbol.createSimple(
        {"name": "circle", "color": "40,200,60,255", "outline_color": "255,255,255,255", "size": "2.6"}
    ),
}


def fill(rgb: str, *, alpha: int = 90, outline_width_mm: float = 0.5) -> QgsFillSymbol:
    return QgsFillSymbol.createSimple(
        {"color": f"{rgb},{alpha}", "outline_color": f"{rgb},255", "outline_width": str(outline_width_mm)}
    )


def apply(layer: QgsVectorLayer, role: str) -> None:
    if role == "results":
        categorize_runs(layer)
    else:
        layer.setRenderer(QgsSingleSymbolRenderer(_SYMBOLS[role]()))


def categorize_runs(layer: QgsVectorLayer) -> None:
    """One category per run (oldest first), labelled with its question and time; runs the user
    hid stay hidden."""
    old = layer.renderer()
    hidden = set()
    if isinstance(old, QgsCategorizedSymbolRenderer):
        hidden = {category.value() for category in old.categories() if not category.renderState()}
    categories = []
    for index, (run_id, label) in enumerate(_runs(layer)):
        category = QgsRendererCategory(run_id, fill(PALETTE[index % len(PALETTE)]), label, run_id not in hidden)
        categories.append(category)
    layer.setRenderer(QgsCategorizedSymbolRenderer("run_id", categories))


def style_tiles(layer: QgsVectorLayer) -> None:
    """A batch run's tiles by status: outlines only, so the segments stay visible."""
    categories = [
        QgsRendererCategory(state, fill(rgb, alpha=0, outline_width_mm=0.4), label)
        for state, (rgb, label) in TILE_STATES.items()
    ]
    layer.setRenderer(QgsCategorizedSymbolRenderer("status", categories))


def _runs(layer: QgsVectorLayer) -> list[tuple[str, str]]:
    """(run_id, label) of every run in the layer, oldest first."""
    fields = layer.fields()
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry)
    request.setSubsetOfAttributes(["run_id", "question", "created_at"], fields)
    runs: dict[str, tuple[str, str]] = {}
    for feature in layer.getFeatures(request):
        run_id = str(feature["run_id"])
        if run_id not in runs:
            runs[run_id] = (str(feature["created_at"] or ""), str(feature["question"] or "re-segment"))
    ordered = sorted(runs.items(), key=lambda item: item[1][0])
    return [(run_id, f"{question} · {_clock(created)}") for run_id, (created, question) in ordered]


def _clock(created_at: str) -> str:
    try:
        return datetime.fromisoformat(created_at).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return created_at or "?"
