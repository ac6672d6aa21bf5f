"""Plugin parts without a backend: settings, SSE, GeoJSON, tile planning, results store, idioms."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer, QgsRectangle, QgsSettings

from think2seg_qgis.api.sse import SseParser
from think2seg_qgis.geojson import to_wkt
from think2seg_qgis.results import ResultStore
from think2seg_qgis.settings import Settings
from think2seg_qgis.tile import TileError, local_file, plan_tile

from qgis_helpers import FIXTURES, ROOT

SAMPLE = ROOT / "resources" / "sample" / "riverside.tif"


def test_settings_defaults_types_and_history():
    settings = Settings(QgsSettings())
    assert settings.backend_url == "http://127.0.0.1:8765" and settings.backend_is_local()
    settings.max_side_px = 1024
    assert Settings().max_side_px == 1024
    for question in ["a", "b", "a"]:
        settings.remember(question)
    assert settings.history[:2] == ["a", "b"]
    settings.backend_url = "http://gpu-box:8765/"
    assert settings.backend_url == "http://gpu-box:8765" and not settings.backend_is_local()
    settings.backend_url = "http://127.0.0.1:8765"


def test_sse_parser_handles_split_events():
    parser = SseParser()
    stream = b'event: reasoning\ndata: {"text": "The ri"}\n\nevent: reasoning\ndata: {"text": "ver"}\n\nevent: result\ndata: {"status": "ok"}\n\n'
    events = []
    for start in range(0, len(stream), 7):
        events += parser.feed(stream[start : start + 7])
    assert events == [("reasoning", {"text": "The ri"}), ("reasoning", {"text": "ver"}), ("result", {"status": "ok"})]


def test_geojson_to_wkt_keeps_full_precision():
    polygon = {
        "type": "Polygon",
        "coordinates": [
            [[512000.123456789, 5261999.5], [512001.0, 5261999.5], [512001.0, 5262000.0], [512000.123456789, 5261999.5]]
        ],
    }
    assert to_wkt(polygon).startswith("POLYGON ((512000.123456789 5261999.5, ")
    assert to_wkt({"type": "Point", "coordinates": [1.5, 2.25]}) == "POINT (1.5 2.25)"


def test_tile_plan_by_reference_and_refusals(qgis_iface, project, tmp_path):
    canvas = qgis_iface.mapCanvas()
    raster = shutil.copy(SAMPLE, tmp_path / "riverside.tif")
    layer = QgsRasterLayer(str(raster), "riverside")
    project.addMapLayer(layer)
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(QgsRectangle(512100, 5261700, 512300, 5261900))
    plan = plan_tile(canvas, layer, Settings())
    assert plan.by_reference and plan.raster_path == str(raster) and local_file(layer) == str(raster)
    body = plan.reference_body()
    assert body["bounds_crs"] == "EPSG:32633"
    visible = canvas.extent().intersect(layer.extent())
    assert body["bounds"] == [visible.xMinimum(), visible.yMinimum(), visible.xMaximum(), visible.yMaximum()]
    assert visible.contains(QgsRectangle(512100, 5261700, 512300, 5261900))  # the canvas widens to its aspect
    canvas.setExtent(QgsRectangle(0, 0, 10, 10))
    try:
        plan_tile(canvas, layer, Settings())
        raise AssertionError("a layer out of view must be refused")
    except TileError as exc:
        assert "not in view" in str(exc)
    try:
        plan_tile(canvas, None, Settings())
        raise AssertionError("no layer must be refused")
    except TileError as exc:
        assert "choose a raster layer" in str(exc)


def test_layer_without_crs_is_refused(qgis_iface, project, tmp_path):
    raster = shutil.copy(SAMPLE, tmp_path / "nocrs.tif")
    layer = QgsRasterLayer(str(raster), "no crs")
    layer.setCrs(QgsCoordinateReferenceSystem())
    try:
        plan_tile(qgis_iface.mapCanvas(), layer, Settings())
        raise AssertionError("a layer without CRS must be refused")
    except TileError as exc:
        assert "has no CRS" in str(exc)


def test_result_store_adds_and_removes_a_run(project):
    import json

    from qgis.core import NULL

    reply = json.loads((FIXTURES / "api" / "segment.reply.json").read_text())
    store = ResultStore(project)
    crs = QgsCoordinateReferenceSystem("EPSG:32633")
    run = store.features(reply, crs, "/data/riverside.tif")
    store.add(run)
    layers = store.layers(crs)
    assert (
        layers["results"].featureCount() == len(reply["features"]) and layers["results"].crs().authid() == "EPSG:32633"
    )
    assert layers["boxes"].featureCount() == 1 and layers["points"].featureCount() == 2
    assert Path(layers["results"].source().split("|")[0]).parent == Path(project.homePath())
    feature = next(layers["results"].getFeatures())
    assert (
        feature["question"] == reply["question"]
        and abs(feature["area_m2"] - reply["features"][0]["properties"]["area_m2"]) < 1e-6
    )
    golden = reply["features"][0]["properties"]  # SAM's score per polygon and per prompt, in the attribute table
    assert feature["score"] == golden["score"] and feature["instance"] == golden["instance"]
    assert next(layers["boxes"].getFeatures())["score"] == reply["prompts"]["features"][0]["properties"]["score"]
    assert {p["score"] for p in layers["points"].getFeatures()} == {golden["score"]}
    older = json.loads(json.dumps(reply))  # a backend before scores: the fields are NULL, not 0
    for f in older["features"]:
        del f["properties"]["score"]
    unscored = store.features(older, crs, "/data/riverside.tif")
    assert unscored.results[0]["score"] in (None, NULL) and unscored.results[0]["area_m2"] > 0
    store.remove(run)
    assert layers["results"].featureCount() == 0 and layers["boxes"].featureCount() == 0
    assert [g.name() for g in project.layerTreeRoot().findGroups()] == ["Think2Seg"]


QT5_ONLY = [
    (r"\bexec_\(", "use exec(), not exec_()"),
    (r"\b(from|import)\s+PyQt5\b", "import from qgis.PyQt"),
    (r"\bQRegExp\b|\bQDesktopWidget\b|\bQStringListModel\b", "class removed in Qt6"),
]
# Enum values must be scoped (Qt.AlignmentFlag.AlignLeft, not Qt.AlignLeft): a Class.Name that is
# neither followed by . or ( nor used as a type annotation is an unscoped enum value.
UNSCOPED = re.compile(
    r"\b(Qt|QDialog|QDialogButtonBox|QSizePolicy|QProcess|QNetworkReply|QNetworkRequest|QIODevice|QComboBox|"
    r"QTextCursor|QHttpMultiPart|QVariant|QMetaType|QFileDialog|QMessageBox|QSettings)\.[A-Z]\w*\b(?!\s*[.(])"
)


def _qt5_problems(line: str) -> list[str]:
    problems = [advice for pattern, advice in QT5_ONLY if re.search(pattern, line)]
    for match in UNSCOPED.finditer(line):
        before = line[: match.start()].rstrip()
        if not before.endswith((":", "->", "|", "[")):  # type annotations name enum types, not values
            problems.append("use the fully qualified (scoped) enum")
    return problems


def test_no_module_uses_qt5_only_idioms():
    problems = []
    for path in sorted((ROOT / "think2seg_qgis").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            problems += [
                f"{path.relative_to(ROOT)}:{number}: {advice}: {line.strip()}" for advice in _qt5_problems(line)
            ]
    assert not problems, "\n".join(problems)


def test_the_idiom_check_catches_qt5_code():
    assert _qt5_problems("dialog.exec_()") and _qt5_problems("from PyQt5.QtCore import Qt")
    assert _qt5_problems("label.setAlignment(Qt.AlignLeft)") and _qt5_problems("if code == QDialog.Accepted:")
    assert not _qt5_problems("label.setAlignment(Qt.AlignmentFlag.AlignLeft)")
    assert not _qt5_problems("def f(error: QProcess.ProcessError) -> None:")


def test_plugin_imports_only_qgis_pyqt_and_the_standard_library():
    import sys

    allowed = {"qgis", "think2seg_qgis"} | set(sys.stdlib_module_names) | {"__future__"}
    for path in (ROOT / "think2seg_qgis").rglob("*.py"):
        for match in re.finditer(r"^\s*(?:from|import)\s+([\w.]+)", path.read_text(), re.MULTILINE):
            name = match.group(1)
            assert name.startswith(".") or name.split(".")[0] in allowed, f"{path.name} imports {name}"
    assert QgsProject.instance() is not None
