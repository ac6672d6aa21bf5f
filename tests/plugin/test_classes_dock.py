"""Several classes from the panel and from Processing: the class list sends `classes`, each class's
answer is shown, overlaps are told, the results layer is coloured by class (later classes get a
colour too), min_score/outline go with every request, and Settings keep all of it. Processing asks
every class in one batch job."""

from __future__ import annotations

import json

import pytest
from job_output import write_job_output
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsExpressionContextUtils,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsRenderContext,
    QgsSettings,
    QgsVectorLayer,
)

from think2seg_qgis.class_list import ClassList
from think2seg_qgis.classes import ClassError, class_request, parse_class_lines
from think2seg_qgis.dialogs import SettingsDialog
from think2seg_qgis.settings import Settings

from qgis_helpers import FIXTURES, wait_until

GOLDEN = json.loads((FIXTURES / "api" / "segment.reply.json").read_text())
CLASSES = [("buildings", "segment the buildings"), ("water", "segment the lakes")]
RIVER = "segment the river"


def run(plugin, rows=None, *, question: str = "") -> None:
    """Ask the class list (``rows``) or the question from the panel and wait for the answer."""
    dock = plugin.dock
    dock.class_list.enabled.setChecked(rows is not None)
    if rows is not None:
        dock.class_list.set_rows(rows)
    else:
        dock.question.setEditText(question)
    plugin.controller.ask()
    assert not dock.run_button.isEnabled(), "the run did not start"
    assert wait_until(lambda: dock.run_button.isEnabled(), 10)


def results_layer(plugin, raster) -> QgsVectorLayer:
    return plugin.store.find(raster.crs())["results"]


