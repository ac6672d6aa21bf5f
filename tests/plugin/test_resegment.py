"""Re-segment replaces the run it corrects (one undo step), sends only the ticked prompts, and drawn
prompts once; the prompt tools are checkable, let go on Esc, say what the next click does and keep
every instance at two points at most."""

from __future__ import annotations

from qgis.core import Qgis, QgsGeometry, QgsPointXY, QgsRectangle
from qgis.gui import QgsMapMouseEvent, QgsMapToolPan
from qgis.PyQt.QtCore import QEvent, QPoint, Qt
from qgis.PyQt.QtGui import QKeyEvent

from think2seg_qgis.prompt_tool import PromptTool
from think2seg_qgis.prompts import DRAWN, add_drawn, collect, instances

from qgis_helpers import wait_until

BOX = QgsRectangle(512100, 5261700, 512200, 5261800)  # EPSG:32633, inside the sample raster
RIVER = "segment the river"


def drawn_count(plugin, raster) -> int:
    layers = plugin.store.find(raster.crs())
    return sum(f["run_id"] == DRAWN for role in ("boxes", "points") for f in layers[role].getFeatures())


def run_ids(layer) -> set[str]:
    return {f["run_id"] for f in layer.getFeatures()}


def resegment(plugin, fake_backend) -> list[dict]:
    """Press Re-segment, wait for the run; the prompts the backend received."""
    before = len(fake_backend.sent("POST", "/v1/segment"))
    plugin.dock.resegment_button.click()
    assert wait_until(lambda: plugin.dock.run_button.isEnabled(), 10)
    sent = fake_backend.sent("POST", "/v1/segment")
    assert len(sent) == before + 1, "no request was sent"
    return sent[-1]["prompts"]


def ask(plugin, question: str = RIVER) -> None:
    plugin.dock.question.setEditText(question)
    plugin.controller.ask()
    assert wait_until(lambda: plugin.dock.run_button.isEnabled(), 10)


def draw_instance(plugin, raster, box: QgsRectangle = BOX, points=((512150, 5261750), (512160, 5261760))) -> None:
    add_drawn(plugin.store, raster, "box", QgsGeometry.fromRect(box))
    for x, y in points:
        add_drawn(plugin.store, raster, "point", QgsGeometry.fromPointXY(QgsPointXY(x, y)))


def test_resegment_replaces_the_run_it_corrects_in_one_undo_step(plugin, fake_backend, raster):
    plugin.dock.layer_box.setLayer(raster)
    ask(plugin)
    layers = plugin.store.find(raster.crs())
    (first,) = run_ids(layers["results"])
    assert layers["results"].featureCount() == 1 and layers["boxes"].featureCount() == 1

    prompts = resegment(plugin, fake_backend)
    assert len(prompts) == 1 and len(prompts[0]["points"]) == 2  # the run's own prompts, sent back
    (second,) = run_ids(layers["results"])  # replaced: one run's polygons, not two copies
    assert second != first and layers["results"].featureCount() == 1
    assert layers["boxes"].featureCount() == 1 and layers["points"].featureCount() == 2
    assert next(layers["results"].getFeatures())["question"] == RIVER  # the corrected run's question
    assert plugin.undo.count() == 2 and plugin.undo.undoText() == f"re-segment of “{RIVER}”"

    plugin.dock.undoRequested.emit()  # one step brings the corrected run back whole
    assert run_ids(layers["results"]) == {first} and run_ids(layers["boxes"]) == {first}
    assert layers["points"].featureCount() == 2
    plugin.dock.redoRequested.emit()
    assert run_ids(layers["results"]) == {second}


