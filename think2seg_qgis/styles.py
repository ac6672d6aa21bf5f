"""Looks of the plugin's layers: results coloured by run (one legend entry each, which the user can
untick to hide that run) or, once a run asked several classes, by class (one colour per class
across all runs); prompt boxes outlined, points as markers, batch tiles by status."""

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
CLASS_FIELD = "class"
CLASS_EXPRESSION = 'coalesce("class", "question", \'\')'
"""A polygon's class; rows saved before the class field have their run's question instead."""
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
        categorize(layer)
    else:
        layer.setRenderer(QgsSingleSymbolRenderer(_SYMBOLS[role]()))


def categorize(layer: QgsVectorLayer) -> None:
    """Style the results layer by class when one of its runs asked several classes, else by run.
    Called after every change, so classes and runs that arrive later get their own category."""
    runs = _classes_by_run(layer)
    if any(len(classes) > 1 for classes in runs.values()):
        categorize_classes(layer, list(dict.fromkeys(name for classes in runs.values() for name in classes)))
    else:
        categorize_runs(layer)


def categorize_classes(layer: QgsVectorLayer, names: list[str]) -> None:
    """One category per class of ``names`` (in the order the classes first arrived: a class keeps its
    colour as later runs add others), labelled with its name; a class the user hid stays hidden."""
    attribute = CLASS_EXPRESSION if layer.fields().indexOf("question") >= 0 else CLASS_FIELD
    hidden = _hidden(layer, attribute)
    categories = [
        QgsRendererCategory(name, fill(PALETTE[index % len(PALETTE)]), name or "(no class)", name not in hidden)
        for index, name in enumerate(names)
    ]
    layer.setRenderer(QgsCategorizedSymbolRenderer(attribute, categories))


def categorize_runs(layer: QgsVectorLayer) -> None:
    """One category per run (oldest first), labelled with its question and time; runs the user
    hid stay hidden."""
    hidden = _hidden(layer, "run_id")
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


def _hidden(layer: QgsVectorLayer, attribute: str) -> set:
    """The categories the user unticked, when the layer is categorized by ``attribute`` now."""
    old = layer.renderer()
    if not isinstance(old, QgsCategorizedSymbolRenderer) or old.classAttribute() != attribute:
        return set()
    return {category.value() for category in old.categories() if not category.renderState()}


def _classes_by_run(layer: QgsVectorLayer) -> dict[str, list[str]]:
    """The classes of every run (oldest run first, classes in the order they were saved)."""
    fields = layer.fields()
    names = [name for name in ("run_id", "question", "created_at", CLASS_FIELD) if fields.indexOf(name) >= 0]
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry)
    request.setSubsetOfAttributes(names, fields)
    runs: dict[str, tuple[str, dict[str, None]]] = {}
    has_class = CLASS_FIELD in names
    for feature in layer.getFeatures(request):
        created, classes = runs.setdefault(str(feature["run_id"]), (str(feature["created_at"] or ""), {}))
        name = (feature[CLASS_FIELD] if has_class else None) or feature["question"] or ""
        classes[str(name)] = None
    ordered = sorted(runs.items(), key=lambda item: item[1][0])
    return {run_id: list(classes) for run_id, (_created, classes) in ordered}


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
