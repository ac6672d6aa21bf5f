"""Small dialogs: settings, export, backend log. Each only gathers values (the log follows the backend)."""

from __future__ import annotations

from pathlib import Path

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtGui import QTextCursor
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .backend import Backend
from .export import ExportChoice
from .log import guard_slot
from .settings import OUTLINES, WEB_RESOLUTION_LIMITS_M, Settings

BACKEND_SETTINGS = ("backend_url", "token_file", "backend_executable", "backend_arguments", "backend_lvlm")
TOOLTIPS = {
    "url": "Where the think2seg backend listens; http://127.0.0.1:8765 is this machine",
    "executable": "The think2seg command of the backend's virtual environment, e.g. …/.venv/bin/think2seg; "
    "Start in the panel runs it",
    "arguments": "More `think2seg serve` options for a backend started from QGIS, e.g. --device cuda:1. "
    "It may use any folder unless you give --data-root",
    "lvlm": "The prompter model (a folder) for a backend started from QGIS: a `think2seg train` run's RUN/lvlm, "
    "or any downloaded Qwen2.5-VL checkpoint folder (the one holding config.json). Choosing the run folder RUN "
    "itself offers its RUN/lvlm. Empty uses the backend's default, Think2Seg-RS-3B. An --lvlm in the extra "
    "options wins over this folder (a Hub id goes there: --lvlm OWNER/NAME). Restart the backend to use it",
    "timeout": "How long a request may stay silent before QGIS gives up on it",
    "start_timeout": "How long Start waits for the backend to answer its first health check",
    "max_side": "A visible window with a longer side is read decimated to this size (zoom in for full resolution)",
    "web_resolution": "Layers without pixels of their own (XYZ, WMS, WMTS services) are fetched at this ground "
    "resolution, in metres per pixel at the view's centre, whatever the map's zoom: finer shows more detail but "
    "covers less ground within the largest tile side. A view that needs more pixels is refused (zoom in)",
    "simplify": "The outline's tolerance in pixels. With pixel edges: Douglas-Peucker (0 keeps the exact edges); "
    "for the other outlines 0 is their default (1 px, 1.5 px to regularize)",
    "min_area": "Polygons smaller than this are dropped",
    "min_score": "Leave out instances whose mask SAM rates below this (its predicted IoU, 0 to 1: mask quality, "
    "not the model's certainty). 0 keeps every instance; each polygon's score is in the results' score field",
    "outline": "How polygon edges are drawn: exact pixel edges, simplified, smoothed (rivers, fields, forests) or "
    "regularized to right angles (buildings)",
}


RUN_MODEL = "lvlm"  # where `think2seg train -o RUN` writes its merged model: RUN/lvlm
RUN_RECORD = "train.json"  # what marks a `think2seg train` run folder, finished or not


def lvlm_folder_problem(folder: Path) -> str:
    """Why ``folder`` cannot be the backend's ``--lvlm`` ('' when it holds a model, i.e. a config.json)."""
    if (folder / "config.json").is_file():
        return ""
    if (folder / RUN_MODEL / "config.json").is_file():
        return (
            f"{folder} is a `think2seg train` run, not a model: its model is the run's RUN/lvlm, "
            f"{folder / RUN_MODEL}, now chosen instead. Press OK to use it."
        )
    if (folder / RUN_RECORD).is_file():
        return (
            f"{folder} is a `think2seg train` run that has no model yet: RUN/lvlm is written when its training "
            f"ends (continue a stopped run with `think2seg train -o {folder} --resume` and its options)."
        )
    if not folder.exists():
        return f"The prompter folder {folder} does not exist: choose the folder of a model."
    if not folder.is_dir():
        return f"{folder} is a file: choose the folder of a model (the one holding config.json)."
    return (
        f"{folder} holds no model (no config.json). A `think2seg train` run keeps its model in RUN/lvlm; "
        "a downloaded checkpoint is the folder with config.json in it."
    )


