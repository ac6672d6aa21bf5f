"""“Compare with…”: what changed between two dates in the visible part of a raster, through the backend.

The current raster layer is BEFORE; the dialog asks for AFTER (another raster layer of the project),
the question and the output GeoPackage. Both must be raster files the backend reads from its disk,
as in segment by reference. The backend's change job (POST /v1/change, followed through
/v1/jobs/{id} like a batch job) compares them over the visible extent, in BEFORE's CRS; when it is
done its layers appeared (green), disappeared (red) and persisted (grey) are loaded into the group
“Think2Seg change”, each named with its polygon count and area.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSingleSymbolRenderer,
    QgsTask,
    QgsVectorLayer,
)
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QCheckBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QWidget

from . import styles
from .api.client import BlockingClient
from .api.errors import ApiError, qgis_terms
from .compat import RASTER_LAYER, QAction
from .dock import Think2SegDock
from .errors import ResultsError, Think2SegError, TileError
from .jobs import percent, run_job
from .log import guard_slot, logger
from .notify import Notifier
from .settings import Settings
from .tile import crs_text, local_file, visible_extent
from .wording import area_text, plural

GROUP = "Think2Seg change"
OUTPUT_KEY = "think2seg/change_output"
LAYERS = {"appeared": "77,175,74", "disappeared": "228,26,28", "persisted": "160,160,160"}  # green, red, grey
MENU = "&Think2Seg"
Level = Qgis.MessageLevel


@dataclass(frozen=True)
class CompareChoice:
    """A change job: BEFORE and AFTER (layers and their files), ``bounds`` (minx, miny, maxx, maxy in
    BEFORE's CRS: the visible part of BEFORE), the question and the output GeoPackage."""

    before: QgsRasterLayer
    after: QgsRasterLayer
    before_path: str
    after_path: str
    question: str
    output_path: str
    overwrite: bool
    bounds: list[float]


def change_request(choice: CompareChoice, settings: Settings) -> dict:
    """The ChangeRequest body: the choice, with the polygons made as the settings say."""
    return {
        "before_path": choice.before_path,
        "after_path": choice.after_path,
        "question": choice.question,
        "output_path": choice.output_path,
        "bounds": choice.bounds,
        "bounds_crs": crs_text(choice.before.crs()),
        "overwrite": choice.overwrite,
        "max_side_px": settings.max_side_px,
        **settings.vector_options(),
    }


class CompareDialog(QDialog):
    """BEFORE (fixed), AFTER (a combo of the project's other raster layers), question and output;
    it only gathers values. ``visible`` is the map's visible extent in BEFORE's CRS."""

    def __init__(
        self,
        before: QgsRasterLayer,
        question: str,
        settings: Settings,
        visible: QgsRectangle,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Think2Seg: compare with another date")
        self.before, self.settings, self.visible = before, settings, visible
        self.after_box = QgsMapLayerComboBox()
        self.after_box.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.after_box.setExceptedLayerList([before])
        self.question = QLineEdit(question)
        self.output = QgsFileWidget()
        self.output.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.output.setFilter("GeoPackage (*.gpkg)")
        self.overwrite = QCheckBox("Overwrite this file")
        self._suggested, self._before_path = "", local_file(before)  # read now: the slot may outlive the layer
        form = QFormLayout(self)
        form.addRow("Before", QLabel(before.name()))
        form.addRow("After", self.after_box)
        form.addRow("Question", self.question)
        form.addRow("Area", QLabel("the visible map extent (in the Before layer's CRS)"))
        form.addRow("Output GeoPackage", self.output)
        form.addRow(self.overwrite)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.after_box.layerChanged.connect(self._suggest_output)
        self._suggest_output(self.after_box.currentLayer())

    @guard_slot
    def _suggest_output(self, after: object) -> None:
        """“BEFORE_vs_AFTER_change.gpkg” beside BEFORE (or in the batch output folder), unless the user typed one."""
        before_path = self._before_path
        if before_path is None or self.output.filePath() not in ("", self._suggested):
            return
        after_name = Path(local_file(after) or "after").stem if isinstance(after, QgsRasterLayer) else "after"
        folder = Path(self.settings.batch_output_folder or Path(before_path).parent)
        self._suggested = str(folder / f"{Path(before_path).stem}_vs_{after_name}_change.gpkg")
        self.output.setFilePath(self._suggested)

    def choice(self) -> CompareChoice | str:
        """The change job, or why it cannot run (in words for the message bar)."""
        try:
            return self._choice()
        except TileError as exc:
            return str(exc)

    def _choice(self) -> CompareChoice:
        after = self.after_box.currentLayer()
        if not isinstance(after, QgsRasterLayer):
            raise TileError("add the later raster (After) to the project first, then choose it in Compare with…")
        before_path, after_path = raster_file(self.before, "Before"), raster_file(after, "After")
        if Path(before_path).resolve() == Path(after_path).resolve():
            raise TileError(f"Before and After are the same file ({before_path}): choose the raster of the other date")
        question = self.question.text().strip()
        if not question:
            raise TileError("type a question first, e.g. “segment every building”")
        bounds = view_bounds(self.before, after, self.visible)
        output = self.output.filePath().strip()
        if not output:
            raise TileError("choose the output GeoPackage")
        if not output.lower().endswith(".gpkg"):
            output += ".gpkg"
        overwrite = self.overwrite.isChecked()
        if Path(output).exists() and not overwrite:
            raise TileError(f"{output} already exists: tick “Overwrite” to replace it, or choose another file")
        return CompareChoice(self.before, after, before_path, after_path, question, output, overwrite, bounds)


def raster_file(layer: QgsRasterLayer, role: str) -> str:
    """The file the backend reads for ``layer`` (``role``: Before or After); raises TileError saying why not."""
    if not layer.crs().isValid():
        raise TileError(f"{role} ({layer.name()}) has no CRS: set it in Layer Properties › Source")
    path = local_file(layer)
    if path is None:
        raise TileError(
            f"{role} ({layer.name()}) is not a raster file the backend can read: Compare with… needs both dates "
            "as files on this machine (not web layers): save it with Export › Save As… and add the file"
        )
    return path


def view_bounds(before: QgsRasterLayer, after: QgsRasterLayer, visible: QgsRectangle) -> list[float]:
    """The visible part of BEFORE (minx, miny, maxx, maxy in BEFORE's CRS); raises TileError when it is
    out of view or AFTER covers none of it."""
    bounds = visible.intersect(before.extent())
    if bounds.isEmpty() or bounds.width() <= 0 or bounds.height() <= 0:
        raise TileError(f"Before ({before.name()}) is not in view: pan or zoom to it")
    to_before = QgsCoordinateTransform(after.crs(), before.crs(), QgsProject.instance())
    if to_before.transformBoundingBox(after.extent()).intersect(bounds).isEmpty():
        raise TileError(
            f"After ({after.name()}) does not cover the visible part of Before: pan to where both rasters are"
        )
    return [bounds.xMinimum(), bounds.yMinimum(), bounds.xMaximum(), bounds.yMaximum()]


class ChangeJobTask(QgsTask):
    """Runs and follows one change job; ``done(status | None, error)`` is called on the GUI thread.
    Its description in QGIS's task manager says where the job stands (the backend's message)."""

    statusUpdated = pyqtSignal(dict)

    def __init__(self, settings: Settings, request: dict, done: Callable[[dict | None, str], None]) -> None:
        self.title = f"Think2Seg change: {request['question']}"
        super().__init__(self.title, QgsTask.Flag.CanCancel)
        self.settings, self.request, self.done = settings, request, done
        self.job_status: dict | None = None  # not `status`: QgsTask.status() is the task's own state
        self.error = ""
        self.statusUpdated.connect(self._describe)  # queued: the task object lives on the GUI thread

    def run(self) -> bool:
        try:
            self.job_status = run_job(
                BlockingClient(self.settings),
                self.request,
                canceled=self.isCanceled,
                progress=self._progress,
                route="/v1/change",
            )
        except ApiError as exc:
            self.error = exc.message
            return False
        return self.job_status.get("state") in ("done", "cancelled")

    def _progress(self, status: dict) -> None:
        self.setProgress(percent(status))
        self.statusUpdated.emit(status)

    @guard_slot
    def _describe(self, status: dict) -> None:
        if status.get("state") == "running":
            self.setDescription(f"{self.title} — {status.get('message', '')}")

    @guard_slot
    def finished(self, result: bool) -> None:  # QgsTask's signature
        if self.job_status is None and not self.error:
            self.error = "the change job was cancelled before it started"
        self.done(self.job_status, self.error)


def load_change(project: QgsProject, output: str, question: str) -> dict[str, QgsVectorLayer]:
    """Add the output's appeared, disappeared and persisted layers (replacing an earlier load of it) to
    “Think2Seg change › question (file)”, styled and named with their counts and areas; raises ResultsError."""
    forget_change(project, output)
    layers = {}
    for table, rgb in LAYERS.items():
        layer = QgsVectorLayer(f"{output}|layername={table}", table, "ogr")
        if not layer.isValid():
            raise ResultsError(f"the change output {output} has no readable “{table}” layer: run Compare with… again")
        count, area_m2 = _figures(layer)
        layer.setName(f"{table} — {plural(count, 'polygon')}, {area_text(area_m2)}")
        layer.setRenderer(QgsSingleSymbolRenderer(styles.fill(rgb)))
        layer.setCustomProperty(OUTPUT_KEY, str(Path(output)))
        layers[table] = layer
    root = project.layerTreeRoot()
    group = root.findGroup(GROUP) or root.insertGroup(0, GROUP)
    subgroup = group.addGroup(f"{question} ({Path(output).name})")
    for layer in layers.values():
        project.addMapLayer(layer, False)
        subgroup.addLayer(layer)
    return layers


def forget_change(project: QgsProject, output: str) -> None:
    """Remove the layers of an earlier load of ``output`` (and the groups left empty), closing the file."""
    key = str(Path(output))
    stale = [layer.id() for layer in project.mapLayers().values() if layer.customProperty(OUTPUT_KEY) == key]
    if stale:
        project.removeMapLayers(stale)
    group = project.layerTreeRoot().findGroup(GROUP)
    if group is not None:
        for child in group.findGroups():
            if not child.children():
                group.removeChildNode(child)


def _figures(layer: QgsVectorLayer) -> tuple[int, float]:
    """Polygons and total ``area_m2`` (the backend's areas, geodesic in a geographic CRS)."""
    index = layer.fields().indexOf("area_m2")
    areas = [feature.attributes()[index] for feature in layer.getFeatures()] if index >= 0 else []
    return layer.featureCount(), float(sum(a for a in areas if isinstance(a, (int, float))))


class Compare:
    """The “Compare with…” action (in the layer panel's menu of raster layers and in the plugin menu)
    and the change jobs it starts; the panel (``dock``) gives the current raster layer and the question."""

    def __init__(self, iface, settings: Settings, project: QgsProject, notify: Notifier, dock: Think2SegDock) -> None:
        self.iface, self.settings, self.project, self.notify, self.dock = iface, settings, project, notify, dock
        self.tasks: list[ChangeJobTask] = []
        self.closed = False
        window = iface.mainWindow()
        self.layer_action = QAction("Think2Seg: Compare with…", window)
        self.layer_action.setToolTip("What appeared, disappeared and persisted in view between this raster and another")
        self.layer_action.triggered.connect(lambda: self.open(self._active_raster()))
        iface.addCustomActionForLayerType(self.layer_action, "", RASTER_LAYER, True)
        self.menu_action = QAction("Compare with…", window)
        self.menu_action.triggered.connect(lambda: self.open(self.dock.layer()))
        iface.addPluginToMenu(MENU, self.menu_action)

    def close(self) -> None:
        """Remove the actions and cancel every task (the plugin unloads); later ends are only logged."""
        self.closed = True
        self.iface.removeCustomActionForLayerType(self.layer_action)
        self.iface.removePluginMenu(MENU, self.menu_action)
        for task in list(self.tasks):
            task.cancel()

    def _active_raster(self) -> QgsRasterLayer | None:
        layer = self.iface.activeLayer()  # the layer right-clicked in the layer panel
        return layer if isinstance(layer, QgsRasterLayer) else self.dock.layer()

    @guard_slot
    def open(self, before: QgsRasterLayer | None) -> None:
        """Ask for AFTER, the question and the output, then start the job."""
        if before is None:
            self.notify.say("choose a raster layer (BEFORE) in the Think2Seg panel first", Level.Warning)
            return
        dialog = self.dialog(before)
        accepted = dialog.exec() == QDialog.DialogCode.Accepted
        choice = dialog.choice() if accepted else ""
        dialog.deleteLater()
        if not accepted:
            return
        if isinstance(choice, str):
            self.notify.say(choice, Level.Warning)
            return
        self.run(choice)

    def dialog(self, before: QgsRasterLayer) -> CompareDialog:
        visible = visible_extent(self.iface.mapCanvas(), before.crs())
        return CompareDialog(before, self.dock.question_text(), self.settings, visible, self.iface.mainWindow())

    def run(self, choice: CompareChoice) -> ChangeJobTask:
        """Start the change job (an Overwrite first removes the old layers, closing the file)."""
        if choice.overwrite:
            forget_change(self.project, choice.output_path)
        task = ChangeJobTask(self.settings, change_request(choice, self.settings), lambda s, e: self._done(task, s, e))
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        return task

    @guard_slot
    def _done(self, task: ChangeJobTask, status: dict | None, error: str) -> None:
        if task in self.tasks:
            self.tasks.remove(task)
        name = f"Change “{task.request['question']}”"
        if self.closed:
            logger().info("a change job ended after the plugin was unloaded: %s", error or (status or {}).get("state"))
        elif error or status is None:
            self.notify.say(f"{name} failed: {error}", Level.Critical)
        elif status["state"] == "done":
            self._loaded(name, status)
        elif status["state"] == "cancelled":
            self.notify.say(f"{name} stopped before it compared the dates: nothing was written", Level.Info)
        else:
            self.notify.say(f"{name} failed: {qgis_terms(status.get('message', ''))}", Level.Warning)

    def _loaded(self, name: str, status: dict) -> None:
        try:
            layers = load_change(self.project, status["output_path"], status["question"])
        except Think2SegError as exc:
            self.notify.say(str(exc), Level.Warning)
            return
        figures = "; ".join(layer.name().replace(" — ", ": ") for layer in layers.values())
        group = f"{GROUP} › {status['question']} ({Path(status['output_path']).name})"
        self.notify.say(f"{name} done: {figures}. Its layers are in the group {group}", Level.Success)
