"""The Think2Seg QGIS plugin: wires the dock, the backend, the results and the Processing provider."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
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
from .dialogs import BatchDialog, ExportDialog, LogDialog, SettingsDialog
from .dock import RunController, Think2SegDock
from .errors import Think2SegError
from .export import ExportChoice, export_results
from .jobs import BatchJobTask, job_request
from .log import guard_slot, logger
from .processing.provider import Think2SegProvider
from .results import AddRunCommand, Replaced, ResultStore, reply_crs, results_path
from .segment_run import SegmentRun
from .settings import Settings
from .tile import TilePlan

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
        self.unloaded = False

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
        """Undo initGui: abort the question in flight, cancel batch tasks, stop the backend we started.

        Callbacks that arrive later (a task's end, a health check) find ``self.unloaded`` and do nothing.
        """
        self.unloaded = True
        if self.controller is not None:
            self.controller.close()
        for task in list(self.tasks):
            task.cancel()  # the task asks the backend to stop the job, which stays resumable
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
            self.dock.detach()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
        self.dock = self.controller = self.action = self.provider = self.tool = None

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

    @guard_slot
    def start_backend(self) -> None:
        problem = self.backend.start()
        if problem:
            self._message(problem, Qgis.MessageLevel.Warning)

    @guard_slot
    def resegment(self) -> None:
        layer = self.dock.layer()
        if layer is None:
            self._message("choose a raster layer in the Think2Seg panel", Qgis.MessageLevel.Warning)
            return
        self.controller.resegment(prompt_tools.collect(self.store, layer))

    @guard_slot
    def export(self) -> None:
        layers = [layer for layer in self.store.results_layers() if layer.featureCount() > 0]
        if not layers:
            self._message("there are no results to export yet: ask a question first", Qgis.MessageLevel.Info)
            return
        dialog = ExportDialog(str(results_path(QgsProject.instance()).with_name("think2seg_export.gpkg")), self.dock)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.export_to(layers, dialog.choice())

    def export_to(self, layers: list[QgsVectorLayer], choice: ExportChoice) -> None:
        """Export ``layers`` as the user chose and say what was written (or why not)."""
        try:
            written = export_results(layers, choice)
        except Think2SegError as exc:
            self._message(f"export failed: {exc}", Qgis.MessageLevel.Critical)
            return
        polygons = sum(count for _name, count in written)
        names = ", ".join(name for name, _count in written)
        self._message(f"exported {polygons} polygon(s) to {choice.path} (layer {names})", Qgis.MessageLevel.Success)

    @guard_slot
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
            overwrite=choice.overwrite,
            settings=self.settings,
        )
        self.start_job(request)

    def start_job(self, request: dict) -> BatchJobTask:
        task = BatchJobTask(self.settings, request, lambda status, error: self._job_done(task, status, error))
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        return task

    @guard_slot
    def edit_settings(self) -> None:
        if SettingsDialog(self.settings, self.dock).exec() == QDialog.DialogCode.Accepted:
            self.backend.check()

    # --- results -----------------------------------------------------------------------------------------

    @guard_slot
    def _add_reply(self, reply: dict, plan: TilePlan, drawn: Replaced | None) -> None:
        """Save a reply's polygons and prompts as one undo step, in the CRS the reply says they are in."""
        if self.unloaded:
            return
        label = reply.get("question") or "re-segment"
        try:
            crs = reply_crs(reply, plan.crs)
            run = self.store.features(reply, crs, plan.raster_path or plan.layer.source())
            command = AddRunCommand(self.store, run, f"Think2Seg: {label}", replaced=drawn, report=self._undo_failed)
            command.apply()
        except Think2SegError as exc:  # e.g. the results GeoPackage is read-only or locked
            self._message(f"the results were not saved: {exc}", Qgis.MessageLevel.Critical)
            return
        self.undo.push(command)
        if crs != plan.crs:
            self._message(
                f"the backend answered in {crs.authid() or crs.description()}, not in the layer's "
                f"{plan.crs.authid() or plan.crs.description()} (the file's own CRS differs from the layer's): "
                "the polygons are kept in the backend's CRS, in their own results layer",
                Qgis.MessageLevel.Warning,
            )
        if run.results:
            self._zoom_to(run.results, crs)

    def _undo_failed(self, text: str) -> None:
        self._message(text, Qgis.MessageLevel.Critical)

    def _zoom_to(self, features: list, crs: QgsCoordinateReferenceSystem) -> None:
        extent = QgsRectangle()
        for feature in features:
            extent.combineExtentWith(feature.geometry().boundingBox())
        canvas = self.iface.mapCanvas()
        to_canvas = QgsCoordinateTransform(crs, canvas.mapSettings().destinationCrs(), QgsProject.instance())
        extent = to_canvas.transformBoundingBox(extent)
        extent.scale(1.2)
        canvas.setExtent(extent)
        canvas.refresh()

    @guard_slot
    def _job_done(self, task: BatchJobTask, status: dict | None, error: str) -> None:
        if task in self.tasks:
            self.tasks.remove(task)
        if self.unloaded:
            logger().info("a batch job ended after the plugin was unloaded: %s", error or (status or {}).get("state"))
            return
        if error or status is None:
            self._message(f"batch job failed: {error}", Qgis.MessageLevel.Critical)
            return
        if status["state"] != "done":
            self._message(f"batch job {status['state']}: {status['message']}", Qgis.MessageLevel.Warning)
            return
        layer = QgsVectorLayer(f"{status['output_path']}|layername=segments", f"Think2Seg: {status['question']}", "ogr")
        QgsProject.instance().addMapLayer(layer)
        self._message(f"batch job done: {status['message']}", Qgis.MessageLevel.Success)

    @guard_slot
    def _draw(self, kind: str) -> None:
        canvas = self.iface.mapCanvas()
        self.tool = prompt_tools.PromptTool(canvas, self.store, self.dock.layer, kind)
        self.tool.refused.connect(lambda text: self._message(text, Qgis.MessageLevel.Warning))
        canvas.setMapTool(self.tool)

    def _message(self, text: str, level: Qgis.MessageLevel) -> None:
        logger().info(text)
        self.iface.messageBar().pushMessage("Think2Seg", text, level=level, duration=8)
