"""Prompts for re-segmenting: the boxes and points in the prompt layers, edited or drawn by the user,
grouped by instance, in the raster layer's CRS."""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureRequest,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.gui import QgsMapCanvas, QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtGui import QColor

from . import compat
from .results import ResultStore

DRAWN = "drawn"


def collect(store: ResultStore, layer: QgsRasterLayer) -> list[dict]:
    """Prompts of the newest run (or of the selected features), plus the ones drawn by hand."""
    layers = store.layers(layer.crs())
    boxes, points = layers["boxes"], layers["points"]
    chosen = [f for lyr in (boxes, points) for f in lyr.selectedFeatures()]
    runs = {f["run_id"] for f in chosen} or {_newest_run(boxes, points)} | {DRAWN}
    grouped: dict[tuple[str, int], dict] = {}
    for feature in boxes.getFeatures(_runs_filter(runs)):
        bbox = feature.geometry().boundingBox()
        entry = grouped.setdefault((feature["run_id"], feature["instance"]), {})
        entry["box"] = [bbox.xMinimum(), bbox.yMinimum(), bbox.xMaximum(), bbox.yMaximum()]
    for feature in points.getFeatures(_runs_filter(runs)):
        point = feature.geometry().asPoint()
        grouped.setdefault((feature["run_id"], feature["instance"]), {}).setdefault("points", []).append(
            [point.x(), point.y()]
        )
    prompts = []
    for entry in grouped.values():
        if "points" in entry and len(entry["points"]) != 2:
            entry.pop("points")  # the model takes exactly two points per instance
        if entry:
            prompts.append(entry)
    return prompts


def _newest_run(*layers) -> str:  # noqa: ANN002
    newest, run = "", ""
    for layer in layers:
        for feature in layer.getFeatures():
            if feature["run_id"] != DRAWN and str(feature["created_at"]) >= newest:
                newest, run = str(feature["created_at"]), feature["run_id"]
    return run


def _runs_filter(runs: set[str]) -> QgsFeatureRequest:
    quoted = ",".join("'" + r.replace("'", "''") + "'" for r in runs if r)
    return QgsFeatureRequest().setFilterExpression(f'"run_id" IN ({quoted})')


class PromptTool(QgsMapTool):
    """Drag a box, or click points, on the map; each ends up in the prompt layers as a drawn prompt."""

    drawn = pyqtSignal()

    def __init__(self, canvas: QgsMapCanvas, store: ResultStore, layer_getter, kind: str) -> None:  # noqa: ANN001
        super().__init__(canvas)
        self.store, self.layer_getter, self.kind = store, layer_getter, kind
        self.start: QgsPointXY | None = None
        self.band = QgsRubberBand(canvas, compat.GEOMETRY_POLYGON)
        self.band.setColor(QColor(30, 120, 255, 80))

    def canvasPressEvent(self, event) -> None:  # noqa: ANN001, N802
        self.start = self.toMapCoordinates(event.pos())

    def canvasMoveEvent(self, event) -> None:  # noqa: ANN001, N802
        if self.kind == "box" and self.start is not None:
            rectangle = QgsRectangle(self.start, self.toMapCoordinates(event.pos()))
            self.band.setToGeometry(QgsGeometry.fromRect(rectangle), None)

    def canvasReleaseEvent(self, event) -> None:  # noqa: ANN001, N802
        end = self.toMapCoordinates(event.pos())
        layer = self.layer_getter()
        if layer is None or self.start is None:
            return
        to_layer = QgsCoordinateTransform(
            self.canvas().mapSettings().destinationCrs(), layer.crs(), QgsProject.instance()
        )
        if self.kind == "box":
            geometry = QgsGeometry.fromRect(to_layer.transformBoundingBox(QgsRectangle(self.start, end)))
        else:
            geometry = QgsGeometry.fromPointXY(to_layer.transform(end))
        add_drawn(self.store, layer, self.kind, geometry)
        self.band.reset()
        self.start = None
        self.drawn.emit()


def add_drawn(store: ResultStore, layer: QgsRasterLayer, kind: str, geometry: QgsGeometry) -> None:
    """Add a hand-drawn box or point (in the raster's CRS) to the run 'drawn'.

    Each drawn box starts a new instance; drawn points join the newest drawn box (two per instance).
    """
    layers = store.layers(layer.crs())
    drawn_boxes = [f["instance"] for f in layers["boxes"].getFeatures(_runs_filter({DRAWN}))]
    instance = len(drawn_boxes) if kind == "box" else max(drawn_boxes, default=0)
    target = layers["boxes" if kind == "box" else "points"]
    feature = QgsFeature(target.fields())
    feature.setGeometry(geometry)
    feature.setAttribute("run_id", DRAWN)
    feature.setAttribute("instance", instance)
    feature.setAttribute("question", "drawn by hand")
    if kind == "point":
        feature.setAttribute("point", sum(1 for _ in target.getFeatures(_runs_filter({DRAWN}))))
    target.dataProvider().addFeatures([feature])
    target.triggerRepaint()
