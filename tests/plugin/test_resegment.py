"""Re-segment: hand-drawn prompts are sent once (the reply's prompts replace them, in one undo
step), a click is not a box, and prompts out of view are refused before anything is sent."""

from __future__ import annotations

from qgis.core import Qgis, QgsGeometry, QgsPointXY, QgsRectangle
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QEvent, QPoint, Qt

from think2seg_qgis.prompts import DRAWN, PromptTool, add_drawn, collect

from qgis_helpers import wait_until

BOX = QgsRectangle(512100, 5261700, 512200, 5261800)  # EPSG:32633, inside the sample raster


def drawn_count(plugin, raster) -> int:  # noqa: ANN001
    layers = plugin.store.find(raster.crs())
    return sum(f["run_id"] == DRAWN for role in ("boxes", "points") for f in layers[role].getFeatures())


def resegment(plugin, fake_backend) -> list[dict]:  # noqa: ANN001
    """Press Re-segment, wait for the run; the prompts the backend received."""
    before = len(fake_backend.sent("POST", "/v1/segment"))
    plugin.dock.resegment_button.click()
    assert wait_until(lambda: plugin.dock.run_button.isEnabled(), 10)
    sent = fake_backend.sent("POST", "/v1/segment")
    assert len(sent) == before + 1, "no request was sent"
    return sent[-1]["prompts"]


def test_drawn_prompts_are_sent_once_and_come_back_on_undo(plugin, fake_backend, raster, qgis_iface):
    plugin.dock.layer_box.setLayer(raster)
    add_drawn(plugin.store, raster, "box", QgsGeometry.fromRect(BOX))
    for x, y in ((512150, 5261750), (512160, 5261760)):
        add_drawn(plugin.store, raster, "point", QgsGeometry.fromPointXY(QgsPointXY(x, y)))
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


def test_a_click_is_not_a_box(plugin, raster, qgis_iface):
    plugin.dock.layer_box.setLayer(raster)
    plugin.dock.draw_box_button.click()
    tool = plugin.tool
    mouse(tool, QEvent.Type.MouseButtonPress, 300, 300)
    mouse(tool, QEvent.Type.MouseButtonRelease, 301, 300)
    warnings = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning)
    assert any("no box drawn" in m and "drag" in m for m in warnings), warnings
    assert plugin.store.find(raster.crs()) is None  # nothing drawn, nothing created
    mouse(tool, QEvent.Type.MouseButtonPress, 250, 250)
    mouse(tool, QEvent.Type.MouseButtonRelease, 350, 330)
    (box,) = plugin.store.find(raster.crs())["boxes"].getFeatures()
    assert box["run_id"] == DRAWN and box.geometry().boundingBox().width() > 0
