"""Batch… with the panel's "Several classes" ticked: one backend job asks every class of each tile.
The dialog shows the classes instead of the question, the job carries exactly them (in the list's
order) and no question, its progress counts (tile, class) pairs, and its segments load coloured by
class (the panel's colours) in a group named after the classes. A class list that cannot be sent is
refused with what to do; a batch of one question is as before."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlparse

import pytest
from job_output import POLYGONS_PER_CLASS, write_job_output
from qgis.core import Qgis, QgsCategorizedSymbolRenderer, QgsProject, QgsVectorLayer
from qgis.PyQt.QtWidgets import QDialog

from think2seg_qgis import styles
from think2seg_qgis.batch_dialog import BatchDialog
from think2seg_qgis.batch_layers import OUTPUT_KEY, load_output
from think2seg_qgis.jobs import end_text, progress_text
from think2seg_qgis.results import GROUP

from qgis_helpers import FIXTURES, wait_until

CLASSES = [("buildings", "segment the buildings"), ("roads", "segment the roads"), ("water", "segment the lakes")]
TITLE = "3 classes: buildings, roads, water"
RIVER = "segment the river"


@pytest.fixture
def dialogs(monkeypatch) -> list[BatchDialog]:
    """The Batch… dialogs the plugin opens, each accepted as it opens (OK with its defaults)."""
    opened: list[BatchDialog] = []

    def accept(dialog: BatchDialog) -> QDialog.DialogCode:
        opened.append(dialog)
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(BatchDialog, "exec", accept)
    return opened


def tick_classes(plugin, raster, rows) -> None:
    plugin.dock.layer_box.setLayer(raster)
    plugin.dock.class_list.enabled.setChecked(True)
    plugin.dock.class_list.set_rows(rows)


def segments_layers(project: QgsProject) -> list[QgsVectorLayer]:
    return [
        layer
        for layer in project.mapLayers().values()
        if layer.customProperty(OUTPUT_KEY) and layer.name().startswith("segments")
    ]


def test_batch_with_classes_sends_exactly_the_classes_in_one_job(plugin, fake_backend, raster, dialogs):
    tick_classes(plugin, raster, [CLASSES[0], ("", ""), *CLASSES[1:]])  # a blank row is left out
    plugin.batch()
    (dialog,) = dialogs
    form = dialog.layout()
    assert form.labelForField(dialog.question) is None, "no question field"
    assert form.labelForField(dialog.classes_summary).text() == "Classes" and dialog.classes == dict(CLASSES)
    summary = dialog.classes_summary.text().splitlines()
    assert summary == [TITLE, *(f"• {name}: {question}" for name, question in CLASSES)]
    assert dialog.tiles.text() == "1 tile over 768 x 768 px, each asked 3 classes (3 tile × class pairs)"
    assert wait_until(lambda: fake_backend.sent("POST", "/v1/jobs"), 10)
    (job,) = fake_backend.sent("POST", "/v1/jobs")
    assert job["classes"] == dict(CLASSES) and list(job["classes"]) == [name for name, _ in CLASSES]
    assert "question" not in job
    golden = json.loads((FIXTURES / "api" / "job_classes.request.json").read_text())
    assert set(job) <= set(golden)
    assert wait_until(lambda: "tile × class pairs" in plugin.dock.jobs.text(), 10)
    assert plugin.dock.jobs.text() == (
        f"Batch “{TITLE}”: 3 of 12 tile × class pairs (4 tiles × 3 classes), 0.1 pairs/s, about 30 s left"
    )
    (task,) = plugin.tasks
    assert task.description().startswith(f"Think2Seg batch: {TITLE}")
    task.cancel()


def test_a_finished_job_with_classes_loads_its_segments_coloured_by_class(
    plugin, fake_backend, raster, dialogs, qgis_iface
):
    fake_backend.on_job = write_job_output
    tick_classes(plugin, raster, CLASSES)
    plugin.batch()
    successes = lambda: qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Success)  # noqa: E731
    assert wait_until(successes, 10)
    (text,) = successes()
    output = dialogs[0].choice().output_path
    group = f"{TITLE} ({output.rsplit('/', 1)[-1]})"
    assert text.endswith(
        f"Batch “{TITLE}” done: 41 polygons from 4 tiles × 3 classes; its layers are in the group Think2Seg › {group}"
    )
    (segments,) = segments_layers(plugin.project)
    assert segments.name() == f"segments — {TITLE}"
    assert plugin.project.layerTreeRoot().findGroup(GROUP).findGroup(group) is not None
    renderer = segments.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert [c.value() for c in renderer.categories()] == ["buildings", "roads", "water"]  # one per class
    colours = [c.symbol().color().name() for c in renderer.categories()]
    assert colours == [styles.fill(rgb).color().name() for rgb in styles.PALETTE[:3]]  # as the panel colours them
    assert len(set(colours)) == 3
    classes = sorted(f["class"] for f in segments.getFeatures())
    assert classes == sorted(name for name, _ in CLASSES for _ in range(POLYGONS_PER_CLASS))


def test_a_class_list_with_nothing_to_ask_is_refused_with_what_to_do(plugin, fake_backend, raster, dialogs, qgis_iface):
    warnings = lambda: qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning)  # noqa: E731
    tick_classes(plugin, raster, [("", "")])
    plugin.batch()
    assert any("the class list is empty: add a class" in m and "untick “Several classes”" in m for m in warnings())
    tick_classes(plugin, raster, [("roofs", "segment the roofs"), ("roofs", "segment the sheds")])
    plugin.batch()
    assert any("“roofs” is used twice (row 2)" in m for m in warnings())
    assert not dialogs and not fake_backend.sent("POST", "/v1/jobs")


def test_a_batch_of_one_question_is_as_before(plugin, fake_backend, raster, dialogs):
    plugin.dock.layer_box.setLayer(raster)
    plugin.dock.class_list.set_rows(CLASSES)  # a list kept, but not ticked
    plugin.dock.question.setEditText(RIVER)
    plugin.batch()
    (dialog,) = dialogs
    assert dialog.question.text() == RIVER and not dialog.classes
    assert dialog.layout().labelForField(dialog.question).text() == "Question"
    assert dialog.tiles.text() == "1 tile over 768 x 768 px"
    assert wait_until(lambda: fake_backend.sent("POST", "/v1/jobs"), 10)
    (job,) = fake_backend.sent("POST", "/v1/jobs")
    assert job["question"] == RIVER and "classes" not in job
    assert wait_until(lambda: "of 4 tiles" in plugin.dock.jobs.text(), 10)
    assert plugin.dock.jobs.text() == f"Batch “{RIVER}”: 1 of 4 tiles, 0.1 tiles/s, about 30 s left"
    for task in list(plugin.tasks):
        task.cancel()


def test_the_segments_of_one_question_keep_their_one_colour(project, tmp_path):
    output = str(tmp_path / "river.gpkg")
    write_job_output({"output_path": output, "question": RIVER})
    layers = load_output(project, output, RIVER)
    assert layers["segments"].renderer().symbol().color().name() == "#ff7f00"


def test_progress_and_end_count_tile_class_pairs():
    status = json.loads((FIXTURES / "api" / "job_classes_status.reply.json").read_text())
    running = {**status, "state": "running", "tiles_done": 12, "tiles_per_s": 2.5, "failures": 2, "eta_s": 20.0}
    assert progress_text(running) == (
        "12 of 48 tile × class pairs (16 tiles × 3 classes), 2.5 pairs/s, 2 failed, about 20 s left"
    )
    assert end_text(status) == f"Batch “{TITLE}” done: 41 polygons from 16 tiles × 3 classes"
    assert "2 tile × class pairs failed: open Batch…" in end_text({**status, "failures": 2})
    stopped = end_text({**status, "state": "cancelled", "tiles_done": 12})
    assert stopped.startswith(f"Batch “{TITLE}” stopped after 12 of 48 tile × class pairs.")
    single = json.loads((FIXTURES / "api" / "job_status.reply.json").read_text())
    assert end_text(single) == "Batch “segment the river” done: 16 polygons from 16 tiles"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"question": RIVER, "classes": {"a": "q"}}, "give a question or classes (one of the two)"),
        ({}, "give a question or classes (one of the two)"),
        ({"classes": {"a": " "}}, "class 'a' has an empty question"),
        ('{"classes": {"a": "q", "a": "r"}}', "the request names 'a' twice in one JSON object"),
    ],
)
def test_the_fake_backend_refuses_a_job_as_the_backend_does(fake_backend, tmp_path, body, message):
    base = {"raster_path": str(tmp_path / "r.tif"), "output_path": str(tmp_path / "o.gpkg")}
    raw = body if isinstance(body, str) else json.dumps({**base, **body})
    url = urlparse(fake_backend.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    connection.request("POST", "/v1/jobs", raw, {"Content-Type": "application/json"})
    reply = connection.getresponse()
    envelope = json.loads(reply.read())
    connection.close()
    assert reply.status == 422 and envelope["error"]["code"] == "invalid_input"
    assert message in envelope["error"]["message"]
    assert set(envelope) == set(json.loads((FIXTURES / "api" / "error.reply.json").read_text()))
