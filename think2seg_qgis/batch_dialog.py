"""The Batch… dialog: one question, or the panel's classes (all asked of each tile in one job), over
every tile of a raster, the whole of it, the visible part or inside an area of interest, on the
backend's models or on Ray model workers. It remembers its values, shows how many tiles the run
has, and only gathers values (the plugin starts the job)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QRadioButton,
    QSpinBox,
    QWidget,
)

from .classes import classes_title
from .errors import TileError
from .settings import Settings
from .tile import local_file, pixel_window
from .wording import plural

WHOLE, VISIBLE, AOI = "whole", "visible", "aoi"
MAX_WORKERS = 64  # as the backend's JobRequest allows
WORKERS_TOOLTIP = (
    "Ray model workers for this job: each loads its own copy of the models (one GPU each) and the "
    "backend sends tiles to all of them at once. None runs the job on the backend's own models (or on "
    "the workers it was started with, think2seg serve --workers N). Workers need Ray on the backend: "
    "install think2seg[ray] there (pip install 'think2seg[ray]')."
)


@dataclass
class BatchChoice:
    layer: QgsRasterLayer
    raster_path: str
    question: str
    tile_size_px: int
    overlap_px: int
    output_path: str
    resume: bool
    overwrite: bool
    retry_failed: bool = False
    bounds: list[float] | None = None  # in the raster's CRS
    aoi_path: str | None = None
    workers: int = 0  # Ray model workers on the backend; 0: its own models
    classes: dict[str, str] | None = None  # name -> question, in order, asked instead of the question ("")


def tile_count(width_px: int, height_px: int, tile_size_px: int, overlap_px: int) -> int:
    """Tiles of the batch grid over a region (as `think2seg batch` lays them out)."""
    step = max(1, tile_size_px - overlap_px)

    def along(length: int) -> int:
        return 1 if length <= tile_size_px else math.ceil((length - tile_size_px) / step) + 1

    return along(width_px) * along(height_px)


class BatchDialog(QDialog):
    """Layer, question (or ``classes``: name -> question, shown read-only), area, tile size, overlap,
    workers and output of a batch job."""

    def __init__(
        self,
        question: str,
        layer: QgsRasterLayer | None,
        settings: Settings,
        parent: QWidget | None = None,
        *,
        visible: QgsRectangle | None = None,
        visible_crs: QgsCoordinateReferenceSystem | None = None,
        classes: dict[str, str] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Think2Seg batch: every tile of a raster")
        self.settings, self.visible, self.visible_crs = settings, visible, visible_crs
        self.classes = dict(classes or {})
        form = QFormLayout(self)
        self.layer_box = QgsMapLayerComboBox()
        self.layer_box.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        if layer is not None:
            self.layer_box.setLayer(layer)
        self.question = QLineEdit(question)
        self.classes_summary = _summary(self.classes)
        self.tile_size = _spin(64, 8192, settings.batch_tile_size_px, "the side of each tile, in the raster's pixels")
        self.overlap = _spin(
            0, 4096, settings.batch_overlap_px, "pixels shared by neighbouring tiles (at most half a tile)"
        )
        self.workers = QSpinBox()
        self.workers.setRange(0, MAX_WORKERS)
        self.workers.setValue(min(max(settings.batch_workers, 0), MAX_WORKERS))
        self.workers.setSpecialValueText("none: the backend's own models")
        self.workers.setToolTip(WORKERS_TOOLTIP)
        self._area_buttons(form)
        self.aoi_box = QgsMapLayerComboBox()
        self.aoi_box.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.aoi_box.setAllowEmptyLayer(True)
        self.aoi_box.setLayer(None)
        self.aoi_box.setToolTip("A polygon layer saved in a file; tiles that miss it are not run")
        self.aoi_box.layerChanged.connect(self._aoi_changed)
        self.tiles = QLabel()
        self.output = QgsFileWidget()
        self.output.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.output.setFilter("GeoPackage (*.gpkg)")
        self.resume = QCheckBox("Resume the run already in this file")
        self.retry = QCheckBox("Retry failed tiles (resumes the run and redoes its failed tiles)")
        self.overwrite = QCheckBox("Overwrite this file (start again)")
        self._exclusive()
        form.insertRow(0, "Raster", self.layer_box)
        if self.classes:  # the panel's classes are asked instead of the question (its field is not shown)
            form.insertRow(1, "Classes", self.classes_summary)
        else:
            form.insertRow(1, "Question", self.question)
        form.addRow("Area of interest", self.aoi_box)
        form.addRow("Tile size", self.tile_size)
        form.addRow("Overlap", self.overlap)
        form.addRow("Tiles", self.tiles)
        form.addRow("Workers", self.workers)
        form.addRow("Output GeoPackage", self.output)
        for box in (self.resume, self.retry, self.overwrite):
            form.addRow(box)
        form.addRow(_buttons(self))
        for signal in (self.tile_size.valueChanged, self.overlap.valueChanged, self.area.buttonClicked):
            signal.connect(self._update_tiles)
        self.layer_box.layerChanged.connect(self._layer_changed)
        self._layer_changed(self.layer_box.currentLayer())

    def _area_buttons(self, form: QFormLayout) -> None:
        self.area = QButtonGroup(self)
        self.area_buttons = {}
        for key, text in (
            (WHOLE, "the whole raster"),
            (VISIBLE, "the visible map extent"),
            (AOI, "inside the area of interest"),
        ):
            button = QRadioButton(text)
            self.area.addButton(button)
            self.area_buttons[key] = button
            form.addRow("Area" if key == WHOLE else "", button)
        self.area_buttons[WHOLE].setChecked(True)
        self.area_buttons[VISIBLE].setEnabled(self.visible is not None)

    def _exclusive(self) -> None:
        boxes = (self.resume, self.retry, self.overwrite)
        for box in boxes:
            box.toggled.connect(lambda on, me=box: on and [b.setChecked(False) for b in boxes if b is not me])

    def _layer_changed(self, layer: object) -> None:
        path = local_file(layer) if isinstance(layer, QgsRasterLayer) else None
        if path and not self.output.filePath():
            folder = Path(self.settings.batch_output_folder or Path(path).parent)
            self.output.setFilePath(str(folder / f"{Path(path).stem}_think2seg.gpkg"))
        self._update_tiles()

    def _aoi_changed(self, layer: object) -> None:
        if layer is not None:
            self.area_buttons[AOI].setChecked(True)
        self._update_tiles()

    def area_choice(self) -> str:
        return next(key for key, button in self.area_buttons.items() if button.isChecked())

    def _bounds(self, layer: QgsRasterLayer) -> QgsRectangle:
        """The chosen area's extent in the raster's CRS, clipped to the raster."""
        aoi = self.aoi_box.currentLayer()
        if self.area_choice() == VISIBLE and self.visible is not None:
            return _in_crs(self.visible, self.visible_crs, layer.crs()).intersect(layer.extent())
        if self.area_choice() == AOI and isinstance(aoi, QgsVectorLayer):
            return _in_crs(aoi.extent(), aoi.crs(), layer.crs()).intersect(layer.extent())
        return layer.extent()

    def _update_tiles(self) -> None:
        layer = self.layer_box.currentLayer()
        self.overlap.setMaximum(self.tile_size.value() // 2)
        if not isinstance(layer, QgsRasterLayer) or layer.width() <= 0:
            self.tiles.setText("choose a raster layer")
            return
        bounds = self._bounds(layer)
        if bounds.isEmpty():
            self.tiles.setText("the area does not overlap the raster")
            return
        window = pixel_window(layer, bounds)
        count = tile_count(window.width, window.height, self.tile_size.value(), self.overlap.value())
        what = "at most " if self.area_choice() == AOI else ""
        text = f"{what}{plural(count, 'tile')} over {window.width:,} x {window.height:,} px"
        if self.classes:
            pairs = plural(count * len(self.classes), "tile × class pair")
            text += f", each asked {plural(len(self.classes), 'class', 'classes')} ({what}{pairs})"
        self.tiles.setText(text)

    def choice(self) -> BatchChoice | str:
        """The job, or why it cannot run."""
        layer = self.layer_box.currentLayer()
        path = local_file(layer) if isinstance(layer, QgsRasterLayer) else None
        if path is None:
            return "batch jobs need a raster file that the backend can read: choose a file-based raster layer"
        if not self.classes and not self.question.text().strip():
            return "type a question first"
        output = self.output.filePath()
        if not output:
            return "choose the output GeoPackage"
        if not output.lower().endswith(".gpkg"):
            output += ".gpkg"
        bounds, aoi = None, None
        if self.area_choice() == VISIBLE and self.visible is not None:
            b = self._bounds(layer)
            bounds = [b.xMinimum(), b.yMinimum(), b.xMaximum(), b.yMaximum()]
        elif self.area_choice() == AOI:
            try:
                aoi = aoi_file(self.aoi_box.currentLayer())
            except TileError as exc:
                return str(exc)
        self._remember(output)
        return BatchChoice(
            layer,
            path,
            "" if self.classes else self.question.text().strip(),
            self.tile_size.value(),
            self.overlap.value(),
            output,
            self.resume.isChecked(),
            self.overwrite.isChecked(),
            self.retry.isChecked(),
            bounds,
            aoi,
            self.workers.value(),
            dict(self.classes) or None,
        )

    def _remember(self, output: str) -> None:
        self.settings.batch_tile_size_px = self.tile_size.value()
        self.settings.batch_overlap_px = self.overlap.value()
        self.settings.batch_output_folder = str(Path(output).parent)
        self.settings.batch_workers = self.workers.value()


def aoi_file(layer: object) -> str:
    """The file of a polygon layer the backend can read as an AOI; raises TileError saying why not."""
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        raise TileError("choose the area-of-interest layer (a polygon layer saved in a file)")
    path = layer.source().split("|", 1)[0]
    if layer.providerType() != "ogr" or not Path(path).is_file():
        raise TileError(
            f"the area of interest {layer.name()} is not a file: save it as one (Export › Save Features As…)"
        )
    if len(layer.dataProvider().subLayers()) > 1:
        raise TileError(
            f"the area of interest {layer.name()} shares its file with other layers: save it as a file of its own "
            "(Export › Save Features As…)"
        )
    return path


def _in_crs(
    rectangle: QgsRectangle, source: QgsCoordinateReferenceSystem | None, target: QgsCoordinateReferenceSystem
) -> QgsRectangle:
    if source is None or not source.isValid() or source == target:
        return QgsRectangle(rectangle)
    return QgsCoordinateTransform(source, target, QgsProject.instance()).transformBoundingBox(rectangle)


def _summary(classes: dict[str, str]) -> QLabel:
    """The classes a job asks, read-only: “3 classes: buildings, roads, water”, then each one's question."""
    label = QLabel()
    if classes:
        lines = [classes_title(classes)] + [f"• {name}: {question}" for name, question in classes.items()]
        label.setText("\n".join(lines))
        label.setToolTip('The classes ticked in the Think2Seg panel; edit them there (or untick "Several classes")')
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _spin(low: int, high: int, value: int, tooltip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setSuffix(" px")
    spin.setToolTip(tooltip)
    return spin


def _buttons(dialog: QDialog) -> QDialogButtonBox:
    box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, dialog)
    box.accepted.connect(dialog.accept)
    box.rejected.connect(dialog.reject)
    return box
