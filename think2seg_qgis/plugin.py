"""The Think2Seg QGIS plugin: wires the dock, the backend, the results and the Processing provider."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsCoordinateTransform, QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QDialog, QFileDialog

from . import prompts as prompt_data
from .api.client import AsyncClient
from .backend import Backend
from .batch_dialog import BatchChoice, BatchDialog
from .batch_runs import BatchJobs
from .compare import Compare
from .compat import QAction, QUndoStack
from .controller import RunController
from .dialogs import ExportDialog, LogDialog, SettingsDialog
from .dock import Think2SegDock
from .errors import Think2SegError
from .export import ExportChoice, export_results
from .jobs import BatchJobTask
from .log import guard_slot
from .notify import Notifier
from .processing.provider import Think2SegProvider
from .prompt_tool import PromptTool
from .prompts import PromptSet
from .results import ROLE, ResultStore, reply_crs
from .segment_run import SegmentRun
from .settings import Settings
from .tile import TilePlan
from .undo import AddRunCommand
from .wording import plural

ICON = Path(__file__).resolve().parent / "icons" / "think2seg.svg"
Level = Qgis.MessageLevel


class Think2SegPlugin:
    def __init__(self, iface) -> None:  # QgisInterface
        self.iface = iface
        self.settings = Settings()
        self.client = AsyncClient(self.settings)
        self.backend = Backend(self.settings, self.client)
        self.project = QgsProject.instance()
        self.store = ResultStore(self.project)
        self.undo = QUndoStack()
        self.notify = Notifier(iface.messageBar())
        self.dock: Think2SegDock | None = None
        self.controller: RunController | None = None
        self.action: QAction | None = None
        self.provider: Think2SegProvider | None = None
        self.tools: dict[str, PromptTool] = {}
        self.jobs = BatchJobs(self.settings, self.project, self.notify, show=self._show_jobs)
        self.compare: Compare | None = None
        self.unloaded = False

    # --- QGIS plugin interface -------------------------------------------------------------------

    def initGui(self) -> None:
        self.dock = Think2SegDock(self.settings, self.backend, self.iface.mainWindow())
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.action = QAction(QIcon(str(ICON)), "Think2Seg", self.iface.mainWindow())
        self.action.setCheckable(True)
        self.action.setChecked(True)
        self.action.toggled.connect(self.dock.setVisible)
        self.dock.visibilityChanged.connect(self.action.setChecked)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu("&Think2Seg", self.action)
        run = SegmentRun(self.client, self.settings)
        canvas = self.iface.mapCanvas()
        self.controller = RunController(self.dock, run, self.backend, canvas, self.notify, self._add_reply)
        self._make_tools()
        self._wire(self.dock)
        self.compare = Compare(self.iface, self.settings, self.project, self.notify, self.dock)
        self._watch_project()
        self.provider = Think2SegProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)
        self.backend.watch()
        self._show_results_file()
        self._undo_changed()

    def unload(self) -> None:
        """Undo initGui: abort the question in flight, cancel batch tasks, stop the backend we started.

        Callbacks that arrive later (a task's end, a health check) find ``self.unloaded`` and do nothing.
        """
        self.unloaded = True
        if self.controller is not None:
            self.controller.close()
        self.jobs.close()  # each task asks the backend to stop its job, which stays resumable
        if self.compare is not None:
            self.compare.close()
        self.backend.unwatch()
        self.backend.stop_and_wait()
        self._unwatch_project()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        canvas = self.iface.mapCanvas()
        for tool in self.tools.values():
            if canvas.mapTool() is tool:
                canvas.unsetMapTool(tool)
        if self.action is not None:
            self.iface.removeToolBarIcon(self.action)
            self.iface.removePluginMenu("&Think2Seg", self.action)
        if self.dock is not None:
            self.dock.detach()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
        self.dock = self.controller = self.action = self.provider = self.compare = None
        self.tools = {}

    # --- wiring ----------------------------------------------------------------------------------------

    def _wire(self, dock: Think2SegDock) -> None:
        dock.runRequested.connect(self.controller.ask)
        dock.resegmentRequested.connect(self.resegment)
        dock.start_button.clicked.connect(self.start_backend)
        dock.stop_button.clicked.connect(self.backend.stop)
        dock.log_button.clicked.connect(lambda: LogDialog(self.backend, dock).exec())
        dock.undoRequested.connect(self.undo.undo)
        dock.redoRequested.connect(self.undo.redo)
        dock.zoom_button.clicked.connect(self.zoom_to_result)
        dock.export_button.clicked.connect(self.export)
        dock.batch_button.clicked.connect(self.batch)
        dock.settings_button.clicked.connect(self.edit_settings)
        dock.layer_box.layerChanged.connect(self.refresh_prompts)
        self.undo.indexChanged.connect(self._undo_changed)
        self.backend.statusChanged.connect(lambda *_: self.refresh_prompts())

    def _make_tools(self) -> None:
        canvas, status_bar = self.iface.mapCanvas(), self.iface.mainWindow().statusBar()
        for kind, button in (("box", self.dock.draw_box_button), ("point", self.dock.draw_point_button)):
            tool = PromptTool(canvas, self.store, self.dock.layer, kind, button, status_bar)
            tool.refused.connect(lambda text: self.notify.say(text, Level.Warning))
            tool.drawn.connect(lambda _instance: self.refresh_prompts())
            button.clicked.connect(lambda checked, t=tool: self._toggle_tool(t, checked))
            self.tools[kind] = tool

    def _watch_project(self) -> None:
        self.project.cleared.connect(self._project_cleared)
        self.project.projectSaved.connect(self._project_saved)
        self.project.layersAdded.connect(self._layers_added)
        self._layers_added(list(self.project.mapLayers().values()))

    def _unwatch_project(self) -> None:
        for signal, slot in (
            (self.project.cleared, self._project_cleared),
            (self.project.projectSaved, self._project_saved),
            (self.project.layersAdded, self._layers_added),
        ):
            signal.disconnect(slot)

    @guard_slot
    def _layers_added(self, layers: list) -> None:
        for layer in layers:
            if isinstance(layer, QgsVectorLayer) and layer.customProperty(ROLE) in ("boxes", "points"):
                for signal in (layer.selectionChanged, layer.featuresDeleted, layer.editingStopped):
                    signal.connect(self.refresh_prompts)

    # --- actions ---------------------------------------------------------------------------------------

    @guard_slot
    def start_backend(self) -> None:
        problem = self.backend.start()
        if problem:
            self.notify.say(problem, Level.Warning)

    @guard_slot
    def _toggle_tool(self, tool: PromptTool, checked: bool) -> None:  # a signal's argument
        canvas = self.iface.mapCanvas()
        if checked:
            canvas.setMapTool(tool)
        elif canvas.mapTool() is tool:
            canvas.unsetMapTool(tool)

    @guard_slot
    def resegment(self) -> None:
        layer = self.dock.layer()
        if layer is None:
            self.notify.say("choose a raster layer in the Think2Seg panel", Level.Warning)
            return
        prompt_set = prompt_data.collect(self.store, layer, self.dock.unticked_prompts())
        if prompt_set.incomplete:
            self.notify.say(
                f"not sent: {'; '.join(prompt_set.incomplete)}. Each instance takes a box and/or exactly two points "
                "inside the target: add the missing point with “Add point”",
                Level.Warning,
            )
        self.controller.resegment(prompt_set)

    @guard_slot
    def refresh_prompts(self) -> None:
        if self.dock is None:
            return
        layer = self.dock.layer()
        self.dock.show_prompts(prompt_data.instances(self.store, layer) if layer is not None else [])

    @guard_slot
    def zoom_to_result(self) -> None:
        command = self.undo.command(self.undo.index() - 1) if self.undo.index() > 0 else None
        extent = self.store.run_extent(command.run) if command is not None else None
        if extent is None or extent.isEmpty():
            self.notify.say("there is no result on the map to zoom to: ask a question first")
            return
        canvas = self.iface.mapCanvas()
        to_canvas = QgsCoordinateTransform(command.run.crs, canvas.mapSettings().destinationCrs(), self.project)
        extent = to_canvas.transformBoundingBox(extent)
        extent.scale(1.2)
        canvas.setExtent(extent)
        canvas.refresh()

    @guard_slot
    def export(self) -> None:
        layers = [layer for layer in self.store.results_layers() if layer.featureCount() > 0]
        if not layers:
            self.notify.say("there are no results to export yet: ask a question first")
            return
        folder = Path(self.project.homePath()) if self.project.fileName() else Path.home()
        dialog = ExportDialog(str(folder / "think2seg_export.gpkg"), self.dock)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.export_to(layers, dialog.choice())

    def export_to(self, layers: list[QgsVectorLayer], choice: ExportChoice) -> None:
        """Export ``layers`` as the user chose and say what was written (or why not)."""
        try:
            written = export_results(layers, choice)
        except Think2SegError as exc:
            self.notify.say(f"export failed: {exc}", Level.Critical)
            return
        polygons = sum(count for _name, count in written)
        names = ", ".join(name for name, _count in written)
        self.notify.say(f"exported {plural(polygons, 'polygon')} to {choice.path} (layer {names})", Level.Success)

    @guard_slot
    def batch(self) -> None:
        """The Batch… dialog for the panel's question, or for its classes (one job asks them all)."""
        classes = self.controller.checked_classes() if self.dock.classes_on() else None
        if classes == {}:  # told what to change
            return
        dialog = self.batch_dialog(classes)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return
        choice = dialog.choice()
        if isinstance(choice, str):
            self.notify.say(choice, Level.Warning)
            return
        self.run_batch(choice)

    def batch_dialog(self, classes: dict[str, str] | None) -> BatchDialog:
        canvas = self.iface.mapCanvas()
        return BatchDialog(
            self.dock.question_text(),
            self.dock.layer(),
            self.settings,
            self.dock,
            visible=canvas.extent(),
            visible_crs=canvas.mapSettings().destinationCrs(),
            classes=classes,
        )

    def run_batch(self, choice: BatchChoice) -> BatchJobTask:
        return self.jobs.run(choice)

    def start_job(self, request: dict) -> BatchJobTask:
        return self.jobs.start(request)

    @property
    def tasks(self) -> list[BatchJobTask]:
        return self.jobs.tasks

    @guard_slot
    def edit_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self.dock)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.settings_changed(backend_changed=dialog.backend_changed())

    def settings_changed(self, *, backend_changed: bool) -> None:
        """After the Settings dialog's OK: check the backend; offer to restart one started here."""
        self.backend.check()
        if backend_changed and self.backend.owns_process():
            self.notify.say(
                "the backend started from QGIS still runs with the old settings: restart it to use the new ones",
                actions=[("Restart", self.restart_backend)],
            )

    @guard_slot
    def restart_backend(self) -> None:
        problem = self.backend.restart()
        if problem:
            self.notify.say(problem, Level.Warning)

    # --- results -----------------------------------------------------------------------------------------

    @guard_slot
    def _add_reply(self, reply: dict, plan: TilePlan, prompts: PromptSet | None, summary: str) -> None:
        """Save a reply's polygons and prompts as one undo step, in the CRS the reply says they are in;
        a re-segment's reply replaces the run it corrects. A reply that adds and replaces nothing is no step."""
        if self.unloaded:
            return
        try:
            crs = reply_crs(reply, plan.crs)
            question = prompts.question if prompts else ""
            run = self.store.features(reply, crs, plan.raster_path or plan.layer.source(), question=question)
            replaced = prompts.replaced if prompts else None
            if run.empty and (replaced is None or replaced.empty):
                self.refresh_prompts()
                return
            label = f"question “{reply.get('question', '')}”"
            if prompts is not None:
                label = f"re-segment of “{question}”" if question else "re-segment"
            command = AddRunCommand(
                self.store, run, label, summary=summary, replaced=replaced, report=self._undo_failed
            )
            command.apply()
        except Think2SegError as exc:  # e.g. the results GeoPackage is read-only or locked
            self.notify.say(f"the results were not saved: {exc}", Level.Critical)
            return
        self.undo.push(command)
        if crs != plan.crs:
            self.notify.say(
                f"the backend answered in {crs.authid() or crs.description()}, not in the layer's "
                f"{plan.crs.authid() or plan.crs.description()} (the file's own CRS differs from the layer's): "
                "the polygons are kept in the backend's CRS, in their own results layer",
                Level.Warning,
            )

    def _undo_failed(self, text: str) -> None:
        self.notify.say(text, Level.Critical)

    @guard_slot
    def _undo_changed(self, *_args: object) -> None:
        """Buttons that say what they undo and redo, and a result line that matches the map."""
        if self.dock is None:
            return
        for button, can, text, verb in (
            (self.dock.undo_button, self.undo.canUndo(), self.undo.undoText(), "Undo"),
            (self.dock.redo_button, self.undo.canRedo(), self.undo.redoText(), "Redo"),
        ):
            button.setEnabled(can)
            button.setToolTip(
                f"{verb} {text} (Ctrl+{'Z' if verb == 'Undo' else 'Shift+Z'})" if can else f"Nothing to {verb.lower()}"
            )
        index = self.undo.index()
        if index > 0:
            self.dock.result.setText(self.undo.command(index - 1).summary)
        elif self.undo.count():
            self.dock.result.setText(f"No result on the map (undone: {self.undo.command(0).text()}).")
        self.dock.zoom_button.setEnabled(index > 0)
        self.refresh_prompts()

    # --- projects ------------------------------------------------------------------------------------------

    def _show_jobs(self, text: str) -> None:
        if self.dock is not None:
            self.dock.jobs.setText(text)

    def _show_results_file(self) -> None:
        if self.dock is not None:
            self.dock.show_results_file(str(self.store.file.path), temporary=self.store.file.is_temporary)

    @guard_slot
    def _project_cleared(self) -> None:
        """A new (or another) project: nothing of the old one stays in the panel or the undo stack."""
        if self.controller is not None:
            self.controller.cancel()
        self.undo.clear()
        previous = self.store.file.new_project()
        if self.dock is not None:
            self.dock.result.setText("No result yet.")
            self.dock.reasoning.clear()
        self._show_results_file()
        self.refresh_prompts()
        if previous is not None:
            self.notify.say(
                f"the results of the unsaved project that was closed are in a temporary file, {previous}: keep "
                "them to open them later",
                actions=[("Keep…", lambda: self._ask_keep(previous))],
            )

    def _ask_keep(self, previous: Path) -> None:
        target, _filter = QFileDialog.getSaveFileName(
            self.dock, "Keep the Think2Seg results", str(Path.home() / "think2seg_results.gpkg"), "GeoPackage (*.gpkg)"
        )
        if target:
            self.keep_results(previous, Path(target if target.lower().endswith(".gpkg") else target + ".gpkg"))

    def keep_results(self, previous: Path, target: Path) -> None:
        try:
            self.store.file.keep_as(previous, target)
        except Think2SegError as exc:
            self.notify.say(f"the results were not kept: {exc}", Level.Critical)
            return
        self.notify.say(f"the results are kept in {target} (Layer › Add Layer opens them)", Level.Success)

    @guard_slot
    def _project_saved(self) -> None:
        """The first save of a project moves its results beside it, and saves it again with the new paths."""
        try:
            target = self.store.file.adopt(self.store.all_layers())
        except Think2SegError as exc:
            self.notify.say(str(exc), Level.Warning)
            return
        self._show_results_file()
        if target is not None:
            QTimer.singleShot(0, self.project.write)
            self.notify.say(f"the Think2Seg results are now kept beside the project, in {target}", Level.Success)
