"""The map tool that draws prompts: drag a box, or click points; each ends up in the prompt layers.

The tool is tied to its checkable dock button (checked while it is active), shows in the status
bar what the next click does, and lets go on Esc, when the button is clicked again, or when the
user picks another map tool.
"""

from __future__ import annotations

from qgis.core import QgsCoordinateTransform, QgsGeometry, QgsPointXY, QgsProject, QgsRectangle
from qgis.gui import QgsMapCanvas, QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QAbstractButton, QStatusBar

from . import compat
from .errors import PromptError, ResultsError
from .log import guard_slot
from .prompts import POINTS_PER_INSTANCE, Instance, add_drawn
from .results import ResultStore

MIN_DRAG_PX = 4  # a box needs a drag of at least this many screen pixels each way
HINTS = {
    "box": "Think2Seg: drag a box around one target (each box is one instance). Esc to stop drawing",
    "point": "Think2Seg: click inside the target: each instance takes exactly two points. Esc to stop",
}


class PromptTool(QgsMapTool):
    """Draws prompts of ``kind`` ("box" or "point") for the raster layer ``layer_getter()`` returns.

    ``drawn(instance)`` follows each prompt added; ``refused(message)`` says why a gesture added nothing.
    """

    drawn = pyqtSignal(object)
    refused = pyqtSignal(str)

    def __init__(
        self,
        canvas: QgsMapCanvas,
        store: ResultStore,
        layer_getter,  # () -> QgsRasterLayer | None
        kind: str,
        button: QAbstractButton,
        status_bar: QStatusBar,
    ) -> None:
        super().__init__(canvas)
        self.store, self.layer_getter, self.kind, self.status_bar = store, layer_getter, kind, status_bar
        self.start: QgsPointXY | None = None
        self._press = None  # screen position of the press (QPoint)
        self.band = QgsRubberBand(canvas, compat.GEOMETRY_POLYGON)
        self.band.setColor(QColor(30, 120, 255, 80))
        self.setButton(button)  # QGIS checks the button while the tool is active

    def activate(self) -> None:
        super().activate()
        self.status_bar.showMessage(HINTS[self.kind])

    def deactivate(self) -> None:
        self.band.reset()
        self.status_bar.clearMessage()
        super().deactivate()

    @guard_slot
    def keyPressEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Escape:
            self.canvas().unsetMapTool(self)
            event.accept()
        else:
            event.ignore()

    @guard_slot
    def canvasPressEvent(self, event) -> None:
        self.start, self._press = self.toMapCoordinates(event.pos()), event.pos()

    @guard_slot
    def canvasMoveEvent(self, event) -> None:
        if self.kind == "box" and self.start is not None:
            rectangle = QgsRectangle(self.start, self.toMapCoordinates(event.pos()))
            self.band.setToGeometry(QgsGeometry.fromRect(rectangle), None)

    @guard_slot
    def canvasReleaseEvent(self, event) -> None:
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
            instance = add_drawn(self.store, layer, self.kind, geometry)
        except (PromptError, ResultsError) as exc:
            self.refused.emit(str(exc))
            return
        self.status_bar.showMessage(progress_hint(instance))
        self.drawn.emit(instance)


def progress_hint(instance: Instance) -> str:
    """What the instance has, and what the next click adds."""
    name = f"drawn {instance.number + 1}"
    points = len(instance.points)
    if points < POINTS_PER_INSTANCE:
        return (
            f"Think2Seg: {name} has {points} of {POINTS_PER_INSTANCE} points: “Add point” and click inside the "
            "target for the next one (a box alone is fine too). Esc to stop"
        )
    return f"Think2Seg: {name} is complete (box and/or two points); a further click starts a new instance. Esc to stop"
