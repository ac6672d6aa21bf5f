"""Issue 11, items 4 and 6: the map never moves by itself (Zoom to result does it on request); undo
and redo say what they undo, follow Ctrl+Z / Ctrl+Shift+Z in the panel, skip empty runs, and the
result line always matches the map."""

from __future__ import annotations

import copy

from qgis.core import QgsRectangle
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication

from qgis_helpers import wait_until

RIVER = "segment the river"
VIEW = QgsRectangle(512000, 5261616, 512120, 5261736)  # away from the golden reply's polygon


def ask(plugin, question: str = RIVER) -> None:
    plugin.dock.question.setEditText(question)
    plugin.controller.ask()
    assert wait_until(lambda: plugin.dock.run_button.isEnabled(), 10)


def test_the_map_stays_where_the_user_put_it_until_zoom_to_result(plugin, raster, qgis_iface):
    canvas = qgis_iface.mapCanvas()
    canvas.setExtent(VIEW)
    before = canvas.extent().toString(6)
    plugin.dock.layer_box.setLayer(raster)
    ask(plugin)
    assert plugin.undo.count() == 1
    assert canvas.extent().toString(6) == before, "the answer must not move the map"
    plugin.dock.zoom_button.click()
    polygon = next(plugin.store.find(raster.crs())["results"].getFeatures()).geometry().boundingBox()
    assert canvas.extent().contains(polygon) and canvas.extent().toString(6) != before


def test_undo_and_redo_say_what_they_do_and_the_result_line_follows(plugin, raster):
    plugin.dock.layer_box.setLayer(raster)
    dock = plugin.dock
    assert not dock.undo_button.isEnabled() and not dock.redo_button.isEnabled()
    ask(plugin)
    summary = dock.result.text()
    assert summary.startswith(f"“{RIVER}” — ok: 1 polygon, ")
    assert dock.undo_button.isEnabled() and dock.undo_button.toolTip() == f"Undo question “{RIVER}” (Ctrl+Z)"
    dock.undo_button.click()
    assert plugin.store.find(raster.crs())["results"].featureCount() == 0
    assert dock.result.text() == f"No result on the map (undone: question “{RIVER}”)."
    assert dock.redo_button.isEnabled() and dock.redo_button.toolTip() == f"Redo question “{RIVER}” (Ctrl+Shift+Z)"
    assert not dock.zoom_button.isEnabled()
    dock.redo_button.click()
    assert plugin.store.find(raster.crs())["results"].featureCount() == 1 and dock.result.text() == summary


def test_an_empty_answer_is_no_undo_step(plugin, fake_backend, raster):
    plugin.dock.layer_box.setLayer(raster)
    ask(plugin)
    empty = copy.deepcopy(fake_backend.reply)
    empty.update(
        status="no_target", features=[], total_area_m2=0.0, prompts={"type": "FeatureCollection", "features": []}
    )
    fake_backend.reply = empty
    ask(plugin, "segment the volcano")
    assert plugin.undo.count() == 1 and plugin.undo.undoText() == f"question “{RIVER}”"
    assert "no_target: no polygons" in plugin.dock.result.text()
    assert "no prompts: the model found no target here" in plugin.dock.reasoning.toPlainText()


def test_ctrl_z_and_ctrl_shift_z_undo_and_redo_while_the_panel_has_the_focus(plugin, raster, qgis_iface):
    window = qgis_iface.mainWindow()
    window.show()
    QApplication.setActiveWindow(window)
    plugin.dock.layer_box.setLayer(raster)
    ask(plugin)
    results = plugin.store.find(raster.crs())["results"]
    target = plugin.dock.prompt_list

    def press(modifiers: Qt.KeyboardModifier) -> None:
        window.activateWindow()
        QApplication.setActiveWindow(window)
        target.setFocus()
        assert wait_until(lambda: QApplication.focusWidget() is target, 5)
        QTest.keyClick(target, Qt.Key.Key_Z, modifiers)

    press(Qt.KeyboardModifier.ControlModifier)
    assert results.featureCount() == 0 and plugin.undo.index() == 0
    press(Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert results.featureCount() == 1 and plugin.undo.index() == 1
    line = plugin.dock.question.lineEdit()  # in the question box Ctrl+Z edits the text, as everywhere
    line.setFocus()
    line.setText("segment the rivers")
    QTest.keyClick(line, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert plugin.undo.index() == 1
    window.hide()


def test_each_run_has_its_own_colour_and_legend_entry_that_hides_it(plugin, raster):
    from qgis.core import QgsCategorizedSymbolRenderer

    plugin.dock.layer_box.setLayer(raster)
    ask(plugin)
    ask(plugin, "segment the water")
    results = plugin.store.find(raster.crs())["results"]
    renderer = results.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == "run_id"
    first, second = renderer.categories()
    assert first.label().startswith(f"{RIVER} · ") and second.label().startswith("segment the water · ")
    assert first.symbol().color() != second.symbol().color()
    assert renderer.legendSymbolItemsCheckable()
    renderer.checkLegendSymbolItem(renderer.legendSymbolItems()[0].ruleKey(), False)  # unticked in Layers
    ask(plugin, "segment the fields")
    states = {c.label().split(" · ")[0]: c.renderState() for c in results.renderer().categories()}
    assert states == {RIVER: False, "segment the water": True, "segment the fields": True}  # stays hidden
    plugin.undo.undo()
    assert len(results.renderer().categories()) == 2  # an undone run leaves the legend