def drawn_colours(layer: QgsVectorLayer) -> dict[str, str]:
    """The colour each polygon's class is drawn in (as QGIS picks the symbol when it renders)."""
    renderer = layer.renderer().clone()
    context = QgsRenderContext()
    context.expressionContext().appendScopes(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
    renderer.startRender(context, layer.fields())
    colours = {}
    for feature in layer.getFeatures():
        context.expressionContext().setFeature(feature)
        colours[feature["class"]] = renderer.symbolForFeature(feature, context).color().name()
    renderer.stopRender(context)
    return colours


def categories(layer: QgsVectorLayer) -> dict[str, object]:
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    return {category.value(): category for category in renderer.categories()}


def test_the_class_list_sends_classes_and_each_polygon_keeps_its_class_and_score(plugin, fake_backend, raster):
    plugin.dock.layer_box.setLayer(raster)
    plugin.settings.min_score, plugin.settings.outline = 0.5, "regularize"
    run(plugin, CLASSES)
    (body,) = fake_backend.sent("POST", "/v1/segment")
    assert body["classes"] == dict(CLASSES) and "question" not in body and "prompts" not in body
    assert list(body["classes"]) == ["buildings", "water"]  # the rows' order
    assert (body["min_score"], body["outline"]) == (0.5, "regularize")
    layer = results_layer(plugin, raster)
    features = list(layer.getFeatures())
    assert sorted(f["class"] for f in features) == ["buildings", "water"]
    golden_score = GOLDEN["features"][0]["properties"]["score"]
    assert all(f["score"] == pytest.approx(golden_score) for f in features)
    assert {f["question"] for f in features} == {"buildings, water"}  # a run of classes is named by them
    assert plugin.undo.count() == 1 and "buildings, water" in plugin.undo.text(0)


def test_the_reasoning_covers_each_class_and_the_result_line_tells_the_overlaps(plugin, raster):
    plugin.dock.layer_box.setLayer(raster)
    run(plugin, CLASSES)
    reasoning = plugin.dock.reasoning.toPlainText()
    for name, question in CLASSES:
        assert f"■ {name} — ok: 1 polygon" in reasoning and f"Looking for {question}:" in reasoning
    assert "SAM score 0.94" in reasoning and reasoning.endswith("→ 2 instances (boxes and points) on the map")
    line = plugin.dock.result.text()
    assert line.startswith("2 classes (buildings, water) — ok: 2 polygons")
    assert "(buildings 1, water 1)" in line
    assert "1 overlap between classes: buildings & water 6,687.5 m² (the polygons are kept in both)" in line


def test_a_class_without_target_is_told_and_no_overlap_is_claimed(plugin, fake_backend, raster):
    fake_backend.class_status = {"water": "no_target"}
    plugin.dock.layer_box.setLayer(raster)
    run(plugin, CLASSES)
    reasoning = plugin.dock.reasoning.toPlainText()
    assert "■ water — no_target: no polygons (the model found no target in this view)" in reasoning
    assert "No water here." in reasoning and "■ buildings — ok: 1 polygon" in reasoning
    line = plugin.dock.result.text()
    assert "(buildings 1, water 0)" in line and "overlap" not in line
    assert [f["class"] for f in results_layer(plugin, raster).getFeatures()] == ["buildings"]


def test_the_results_layer_gets_a_colour_per_class_and_later_classes_get_theirs(plugin, raster):
    plugin.dock.layer_box.setLayer(raster)
    run(plugin, CLASSES)
    layer = results_layer(plugin, raster)
    first = categories(layer)
    assert set(first) == {"buildings", "water"} and [c.label() for c in first.values()] == ["buildings", "water"]
    assert first["buildings"].symbol().color() != first["water"].symbol().color()
    assert drawn_colours(layer) == {name: first[name].symbol().color().name() for name in ("buildings", "water")}
    renderer = layer.renderer()
    water_key = next(item.ruleKey() for item in renderer.legendSymbolItems() if item.label() == "water")
    renderer.checkLegendSymbolItem(water_key, False)  # unticked in the Layers panel
    run(plugin, [("buildings", "segment the buildings"), ("roads", "segment the roads")])
    later = categories(layer)
    assert list(later) == ["buildings", "water", "roads"]  # one category per class, the new one added
    assert later["buildings"].symbol().color() == first["buildings"].symbol().color()  # keeps its colour
    assert later["roads"].symbol().color() not in (first["buildings"].symbol().color(), first["water"].symbol().color())
    assert not later["water"].renderState() and later["roads"].renderState()  # a hidden class stays hidden
    assert {f["class"] for f in layer.getFeatures()} == {"buildings", "water", "roads"}
    plugin.undo.undo()
    assert list(categories(layer)) == ["buildings", "water"]  # an undone class leaves the legend


def test_a_single_question_is_asked_as_before_and_runs_stay_coloured_by_run(plugin, fake_backend, raster):
    plugin.dock.layer_box.setLayer(raster)
    plugin.dock.class_list.set_rows(CLASSES)  # a list kept, but not ticked
    run(plugin, question=RIVER)
    run(plugin, question="segment the water")
    bodies = fake_backend.sent("POST", "/v1/segment")
    assert [b.get("question") for b in bodies] == [RIVER, "segment the water"]
    assert all("classes" not in b for b in bodies) and bodies[0]["outline"] == "pixel" and bodies[0]["min_score"] == 0
    assert plugin.dock.question.isEnabled() and not plugin.dock.class_list.table.isVisible()
    layer = results_layer(plugin, raster)
    assert layer.renderer().classAttribute() == "run_id" and len(layer.renderer().categories()) == 2
    assert {f["class"] for f in layer.getFeatures()} == {RIVER, "segment the water"}  # its class is its question
    assert plugin.dock.reasoning.toPlainText().startswith(GOLDEN["reasoning"])
    assert plugin.dock.result.text().startswith("“segment the water” — ok: 1 polygon") and "overlap" not in (
        plugin.dock.result.text()
    )
    run(plugin, CLASSES)  # a run of classes: now by class, a single question's class being its question
    assert set(categories(layer)) == {RIVER, "segment the water", "buildings", "water"}


def test_a_class_list_that_cannot_be_sent_is_refused_with_what_to_do(plugin, fake_backend, raster, qgis_iface):
    plugin.dock.layer_box.setLayer(raster)
    plugin.dock.class_list.enabled.setChecked(True)
    warnings = lambda: qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning)  # noqa: E731
    plugin.dock.class_list.set_rows([("", "")])  # the tick adds an empty row to fill in
    plugin.controller.ask()
    assert any("the class list is empty" in m for m in warnings())
    plugin.dock.class_list.set_rows([("roofs", "segment the roofs"), ("roofs", "segment the sheds")])
    plugin.controller.ask()
    assert any("“roofs” is used twice (row 2)" in m for m in warnings())
    plugin.dock.class_list.set_rows([("roofs", "  ")])
    plugin.controller.ask()
    assert any("class “roofs” (row 1) has no question" in m for m in warnings())
    assert not fake_backend.sent("POST", "/v1/segment") and plugin.dock.run_button.isEnabled()


