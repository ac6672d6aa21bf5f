"""One typed settings class over QgsSettings (section think2seg/)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from qgis.core import QgsSettings

PREFIX = "think2seg/"
HISTORY_SIZE = 20
WEB_RESOLUTION_DEFAULT_M = 0.5  # the ground resolution web layers are fetched at, metres per pixel
WEB_RESOLUTION_LIMITS_M = (0.01, 1000.0)
OUTLINES = {  # think2seg.server.schemas.Outline: how the backend draws the polygons' edges
    "pixel": "Pixel edges (exact)",
    "simplify": "Simplified (Douglas-Peucker)",
    "smooth": "Smooth (natural features)",
    "regularize": "Regularized (buildings, right angles)",
}


def default_token_file() -> str:
    """Where `think2seg serve` puts its token by default (platformdirs' user config folder)."""
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return str(base / "think2seg" / "token")


class Settings:
    """Typed access to the plugin's settings; every value has a default and a unit in its name."""

    DEFAULTS: dict[str, object] = {
        "backend_url": "http://127.0.0.1:8765",
        "backend_executable": "",
        "backend_arguments": "",
        "backend_lvlm": "",
        "request_timeout_s": 600,
        "start_timeout_s": 600,
        "max_side_px": 2048,
        "web_resolution_m": WEB_RESOLUTION_DEFAULT_M,
        "simplify_px": 0.0,
        "min_area_m2": 0.0,
        "min_score": 0.0,
        "outline": "pixel",
        "classes_on": False,
        "batch_tile_size_px": 1024,
        "batch_overlap_px": 128,
        "batch_output_folder": "",
        "batch_workers": 0,
    }

    def __init__(self, store: QgsSettings | None = None) -> None:
        self._store = store or QgsSettings()

    def _get(self, name: str) -> object:
        default = self.DEFAULTS[name]
        value = self._store.value(PREFIX + name, default)
        if value is None or (value == "" and not isinstance(default, str)):
            return default
        try:
            return type(default)(value)
        except (TypeError, ValueError):
            return default

    def _set(self, name: str, value: object) -> None:
        self._store.setValue(PREFIX + name, value)

    def _get_bool(self, name: str) -> bool:
        """A flag as stored: QgsSettings gives back "true"/"false" text from its INI files."""
        value = self._store.value(PREFIX + name, self.DEFAULTS[name])
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes")
        return bool(value)

    @property
    def backend_url(self) -> str:
        return str(self._get("backend_url")).rstrip("/")

    @backend_url.setter
    def backend_url(self, value: str) -> None:
        self._set("backend_url", value.strip())

    @property
    def token_file(self) -> str:
        """The backend's token file; empty in the settings means serve's default location."""
        return str(self._store.value(PREFIX + "token_file", "") or default_token_file())

    @token_file.setter
    def token_file(self, value: str) -> None:
        self._set("token_file", value.strip())

    @property
    def backend_executable(self) -> str:
        return str(self._get("backend_executable"))

    @backend_executable.setter
    def backend_executable(self, value: str) -> None:
        self._set("backend_executable", value.strip())

    @property
    def backend_arguments(self) -> str:
        """Extra `think2seg serve` options for a backend started from QGIS, e.g. --device cuda:1; an --lvlm
        here wins over :attr:`backend_lvlm`."""
        return str(self._get("backend_arguments"))

    @backend_arguments.setter
    def backend_arguments(self, value: str) -> None:
        self._set("backend_arguments", value.strip())

    @property
    def backend_lvlm(self) -> str:
        """The prompter model for a backend started from QGIS (``serve --lvlm``): a folder holding a
        Qwen2.5-VL checkpoint, e.g. a `think2seg train` run's RUN/lvlm; empty for the default Think2Seg-RS-3B."""
        return str(self._get("backend_lvlm"))

    @backend_lvlm.setter
    def backend_lvlm(self, value: str) -> None:
        self._set("backend_lvlm", value.strip())

    @property
    def request_timeout_s(self) -> int:
        return int(self._get("request_timeout_s"))

    @request_timeout_s.setter
    def request_timeout_s(self, value: int) -> None:
        self._set("request_timeout_s", int(value))

    @property
    def start_timeout_s(self) -> int:
        return int(self._get("start_timeout_s"))

    @start_timeout_s.setter
    def start_timeout_s(self, value: int) -> None:
        self._set("start_timeout_s", int(value))

    @property
    def max_side_px(self) -> int:
        return int(self._get("max_side_px"))

    @max_side_px.setter
    def max_side_px(self, value: int) -> None:
        self._set("max_side_px", int(value))

    @property
    def web_resolution_m(self) -> float:
        """The ground resolution (metres per pixel, at the view's centre) that layers without pixels of their
        own (XYZ, WMS, WMTS, ...) are fetched at, whatever the canvas's zoom; a stored value outside
        :data:`WEB_RESOLUTION_LIMITS_M` is brought inside them."""
        low, high = WEB_RESOLUTION_LIMITS_M
        value = float(self._get("web_resolution_m"))
        return min(max(value, low), high) if math.isfinite(value) else WEB_RESOLUTION_DEFAULT_M

    @web_resolution_m.setter
    def web_resolution_m(self, value: float) -> None:
        low, high = WEB_RESOLUTION_LIMITS_M
        if not low <= float(value) <= high:
            raise ValueError(f"the web layer resolution must be {low} to {high} m per pixel, not {value}")
        self._set("web_resolution_m", float(value))

    @property
    def simplify_px(self) -> float:
        return float(self._get("simplify_px"))

    @simplify_px.setter
    def simplify_px(self, value: float) -> None:
        self._set("simplify_px", float(value))

    @property
    def min_area_m2(self) -> float:
        return float(self._get("min_area_m2"))

    @min_area_m2.setter
    def min_area_m2(self, value: float) -> None:
        self._set("min_area_m2", float(value))

    @property
    def min_score(self) -> float:
        """Instances whose mask SAM rates below this predicted IoU (0 to 1; 0 keeps all) are left out."""
        value = float(self._get("min_score"))
        return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0

    @min_score.setter
    def min_score(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"the minimum SAM score is a predicted IoU from 0 to 1, not {value}")
        self._set("min_score", float(value))

    @property
    def outline(self) -> str:
        """How the backend draws polygon edges: one of :data:`OUTLINES` (a stored unknown one reads as pixel)."""
        value = str(self._get("outline"))
        return value if value in OUTLINES else "pixel"

    @outline.setter
    def outline(self, value: str) -> None:
        if value not in OUTLINES:
            raise ValueError(f"the outline must be one of {', '.join(OUTLINES)}, not {value!r}")
        self._set("outline", value)

    def vector_options(self) -> dict[str, object]:
        """How every segment request turns masks into polygons: simplify_px, min_area_m2, min_score, outline."""
        return {
            "simplify_px": self.simplify_px,
            "min_area_m2": self.min_area_m2,
            "min_score": self.min_score,
            "outline": self.outline,
        }

    @property
    def classes(self) -> list[tuple[str, str]]:
        """The panel's class list: (name, question) rows as the user left them (blank rows included)."""
        try:
            rows = json.loads(str(self._store.value(PREFIX + "classes", "[]") or "[]"))
        except ValueError:
            return []
        if not isinstance(rows, list):
            return []
        return [(str(row[0]), str(row[1])) for row in rows if isinstance(row, list) and len(row) == 2]

    @classes.setter
    def classes(self, rows: list[tuple[str, str]]) -> None:
        self._set("classes", json.dumps([[str(name), str(question)] for name, question in rows]))

    @property
    def classes_on(self) -> bool:
        """Whether Run asks the class list (True) or the question box (False)."""
        return self._get_bool("classes_on")

    @classes_on.setter
    def classes_on(self, value: bool) -> None:
        self._set("classes_on", bool(value))

    @property
    def batch_tile_size_px(self) -> int:
        """The Batch… dialog's last tile size."""
        return int(self._get("batch_tile_size_px"))

    @batch_tile_size_px.setter
    def batch_tile_size_px(self, value: int) -> None:
        self._set("batch_tile_size_px", int(value))

    @property
    def batch_overlap_px(self) -> int:
        return int(self._get("batch_overlap_px"))

    @batch_overlap_px.setter
    def batch_overlap_px(self, value: int) -> None:
        self._set("batch_overlap_px", int(value))

    @property
    def batch_output_folder(self) -> str:
        """The folder of the Batch… dialog's last output ('' before the first batch)."""
        return str(self._get("batch_output_folder"))

    @batch_output_folder.setter
    def batch_output_folder(self, value: str) -> None:
        self._set("batch_output_folder", value)

    @property
    def batch_workers(self) -> int:
        """The Batch… dialog's last number of Ray model workers (0: the backend's own models)."""
        return int(self._get("batch_workers"))

    @batch_workers.setter
    def batch_workers(self, value: int) -> None:
        self._set("batch_workers", int(value))

    @property
    def history(self) -> list[str]:
        value = self._store.value(PREFIX + "history", [])
        return [str(v) for v in (value if isinstance(value, list) else [value] if value else [])]

    def remember(self, question: str) -> None:
        """Put ``question`` first in the history (no duplicates, at most HISTORY_SIZE)."""
        history = [question] + [q for q in self.history if q != question]
        self._store.setValue(PREFIX + "history", history[:HISTORY_SIZE])

    def token(self) -> str:
        """The bearer token from the token file ('' when the file cannot be read)."""
        try:
            return Path(self.token_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def backend_is_local(self) -> bool:
        host = self.backend_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
        return host in ("127.0.0.1", "localhost", "::1")