def lvlm_folder_suggestion(folder: Path) -> Path | None:
    """The model to choose instead of ``folder``: a finished training run's RUN/lvlm, else None."""
    if (folder / "config.json").is_file() or not (folder / RUN_MODEL / "config.json").is_file():
        return None
    return folder / RUN_MODEL


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
        self.token_file = QgsFileWidget()
        self.token_file.setFilePath(settings.token_file)
        self.executable = QgsFileWidget()
        self.executable.setFilePath(settings.backend_executable)
        self.arguments = QLineEdit(settings.backend_arguments)
        self.arguments.setPlaceholderText("e.g. --device cuda:1 --data-root /data")
        self.lvlm = QgsFileWidget()
        self.lvlm.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.lvlm.setFilePath(settings.backend_lvlm)
        self.lvlm.fileChanged.connect(self._forget_problem)
        self.problem = QLabel("")  # why OK did not close the dialog (the prompter folder); hidden until then
        self.problem.setWordWrap(True)
        self.problem.hide()
        self.timeout = _spin(5, 86400, settings.request_timeout_s, suffix=" s")
        self.start_timeout = _spin(5, 86400, settings.start_timeout_s, suffix=" s")
        self.max_side = _spin(64, 16384, settings.max_side_px, suffix=" px")
        self.web_resolution = _spin(*WEB_RESOLUTION_LIMITS_M, settings.web_resolution_m, decimals=2, suffix=" m/px")
        self.simplify = _spin(0, 100, settings.simplify_px, decimals=2, suffix=" px")
        self.min_area = _spin(0, 1e12, settings.min_area_m2, decimals=1, suffix=" m²")
        self.min_score = _spin(0, 1, settings.min_score, decimals=2)
        self.min_score.setSingleStep(0.05)
        self.outline = QComboBox()
        for value, label in OUTLINES.items():
            self.outline.addItem(label, value)
        self.outline.setCurrentIndex(self.outline.findData(settings.outline))
        for name, tooltip in TOOLTIPS.items():
            getattr(self, name).setToolTip(tooltip)
        self.token_file.setToolTip("The file `think2seg serve` keeps its token in (empty: serve's default)")
        self._before = self.backend_values()
        form.addRow("Backend URL", self.url)
        form.addRow("Token file", self.token_file)
        form.addRow("Backend executable (think2seg)", self.executable)
        form.addRow("Extra backend options", self.arguments)
        form.addRow("Prompter model (LVLM) folder", self.lvlm)
        form.addRow(self.problem)
        form.addRow("Request timeout", self.timeout)
        form.addRow("Backend start timeout", self.start_timeout)
        form.addRow("Largest tile side", self.max_side)
        form.addRow("Web layer resolution (XYZ, WMS, WMTS)", self.web_resolution)
        form.addRow("Outline", self.outline)
        form.addRow("Simplification", self.simplify)
        form.addRow("Minimum polygon area", self.min_area)
        form.addRow("Minimum SAM score", self.min_score)
        form.addRow(_buttons(self))

    def lvlm_path(self) -> Path | None:
        """The chosen prompter folder (``~`` expanded); None for the backend's default model."""
        text = self.lvlm.filePath().strip()
        return Path(text).expanduser() if text else None

    def lvlm_problem(self) -> str:
        """Why the chosen prompter folder cannot be saved ('' when it can, or when none is chosen).

        Reads the disk only; :meth:`accept` shows the text and, for a training run, chooses its RUN/lvlm."""
        folder = self.lvlm_path()
        return "" if folder is None else lvlm_folder_problem(folder)

    def accept(self) -> None:
        """Save and close, unless the prompter folder holds no model: then the dialog stays open with the
        reason under the folder. A training run's folder RUN is replaced by its RUN/lvlm (said so, not
        saved yet), so the next OK uses the model without the user browsing again."""
        folder = self.lvlm_path()
        if folder is not None and lvlm_folder_problem(folder):
            self._refuse_lvlm(folder)
            return
        s = self.settings
        s.backend_lvlm = "" if folder is None else str(folder)
        s.backend_url = self.url.text()
        s.token_file = self.token_file.filePath()
        s.backend_executable = self.executable.filePath()
        s.backend_arguments = self.arguments.text()
        s.request_timeout_s = self.timeout.value()
        s.start_timeout_s = self.start_timeout.value()
        s.max_side_px = self.max_side.value()
        s.web_resolution_m = self.web_resolution.value()
        s.simplify_px = self.simplify.value()
        s.min_area_m2 = self.min_area.value()
        s.min_score = self.min_score.value()
        s.outline = self.outline.currentData()
        super().accept()

    def _refuse_lvlm(self, folder: Path) -> None:
        """Say under the folder why it is not saved; for a training run, choose its RUN/lvlm (a note, not an error)."""
        problem = lvlm_folder_problem(folder)
        suggestion = lvlm_folder_suggestion(folder)
        if suggestion is not None:
            self.lvlm.setFilePath(str(suggestion))  # before the text is shown: editing the path hides it
        self.problem.setText(problem)
        self.problem.setStyleSheet("" if suggestion is not None else "color: #b00020")
        self.problem.show()

    @guard_slot
    def _forget_problem(self) -> None:
        self.problem.hide()

    def backend_values(self) -> tuple[str, ...]:
        return tuple(str(getattr(self.settings, name)) for name in BACKEND_SETTINGS)

    def backend_changed(self) -> bool:
        """Whether the backend's URL, token, executable, options or prompter folder changed (a running one
        needs a restart)."""
        return self.backend_values() != self._before


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


class LogDialog(QDialog):
    """The log of the backend started from QGIS, following it as it writes (health checks left out)."""

    def __init__(self, backend: Backend, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Think2Seg backend log")
        self.resize(800, 500)
        self.backend = backend
        layout = QVBoxLayout(self)
        self.text = QPlainTextEdit("\n".join(backend.log_lines))
        self.text.setReadOnly(True)
        self.text.setPlaceholderText(
            "The backend was not started from QGIS, or has written nothing yet. A backend started elsewhere "
            "logs where it runs."
        )
        layout.addWidget(self.text)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        close.rejected.connect(self.reject)
        layout.addWidget(close)
        backend.logged.connect(self.append)
        self.finished.connect(lambda _result: backend.logged.disconnect(self.append))

    @guard_slot
    def append(self, line: str) -> None:
        self.text.appendPlainText(line)
        self.text.moveCursor(QTextCursor.MoveOperation.End)