def test_the_class_list_rows_are_checked_as_the_backend_checks_them():
    assert class_request([("", "segment the roofs"), (" ", " "), (" sheds ", " the sheds ")]) == {
        "segment the roofs": "segment the roofs",  # no name: named by its question
        "sheds": "the sheds",
    }
    with pytest.raises(ClassError, match="33 classes are more than one request may ask \\(32\\)"):
        class_request([(f"c{i}", "q") for i in range(33)])
    with pytest.raises(ClassError, match="row 1 is 101 characters long"):
        class_request([("x" * 101, "q")])
    with pytest.raises(ClassError, match="longer than 1000 characters"):
        class_request([("x", "q" * 1001)])
    text = "# my classes\nbuildings: segment the buildings\n\n  water :segment the lakes: and ponds \nthe roads\n"
    assert parse_class_lines(text) == {
        "buildings": "segment the buildings",
        "water": "segment the lakes: and ponds",
        "the roads": "the roads",
    }


def test_settings_keep_the_class_list_the_tick_min_score_and_outline(plugin):
    settings = plugin.settings
    assert (settings.min_score, settings.outline, settings.classes, settings.classes_on) == (0.0, "pixel", [], False)
    plugin.dock.class_list.enabled.setChecked(True)
    plugin.dock.class_list.set_rows(CLASSES + [("", "")])
    again = Settings(QgsSettings())  # as in the next session
    assert again.classes == CLASSES + [("", "")] and again.classes_on is True
    panel = ClassList(again)
    assert panel.active() and panel.rows() == CLASSES + [("", "")] and panel.classes() == dict(CLASSES)
    panel.table.selectRow(0)
    panel.remove_rows()
    assert Settings().classes == [("water", "segment the lakes"), ("", "")]
    panel.enabled.setChecked(False)
    assert Settings().classes_on is False
    QgsSettings().setValue("think2seg/outline", "wobbly")  # edited by hand
    QgsSettings().setValue("think2seg/min_score", "7")
    assert (Settings().outline, Settings().min_score) == ("pixel", 1.0)
    with pytest.raises(ValueError, match="from 0 to 1"):
        settings.min_score = 1.5
    with pytest.raises(ValueError, match="one of pixel, simplify, smooth, regularize"):
        settings.outline = "wobbly"


def test_the_settings_dialog_saves_min_score_and_outline_and_keeps_the_rest(plugin):
    plugin.settings.web_resolution_m = 0.3
    dialog = SettingsDialog(plugin.settings)
    assert dialog.min_score.value() == 0.0 and dialog.outline.currentData() == "pixel"
    assert "predicted IoU" in dialog.min_score.toolTip() and "buildings" in dialog.outline.toolTip()
    dialog.min_score.setValue(0.75)
    dialog.outline.setCurrentIndex(dialog.outline.findData("smooth"))
    dialog.accept()
    saved = Settings()
    assert (saved.min_score, saved.outline, saved.web_resolution_m) == (0.75, "smooth", pytest.approx(0.3))
    assert saved.vector_options() == {"simplify_px": 0.0, "min_area_m2": 0.0, "min_score": 0.75, "outline": "smooth"}
    dialog = SettingsDialog(saved)
    assert dialog.min_score.value() == 0.75 and dialog.outline.currentData() == "smooth"


# --- Processing ---------------------------------------------------------------------------------------