def test_the_panel_lists_the_prompts_and_unticked_ones_stay_out(plugin, fake_backend, raster):
    plugin.dock.layer_box.setLayer(raster)
    ask(plugin)
    draw_instance(plugin, raster)
    add_drawn(plugin.store, raster, "box", QgsGeometry.fromRect(QgsRectangle(512250, 5261650, 512300, 5261690)))
    add_drawn(plugin.store, raster, "point", QgsGeometry.fromPointXY(QgsPointXY(512260, 5261660)))
    plugin.refresh_prompts()
    listed = [plugin.dock.prompt_list.item(row).text() for row in range(plugin.dock.prompt_list.count())]
    assert listed == [
        "instance 1: box + 2 points",
        "drawn 1: box + 2 points",
        "drawn 2: box + 1 of 2 points: add one more (only its box is sent)",
    ]
    plugin.dock.prompt_list.item(0).setCheckState(Qt.CheckState.Unchecked)  # leave the model's instance out
    prompts = resegment(plugin, fake_backend)
    assert [p["box"] for p in prompts] == [
        [512100.0, 5261700.0, 512200.0, 5261800.0],
        [512250.0, 5261650.0, 512300.0, 5261690.0],
    ]
    assert "points" not in prompts[1]  # one point is not sent: the model takes exactly two
    assert drawn_count(plugin, raster) == 0  # both drawn instances were used, the lone point with its box


def test_an_instance_with_one_point_and_no_box_cannot_be_sent_and_says_why(plugin, raster, qgis_iface):
    plugin.dock.layer_box.setLayer(raster)
    add_drawn(plugin.store, raster, "point", QgsGeometry.fromPointXY(QgsPointXY(512150, 5261750)))
    (instance,) = instances(plugin.store, raster)
    assert not instance.sendable and "1 of 2 points" in instance.describe()
    prompt_set = collect(plugin.store, raster)
    assert prompt_set.prompts == [] and prompt_set.incomplete == [instance.describe()]
    plugin.refresh_prompts()
    item = plugin.dock.prompt_list.item(0)
    assert not item.flags() & Qt.ItemFlag.ItemIsEnabled  # listed, greyed out: it cannot be ticked
    plugin.dock.resegment_button.click()
    warnings = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning)
    assert any("not sent: drawn 1" in m and "exactly two points" in m for m in warnings), warnings


def test_drawn_prompts_are_sent_once_and_come_back_on_undo(plugin, fake_backend, raster, qgis_iface):
    plugin.dock.layer_box.setLayer(raster)
    draw_instance(plugin, raster)
    prompts = resegment(plugin, fake_backend)
    assert prompts == [
        {"box": [512100.0, 5261700.0, 512200.0, 5261800.0], "points": [[512150.0, 5261750.0], [512160.0, 5261760.0]]}
    ]
    assert drawn_count(plugin, raster) == 0, "the re-segment consumed the drawn prompts"
    assert plugin.undo.count() == 1

    # The next re-segment sends the reply's prompts (the golden reply has one box and two points), not the drawn ones.
    prompts = resegment(plugin, fake_backend)
    assert len(prompts) == 1 and prompts[0]["box"] == [512139.28571428574, 5261825.0, 512192.85714285716, 5261950.0]
    assert not any(m for m in qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical))
    assert plugin.store.find(raster.crs())["results"].featureCount() == 1  # replaced, not added

    plugin.undo.undo()
    plugin.undo.undo()  # back before the first re-segment: the drawn prompts are there again
    assert drawn_count(plugin, raster) == 3
    assert [p["box"] for p in collect(plugin.store, raster).prompts] == [[512100.0, 5261700.0, 512200.0, 5261800.0]]
    plugin.undo.redo()
    assert drawn_count(plugin, raster) == 0


def test_prompts_out_of_view_are_refused_before_sending(plugin, fake_backend, raster, qgis_iface):
    plugin.dock.layer_box.setLayer(raster)
    add_drawn(plugin.store, raster, "box", QgsGeometry.fromRect(BOX))
    qgis_iface.mapCanvas().setExtent(QgsRectangle(512250, 5261850, 512384, 5262000))  # the user panned away
    plugin.dock.resegment_button.click()
    warnings = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning)
    assert any("outside the visible part" in m and "pan or zoom" in m for m in warnings), warnings
    assert not fake_backend.sent("POST", "/v1/segment") and plugin.dock.run_button.isEnabled()
    assert drawn_count(plugin, raster) == 1  # kept for when they are in view again


