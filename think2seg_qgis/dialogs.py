"""Small dialogs: settings, export, batch job, backend log. Each only gathers values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qgis.core import QgsMapLayerProxyModel, QgsRasterLayer
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .export import ExportChoice
from .settings import Settings
from .tile import local_file


def _buttons(dialog: QDialog) -> QDialogButtonBox:
    box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, dialog)
    box.accepted.connect(dialog.accept)
    box.rejected.connect(dialog.reject)
    return box


def _spin(low: float, high: float, value: float, *, decimals: int = 0, suffix: str = "") -> QSpinBox | QDoubleSpinBox:
    spin = QDoubleSpinBox() if decimals else QSpinBox()
    if decimals:
        spin.setDecimals(decimals)
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setSuffix(suffix)
    return spin


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Think2Seg settings")
        self.settings = settings
        form = QFormLayout(self)
        self.url = QLineEdit(settings.backend_url)
        self.token = QgsFileWidget()
        self.token.setFilePath(settings.token_file)
        self.executable = QgsFileWidget()
        self.executable.setFilePath(settings.backend_executable)
        self.arguments = QLineEdit(settings.backend_arguments)
        self.arguments.setPlaceholderText("e.g. --lvlm /models/Think2Seg-RS-7B --device cuda:1 --data-root /data")
        self.timeout = _spin(5, 86400, settings.request_timeout_s, suffix=" s")
        self.start_timeout = _spin(5, 86400, settings.start_timeout_s, suffix=" s")
        self.max_side = _spin(64, 16384, settings.max_side_px, suffix=" px")
        self.simplify = _spin(0, 100, settings.simplify_px, decimals=2, suffix=" px")
        self.min_area = _spin(0, 1e12, settings.min_area_m2, decimals=1, suffix=" m²")
        form.addRow("Backend URL", self.url)
        form.addRow("Token file", self.token)
        form.addRow("Backend executable (think2seg)", self.executable)
        form.addRow("Extra backend options", self.arguments)
        form.addRow("Request timeout", self.timeout)
        form.addRow("Backend start timeout", self.start_timeout)
        form.addRow("Largest tile side", self.max_side)
        form.addRow("Simplification", self.simplify)
        form.addRow("Minimum polygon area", self.min_area)
        form.addRow(_buttons(self))

    def accept(self) -> None:
        s = self.settings
        s.backend_url = self.url.text()
        s.token_file = self.token.filePath()
        s.backend_executable = self.executable.filePath()
        s.backend_arguments = self.arguments.text()
        s.request_timeout_s = self.timeout.value()
        s.start_timeout_s = self.start_timeout.value()
        s.max_side_px = self.max_side.value()
        s.simplify_px = self.simplify.value()
        s.min_area_m2 = self.min_area.value()
        super().accept()


class ExportDialog(QDialog):
    def __init__(self, default_path: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export Think2Seg results to GeoPackage")
        form = QFormLayout(self)
        self.path = QgsFileWidget()
        self.path.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.path.setFilter("GeoPackage (*.gpkg)")
        self.path.setFilePath(default_path)
        self.layer_name = QLineEdit("think2seg_results")
        self.selected = QCheckBox("Only the selected polygons")
        form.addRow("File", self.path)
        form.addRow("Layer name", self.layer_name)
        form.addRow(self.selected)
        form.addRow(_buttons(self))

    def choice(self) -> ExportChoice:
        path = self.path.filePath()
        if path and not path.lower().endswith(".gpkg"):
            path += ".gpkg"
        return ExportChoice(path, self.layer_name.text().strip() or "think2seg_results", self.selected.isChecked())


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


class BatchDialog(QDialog):
    """Layer, question, tile size, overlap and output of a batch job (files on the backend's disk)."""

    def __init__(self, question: str, layer: QgsRasterLayer | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Think2Seg batch: every tile of a raster")
        form = QFormLayout(self)
        self.layer_box = QgsMapLayerComboBox()
        self.layer_box.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        if layer is not None:
            self.layer_box.setLayer(layer)
        self.question = QLineEdit(question)
        self.tile_size = _spin(64, 8192, 1024, suffix=" px")
        self.overlap = _spin(0, 4096, 128, suffix=" px")
        self.output = QgsFileWidget()
        self.output.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.output.setFilter("GeoPackage (*.gpkg)")
        self.resume = QCheckBox("Resume the run already in this file")
        self.overwrite = QCheckBox("Overwrite this file (start again)")
        self.resume.toggled.connect(lambda on: on and self.overwrite.setChecked(False))
        self.overwrite.toggled.connect(lambda on: on and self.resume.setChecked(False))
        self.layer_box.layerChanged.connect(self._default_output)
        self._default_output(self.layer_box.currentLayer())
        form.addRow("Raster", self.layer_box)
        form.addRow("Question", self.question)
        form.addRow("Tile size", self.tile_size)
        form.addRow("Overlap", self.overlap)
        form.addRow("Output GeoPackage", self.output)
        form.addRow(self.resume)
        form.addRow(self.overwrite)
        form.addRow(_buttons(self))

    def _default_output(self, layer: object) -> None:
        path = local_file(layer) if isinstance(layer, QgsRasterLayer) else None
        if path and not self.output.filePath():
            self.output.setFilePath(str(Path(path).with_name(Path(path).stem + "_think2seg.gpkg")))

    def choice(self) -> BatchChoice | str:
        """The job, or why it cannot run."""
        layer = self.layer_box.currentLayer()
        path = local_file(layer) if isinstance(layer, QgsRasterLayer) else None
        if path is None:
            return "batch jobs need a raster file that the backend can read: choose a file-based raster layer"
        if not self.question.text().strip():
            return "type a question first"
        output = self.output.filePath()
        if not output:
            return "choose the output GeoPackage"
        if not output.lower().endswith(".gpkg"):
            output += ".gpkg"
        return BatchChoice(
            layer,
            path,
            self.question.text().strip(),
            self.tile_size.value(),
            self.overlap.value(),
            output,
            self.resume.isChecked(),
            self.overwrite.isChecked(),
        )


class LogDialog(QDialog):
    def __init__(self, lines: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Think2Seg backend log")
        self.resize(800, 500)
        layout = QVBoxLayout(self)
        text = QPlainTextEdit("\n".join(lines) or "(the backend was not started from QGIS, or wrote nothing yet)")
        text.setReadOnly(True)
        layout.addWidget(text)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        close.rejected.connect(self.reject)
        layout.addWidget(close)