class Feedback(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []
        self.infos: list[str] = []

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N803 - QGIS's name
        self.errors.append(error)

    def pushInfo(self, info: str) -> None:
        self.infos.append(info)


def run_algorithm(project, parameters: dict) -> tuple[dict, bool, Feedback, QgsProcessingContext]:
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("think2seg:segment_raster_by_question")
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = Feedback()
    results, ok = algorithm.run(parameters, context, feedback)
    return results, ok, feedback, context


def test_processing_asks_every_class_in_one_job_and_colours_the_output_by_class(plugin, fake_backend, raster, tmp_path):
    fake_backend.on_job = write_job_output
    plugin.settings.min_score, plugin.settings.outline = 0.25, "smooth"
    output = tmp_path / "town.gpkg"
    lines = "buildings: segment the buildings\nwater: segment the lakes"
    results, ok, feedback, context = run_algorithm(
        plugin.project, {"INPUT": raster, "CLASSES": lines, "OUTPUT": str(output)}
    )
    assert ok, feedback.errors
    (job,) = fake_backend.sent("POST", "/v1/jobs")  # one job, not one per class
    assert job["classes"] == dict(CLASSES) and list(job["classes"]) == ["buildings", "water"]
    assert "question" not in job and job["output_path"] == str(output)
    assert (job["min_score"], job["outline"], job["resume"]) == (0.25, "smooth", False)
    assert sorted(path.name for path in tmp_path.glob("town*")) == ["town.gpkg"]  # no per-class files
    segments = QgsVectorLayer(results["SEGMENTS"], "segments", "ogr")
    assert segments.isValid() and results["SEGMENTS"] == f"{output}|layername=segments"
    rows = sorted((f["class"], round(f["score"], 2), f["question"]) for f in segments.getFeatures())
    assert rows == [
        ("buildings", 0.8, "segment the buildings"),
        ("buildings", 0.9, "segment the buildings"),
        ("water", 0.8, "segment the lakes"),
        ("water", 0.9, "segment the lakes"),
    ]
    assert segments.crs().authid() == "EPSG:32633"
    assert any(info.startswith("Batch “2 classes: buildings, water” done") for info in feedback.infos), feedback.infos
    details = context.layersToLoadOnCompletion()[results["SEGMENTS"]]
    assert details.name == "Think2Seg: buildings, water"
    details.postProcessor().postProcessLayer(segments, context, feedback)  # as QGIS does once it loads it
    assert list(categories(segments)) == ["buildings", "water"]


def test_processing_resume_continues_the_one_file_of_the_classes(plugin, fake_backend, raster, tmp_path):
    fake_backend.on_job = write_job_output
    output = tmp_path / "town.gpkg"
    lines = "buildings: segment the buildings\nwater: segment the lakes"
    parameters = {"INPUT": raster, "CLASSES": lines, "OUTPUT": str(output), "RESUME": True}
    _results, ok, feedback, _context = run_algorithm(plugin.project, parameters)
    assert ok, feedback.errors
    (job,) = fake_backend.sent("POST", "/v1/jobs")
    assert (job["resume"], job["overwrite"], job["output_path"]) == (True, False, str(output))
    assert job["classes"] == dict(CLASSES)


def test_processing_still_asks_one_question_into_its_output(plugin, fake_backend, raster, tmp_path):
    fake_backend.on_job = write_job_output
    output = tmp_path / "river.gpkg"
    results, ok, feedback, _context = run_algorithm(
        plugin.project, {"INPUT": raster, "QUESTION": RIVER, "OUTPUT": str(output)}
    )
    assert ok, feedback.errors
    (job,) = fake_backend.sent("POST", "/v1/jobs")
    assert (job["question"], job["output_path"], job["outline"]) == (RIVER, str(output), "pixel")
    segments = QgsVectorLayer(results["SEGMENTS"], "segments", "ogr")
    assert {f["class"] for f in segments.getFeatures()} == {RIVER}


@pytest.mark.parametrize(
    ("question", "lines", "error"),
    [
        (RIVER, "water: segment the lakes", "either a QUESTION or CLASSES, not both"),
        ("", "", "the question is empty"),
        ("", "a: one\na: two", "“a” is used twice"),
    ],
)
def test_processing_refuses_an_unclear_request(plugin, fake_backend, raster, tmp_path, question, lines, error):
    parameters = {"INPUT": raster, "QUESTION": question, "CLASSES": lines, "OUTPUT": str(tmp_path / "x.gpkg")}
    _results, ok, feedback, _context = run_algorithm(plugin.project, parameters)
    assert not ok and any(error in message for message in feedback.errors), feedback.errors
    assert not fake_backend.sent("POST", "/v1/jobs")


def test_each_class_keeps_its_own_instances_for_re_segment(plugin, fake_backend, raster):
    plugin.dock.layer_box.setLayer(raster)
    run(plugin, CLASSES)
    layers = plugin.store.find(raster.crs())
    boxes = sorted((f["class"], f["instance"]) for f in layers["boxes"].getFeatures())
    assert boxes == [("buildings", 0), ("water", 1)]  # both classes' instance 0: numbered apart in the run
    points = sorted((f["class"], f["instance"], f["point"]) for f in layers["points"].getFeatures())
    assert points == [("buildings", 0, 0), ("buildings", 0, 1), ("water", 1, 0), ("water", 1, 1)]
    assert sorted((f["class"], f["instance"]) for f in layers["results"].getFeatures()) == boxes
    items = [plugin.dock.prompt_list.item(row) for row in range(plugin.dock.prompt_list.count())]
    assert len(items) == 2 and all("add one more" not in item.text() for item in items), [i.text() for i in items]
    plugin.resegment()
    assert wait_until(lambda: plugin.dock.run_button.isEnabled() and len(fake_backend.sent("POST", "/v1/segment")) == 2)
    assert len(fake_backend.sent("POST", "/v1/segment")[-1]["prompts"]) == 2
