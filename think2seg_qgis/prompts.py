"""Prompts for re-segmenting: the boxes and points in the prompt layers, edited or drawn by the user,
grouped by instance, in the raster layer's CRS.

Hand-drawn prompts belong to the run "drawn" until a re-segment sends them: when its reply is saved,
they are replaced by the reply's prompts (one undo step, see :class:`~.results.AddRunCommand`), so
they are never sent twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
from .errors import PromptError, ResultsError
from .log import guard_slot
from .results import Replaced, ResultStore

DRAWN = "drawn"
MIN_DRAG_PX = 4  # a box needs a drag of at least this many screen pixels each way


@dataclass
class PromptSet:
    """What a re-segment sends: ``prompts`` (``box`` [xmin, ymin, xmax, ymax] and/or two ``points``
    [[x, y], [x, y]], in map units of the raster's CRS), and ``drawn``: the hand-drawn features among
    them, which the re-segment's reply replaces when it is saved."""

    prompts: list[dict]
    drawn: Replaced


@dataclass
class _Instance:
    box: QgsFeature | None = None
    points: list[QgsFeature] = field(default_factory=list)

    def prompt(self) -> tuple[dict, list[tuple[str, QgsFeature]]]:
        """The prompt for the API and the features it is made of (points only when exactly two)."""
        prompt, used = {}, []
        if self.box is not None:
            bbox = self.box.geometry().boundingBox()
            prompt["box"] = [bbox.xMinimum(), bbox.yMinimum(), bbox.xMaximum(), bbox.yMaximum()]
            used.append(("boxes", self.box))
        if len(self.points) == 2:  # the model takes exactly two points per instance
            prompt["points"] = [[p.geometry().asPoint().x(), p.geometry().asPoint().y()] for p in self.points]
            used += [("points", p) for p in self.points]
        return prompt, used


def collect(store: ResultStore, layer: QgsRasterLayer) -> PromptSet:
    """Prompts of the newest run (or of the selected features), plus the ones drawn by hand."""
    prompt_set = PromptSet([], Replaced(layer.crs(), {"boxes": [], "points": []}))
    layers = store.find(layer.crs())
    if layers is None:
        return prompt_set
    boxes, points = layers["boxes"], layers["points"]
    chosen = [f for lyr in (boxes, points) for f in lyr.selectedFeatures()]
    runs = {f["run_id"] for f in chosen} or {_newest_run(boxes, points)} | {DRAWN}
    instances: dict[tuple[str, int], _Instance] = {}
    for feature in boxes.getFeatures(_runs_filter(runs)):
        instances.setdefault((feature["run_id"], feature["instance"]), _Instance()).box = feature
    for feature in points.getFeatures(_runs_filter(runs)):
        instances.setdefault((feature["run_id"], feature["instance"]), _Instance()).points.append(feature)
    for instance in instances.values():
        prompt, used = instance.prompt()
        if prompt:
            prompt_set.prompts.append(prompt)
            for role, feature in used:
                if feature["run_id"] == DRAWN:
                    prompt_set.drawn.features[role].append(feature)
    return prompt_set


def require_inside(prompts: list[dict], bounds: QgsRectangle, layer_name: str) -> None:
    """Raise :class:`PromptError` unless every box overlaps ``bounds`` and every point lies in it.

    ``bounds`` is the visible window of the raster (same CRS as the prompts); the backend refuses
    prompts outside the window it reads.
    """
    if any(_flat(prompt) for prompt in prompts):
        raise PromptError("a prompt box has no area: draw boxes by dragging from one corner to the other")
    outside = sum(not _inside(prompt, bounds) for prompt in prompts)
    if outside:
        raise PromptError(
            f"{outside} of the {len(prompts)} prompt(s) to re-segment lie outside the visible part of "
            f"{layer_name}: pan or zoom so that they are visible, or select only the visible ones in the "
            "prompt layers"
        )


def _flat(prompt: dict) -> bool:
    x1, y1, x2, y2 = prompt.get("box", (0.0, 0.0, 1.0, 1.0))
    return x2 <= x1 or y2 <= y1


def _inside(prompt: dict, bounds: QgsRectangle) -> bool:
    if "box" in prompt:
        overlap = QgsRectangle(*prompt["box"]).intersect(bounds)
        if overlap.isEmpty() or overlap.width() <= 0 or overlap.height() <= 0:
            return False
    return all(bounds.contains(QgsPointXY(x, y)) for x, y in prompt.get("points", []))


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
    """Drag a box, or click points, on the map; each ends up in the prompt layers as a drawn prompt.

    ``refused(message)`` says why a gesture added nothing (a click where a box needs a drag).
    """

    drawn = pyqtSignal()
    refused = pyqtSignal(str)

    def __init__(self, canvas: QgsMapCanvas, store: ResultStore, layer_getter, kind: str) -> None:  # noqa: ANN001
        super().__init__(canvas)
        self.store, self.layer_getter, self.kind = store, layer_getter, kind
        self.start: QgsPointXY | None = None
        self._press = None  # screen position of the press (QPoint)
        self.band = QgsRubberBand(canvas, compat.GEOMETRY_POLYGON)
        self.band.setColor(QColor(30, 120, 255, 80))

    @guard_slot
    def canvasPressEvent(self, event) -> None:  # noqa: ANN001, N802
        self.start, self._press = self.toMapCoordinates(event.pos()), event.pos()

    @guard_slot
    def canvasMoveEvent(self, event) -> None:  # noqa: ANN001, N802
        if self.kind == "box" and self.start is not None:
            rectangle = QgsRectangle(self.start, self.toMapCoordinates(event.pos()))
            self.band.setToGeometry(QgsGeometry.fromRect(rectangle), None)

    @guard_slot
    def canvasReleaseEvent(self, event) -> None:  # noqa: ANN001, N802
        start, press, self.start, self._press = self.start, self._press, None, None
        self.band.reset()
        layer = self.layer_getter()
        if start is None:
            return
        if layer is None:
            self.refused.emit("choose a raster layer in the Think2Seg panel before drawing prompts")
            return
        moved = event.pos() - press
        if self.kind == "box" and min(abs(moved.x()), abs(moved.y())) < MIN_DRAG_PX:
            self.refused.emit(
                "no box drawn: press on one corner of the target, drag to the opposite corner and release "
                "(use “Add point” to place points)"
            )
            return
        to_layer = QgsCoordinateTransform(
            self.canvas().mapSettings().destinationCrs(), layer.crs(), QgsProject.instance()
        )
        end = self.toMapCoordinates(event.pos())
        if self.kind == "box":
            geometry = QgsGeometry.fromRect(to_layer.transformBoundingBox(QgsRectangle(start, end)))
        else:
            geometry = QgsGeometry.fromPointXY(to_layer.transform(end))
        try:
            add_drawn(self.store, layer, self.kind, geometry)
        except ResultsError as exc:
            self.refused.emit(str(exc))
            return
        self.drawn.emit()


def add_drawn(store: ResultStore, layer: QgsRasterLayer, kind: str, geometry: QgsGeometry) -> None:
    """Add a hand-drawn box or point (in the raster's CRS) to the run 'drawn'.

    Each drawn box starts a new instance; drawn points join the newest drawn box (two per instance).
    Raises :class:`~.errors.ResultsError` when the prompt layer cannot be written.
    """
    layers = store.layers(layer.crs())
    drawn_boxes = [f["instance"] for f in layers["boxes"].getFeatures(_runs_filter({DRAWN}))]
    instance = max(drawn_boxes, default=-1) + 1 if kind == "box" else max(drawn_boxes, default=0)
    target = layers["boxes" if kind == "box" else "points"]
    feature = QgsFeature(target.fields())
    feature.setGeometry(geometry)
    feature.setAttribute("run_id", DRAWN)
    feature.setAttribute("instance", instance)
    feature.setAttribute("question", "drawn by hand")
    if kind == "point":
        points = target.getFeatures(_runs_filter({DRAWN}))
        feature.setAttribute("point", sum(1 for f in points if f["instance"] == instance))
    store.write(target, [feature])
