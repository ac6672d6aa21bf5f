"""The Think2Seg QGIS plugin: wires the dock, the backend, the results and the Processing provider."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QDialog

from . import prompts as prompt_tools
from .api.client import AsyncClient
from .backend import Backend
from .compat import QAction, QUndoStack
from .dialogs import BatchDialog, ExportDialog, LogDialog, SettingsDialog, export_layer
from .dock import RunController, Think2SegDock
from .jobs import BatchJobTask, job_request
from .log import logger
from .processing.provider import Think2SegProvider
from .results import AddRunCommand, ResultStore, results_path
from .segment_run import SegmentRun
from .settings import Settings

ICON = Path(__file__).resolve().parent / "icons" / "think2seg.svg"


class Think2SegPlugin:
    def __init__(self, iface) -> None:  # noqa: ANN001 - QgisInterface
        self.iface = iface
        self.settings = Settings()
        self.client = AsyncClient(self.settings)
        self.backend = Backend(self.settings, self.client)
        self.store = ResultStore(QgsProject.instance())
        self.undo = QUndoStack()
        self.dock: Think2SegDock | None = None
        self.controller: RunController | None = None
        self.action: QAction | None = None
        self.provider: Think2SegProvider | None = None
        self.tool: prompt_tools.PromptTool | None = None
        self.tasks: list[BatchJobTask] = []

    # --- QGIS plugin interface -------------------------------------------------------------------

    def initGui(self) -> None:  # noqa: N802
        self.dock = Think2SegDock(self.settings, self.backend, self.iface.mainWindow())
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.action = QAction(QIcon(str(ICON)), "Think2Seg", self.iface.mainWindow())
        self.action.setCheckable(True)
        self.action.setChecked(True)
        self.action.toggled.connect(self.dock.setVisible)
        self.dock.visibilityChanged.connect(self.action.setChecked)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu("&Think2Seg", self.action)
        self.controller = RunController(
            self.dock,
            SegmentRun(self.client, self.settings),
            self.iface.mapCanvas(),
            self.iface.messageBar(),
            self._add_reply,
        )
        self._wire(self.dock)
        self.provider = Think2SegProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)
        self.backend.watch()

    def unload(self) -> None:
        self.backend.unwatch()
        self.backend.stop_and_wait()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        if self.tool is not None and self.iface.mapCanvas().mapTool() is self.tool:
            self.iface.mapCanvas().unsetMapTool(self.tool)
        if self.action is not None:
            self.iface.removeToolBarIcon(self.action)
            self.iface.removePluginMenu("&Think2Seg", self.action)
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
        self.dock = self.controller = self.action = self.provider = None

    # --- actions ---------------------------------------------------------------------------------------

    def _wire(self, dock: Think2SegDock) -> None:
        dock.runRequested.connect(self.controller.ask)
        dock.resegmentRequested.connect(self.resegment)
        dock.start_button.clicked.connect(self.start_backend)
        dock.stop_button.clicked.connect(self.backend.stop)
        dock.log_button.clicked.connect(lambda: LogDialog(self.backend.log_lines, dock).exec())
        dock.undo_button.clicked.connect(self.undo.undo)
        dock.export_button.clicked.connect(self.export)
        dock.batch_button.clicked.connect(self.batch)
        dock.settings_button.clicked.connect(self.edit_settings)
        dock.draw_box_button.clicked.connect(lambda: self._draw("box"))
        dock.draw_point_button.clicked.connect(lambda: self._draw("point"))

    def start_backend(self) -> None:
        problem = self.backend.start()
        if problem:
            self._message(problem, Qgis.MessageLevel.Warning)

    def resegment(self) -> None:
        layer = self.dock.layer()
        if layer is None:
            self._message("choose a raster layer in the Think2Seg panel", Qgis.MessageLevel.Warning)
            return
        self.controller.resegment(prompt_tools.collect(self.store, layer))

    def export(self) -> None:
        layer = self._results_layer()
        if layer is None:
            self._message("there are no results to export yet", Qgis.MessageLevel.Info)
            return
        dialog = ExportDialog(str(results_path(QgsProject.instance()).with_name("think2seg_export.gpkg")), self.dock)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return
        error = export_layer(layer, dialog.choice())
        if error:
            self._message(f"export failed: {error}", Qgis.MessageLevel.Critical)
        else:
            self._message(f"exported to {dialog.choice().path}", Qgis.MessageLevel.Success)

    def batch(self) -> None:
        dialog = BatchDialog(self.dock.question_text(), self.dock.layer(), self.dock)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return
        choice = dialog.choice()
        if isinstance(choice, str):
            self._message(choice, Qgis.MessageLevel.Warning)
            return
        request = job_request(
            choice.raster_path,
            choice.output_path,
            choice.question,
            tile_size_px=choice.tile_size_px,
            overlap_px=choice.overlap_px,
            resume=choice.resume,
            settings=self.settings,
        )
        self.start_job(request)

    def start_job(self, request: dict) -> BatchJobTask:
        task = BatchJobTask(self.settings, request, lambda status, error: self._job_done(task, status, error))
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        return task

    def edit_settings(self) -> None:
        if SettingsDialog(self.settings, self.dock).exec() == QDialog.DialogCode.Accepted:
            self.backend.check()

    # --- results -----------------------------------------------------------------------------------------

    def _add_reply(self, reply: dict, plan) -> None:  # noqa: ANN001
        raster = plan.raster_path or plan.layer.source()
        try:
            run = self.store.features(reply, plan.crs, raster)
        except OSError as exc:  # e.g. the results GeoPackage is not writable
            self._message(f"cannot save the results: {exc}", Qgis.MessageLevel.Critical)
            return
        label = reply.get("question") or "re-segment"
        self.undo.push(AddRunCommand(self.store, run, f"Think2Seg: {label}"))
        if run.results:
            self._zoom_to(run.results, plan.crs)

    def _zoom_to(self, features: list, crs) -> None:  # noqa: ANN001
        extent = QgsRectangle()
        for feature in features:
            extent.combineExtentWith(feature.geometry().boundingBox())
        canvas = self.iface.mapCanvas()
        to_canvas = QgsCoordinateTransform(crs, canvas.mapSettings().destinationCrs(), QgsProject.instance())
        extent = to_canvas.transformBoundingBox(extent)
        extent.scale(1.2)
        canvas.setExtent(extent)
        canvas.refresh()

    def _results_layer(self) -> QgsVectorLayer | None:
        layer = self.dock.layer()
        if layer is not None:
            return self.store.layers(layer.crs())["results"]
        return next(
            (
                lyr
                for lyr in QgsProject.instance().mapLayers().values()
                if lyr.customProperty("think2seg/role") == "results"
            ),
            None,
        )

    def _job_done(self, task: BatchJobTask, status: dict | None, error: str) -> None:
        if task in self.tasks:
            self.tasks.remove(task)
        if error or status is None:
            self._message(f"batch job failed: {error}", Qgis.MessageLevel.Critical)
            return
        if status["state"] != "done":
            self._message(f"batch job {status['state']}: {status['message']}", Qgis.MessageLevel.Warning)
            return
        layer = QgsVectorLayer(f"{status['output_path']}|layername=segments", f"Think2Seg: {status['question']}", "ogr")
        QgsProject.instance().addMapLayer(layer)
        self._message(f"batch job done: {status['message']}", Qgis.MessageLevel.Success)

    def _draw(self, kind: str) -> None:
        canvas = self.iface.mapCanvas()
        self.tool = prompt_tools.PromptTool(canvas, self.store, self.dock.layer, kind)
        canvas.setMapTool(self.tool)

    def _message(self, text: str, level: Qgis.MessageLevel) -> None:
        logger().info(text)
        self.iface.messageBar().pushMessage("Think2Seg", text, level=level, duration=8)