def mouse(tool: PromptTool, kind: QEvent.Type, x: int, y: int) -> None:
    event = QgsMapMouseEvent(tool.canvas(), kind, QPoint(x, y), Qt.MouseButton.LeftButton)
    handler = tool.canvasPressEvent if kind == QEvent.Type.MouseButtonPress else tool.canvasReleaseEvent
    handler(event)


def click(tool: PromptTool, x: int, y: int, to_x: int | None = None, to_y: int | None = None) -> None:
    mouse(tool, QEvent.Type.MouseButtonPress, x, y)
    mouse(tool, QEvent.Type.MouseButtonRelease, x if to_x is None else to_x, y if to_y is None else to_y)


def test_a_click_is_not_a_box(plugin, raster, qgis_iface):
    plugin.dock.layer_box.setLayer(raster)
    plugin.dock.draw_box_button.click()
    tool = plugin.tools["box"]
    click(tool, 300, 300, 301, 300)
    warnings = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning)
    assert any("no box drawn" in m and "drag" in m for m in warnings), warnings
    assert plugin.store.find(raster.crs()) is None  # nothing drawn, nothing created
    click(tool, 250, 250, 350, 330)
    (box,) = plugin.store.find(raster.crs())["boxes"].getFeatures()
    assert box["run_id"] == DRAWN and box.geometry().boundingBox().width() > 0


def test_prompt_tools_are_checkable_let_go_on_esc_and_say_what_the_next_click_does(plugin, raster, qgis_iface):
    canvas, status = qgis_iface.mapCanvas(), qgis_iface.mainWindow().statusBar()
    pan = QgsMapToolPan(canvas)
    canvas.setMapTool(pan)
    plugin.dock.layer_box.setLayer(raster)
    box_button, point_button = plugin.dock.draw_box_button, plugin.dock.draw_point_button
    box_button.click()
    assert box_button.isChecked() and canvas.mapTool() is plugin.tools["box"]
    assert "drag a box" in status.currentMessage() and "Esc" in status.currentMessage()
    click(plugin.tools["box"], 200, 200, 400, 400)

    point_button.click()  # one tool at a time
    assert point_button.isChecked() and not box_button.isChecked()
    tool = plugin.tools["point"]
    click(tool, 300, 300)
    assert "1 of 2 points" in status.currentMessage()
    click(tool, 310, 310)
    assert "complete" in status.currentMessage()
    click(tool, 320, 320)  # a stray third click starts a new instance; it never becomes a third point
    drawn = [i for i in instances(plugin.store, raster) if i.drawn]
    assert [len(i.points) for i in drawn] == [2, 1] and drawn[1].box is None
    click(tool, 5, 5)  # drawn 2 has no box, so its second point may go anywhere in view
    drawn = [i for i in instances(plugin.store, raster) if i.drawn]
    assert [len(i.points) for i in drawn] == [2, 2]

    tool.keyPressEvent(QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_Escape, Qt.KeyboardModifier.NoModifier))
    assert canvas.mapTool() is not tool and not point_button.isChecked() and status.currentMessage() == ""

    box_button.click()
    box_button.click()  # a second click on a checked tool button lets go too
    assert canvas.mapTool() is not plugin.tools["box"] and not box_button.isChecked()


def test_a_point_outside_its_box_is_refused(plugin, raster):
    plugin.dock.layer_box.setLayer(raster)
    add_drawn(plugin.store, raster, "box", QgsGeometry.fromRect(BOX))
    try:
        add_drawn(plugin.store, raster, "point", QgsGeometry.fromPointXY(QgsPointXY(512300, 5261900)))
        raise AssertionError("a point outside the instance's box must be refused")
    except ValueError as exc:
        assert "outside the box" in str(exc)
    assert drawn_count(plugin, raster) == 1
