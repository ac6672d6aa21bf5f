"""Issue 11, items 9 and 10: packaging needs nothing but Python; the panel's details (one-line
status, a wide question box, counts in words, the reasoning kept with the polygons, a live log,
settings that explain themselves and offer a restart, which device and models run, honest metadata)."""

from __future__ import annotations

import stat
import subprocess
import zipfile

from qgis.core import QgsCoordinateReferenceSystem, QgsVectorLayer
from qgis.PyQt.QtWidgets import QDoubleSpinBox, QLineEdit, QPushButton, QSpinBox

from think2seg_qgis.dialogs import LogDialog, SettingsDialog
from think2seg_qgis.results import ResultStore

from qgis_helpers import ROOT, wait_until

RIVER = "segment the river"


def test_make_package_needs_nothing_but_python(tmp_path):
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "package"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    commands = [line for line in dry.stdout.splitlines() if line.strip()]
    assert commands == ["python3 scripts/package_plugin.py dist/think2seg_qgis.zip"], commands  # no venv, no pip


def test_metadata_makes_no_claim_it_cannot_keep(tmp_path):
    metadata = (ROOT / "metadata.txt").read_text()
    assert "example.org" not in metadata and "homepage" not in metadata.split("about=", 1)[1].split("\n")[0]
    target = tmp_path / "plugin.zip"
    subprocess.run(
        ["python3", str(ROOT / "scripts" / "package_plugin.py"), str(target)], check=True, capture_output=True
    )
    assert "think2seg_qgis/README.md" in zipfile.ZipFile(target).namelist()  # what the about text points to


def test_status_stays_one_line_and_the_buttons_stay_put(plugin, qgis_iface):
    window = qgis_iface.mainWindow()
    window.show()
    dock = plugin.dock
    dock.resize(420, 700)
    assert wait_until(lambda: dock.start_button.isVisible(), 5)
    place = dock.start_button.geometry()
    plugin.backend.unwatch()  # no health reply may overwrite the status below
    assert wait_until(lambda: plugin.backend._call is None, 10)
    dock.show_status("offline", "the Think2Seg backend at http://127.0.0.1:8765 is not reachable " * 5)
    wait_until(lambda: False, 0.2)
    assert dock.status.height() < 2 * dock.status.fontMetrics().height()
    assert dock.start_button.geometry() == place
    assert dock.status.full_text().endswith("not reachable ") and "not reachable" in dock.status.toolTip()
    placeholder = dock.question.lineEdit().placeholderText()
    assert dock.question.width() >= dock.question.fontMetrics().horizontalAdvance(placeholder)
    window.hide()


def test_the_panel_says_which_device_and_models_the_backend_runs(plugin):
    plugin.backend.check()
    assert wait_until(lambda: plugin.backend.status == "ready", 10)
    assert plugin.dock.models.full_text() == "cpu · fixed-prompter + box-segmenter · think2seg 0.1.0"


def test_the_reasoning_is_kept_with_the_polygons_and_counted_in_words(plugin, raster, fake_backend):
    plugin.dock.layer_box.setLayer(raster)
    plugin.dock.question.setEditText(RIVER)
    plugin.controller.ask()
    assert wait_until(lambda: plugin.dock.run_button.isEnabled() and plugin.undo.count(), 10)
    layers = plugin.store.find(raster.crs())
    assert next(layers["results"].getFeatures())["reasoning"] == fake_backend.reply["reasoning"]
    assert next(layers["boxes"].getFeatures())["reasoning"] == fake_backend.reply["reasoning"]
    assert plugin.dock.reasoning.toPlainText().endswith("→ 1 instance (boxes and points) on the map")


def test_results_tables_of_an_earlier_version_get_the_new_fields(project, tmp_path):
    from think2seg_qgis import results

    crs = QgsCoordinateReferenceSystem("EPSG:32633")
    store = ResultStore(project)
    old = dict(results.FIELDS)
    results.FIELDS["results"] = [f for f in old["results"] if f[0] != "reasoning"]  # as the plugin made them before
    try:
        source = store.layers(crs)["results"].source()
    finally:
        results.FIELDS.update(old)
    assert QgsVectorLayer(source, "old", "ogr").fields().indexOf("reasoning") < 0
    store.layers(crs)  # the plugin finds its old table again
    assert QgsVectorLayer(source, "migrated", "ogr").fields().indexOf("reasoning") >= 0


def test_the_log_follows_the_backend_without_health_checks(plugin):
    dialog = LogDialog(plugin.backend)
    plugin.backend.add_log(
        'INFO:     127.0.0.1:5000 - "GET /v1/health HTTP/1.1" 200 OK\n'
        'INFO:     127.0.0.1:5000 - "POST /v1/segment HTTP/1.1" 200 OK\n'
    )
    assert dialog.text.toPlainText() == 'INFO:     127.0.0.1:5000 - "POST /v1/segment HTTP/1.1" 200 OK'
    assert plugin.backend.log_lines == ['INFO:     127.0.0.1:5000 - "POST /v1/segment HTTP/1.1" 200 OK']
    dialog.reject()


def test_settings_explain_themselves_and_offer_to_restart_a_running_backend(plugin, qgis_iface, tmp_path):
    dialog = SettingsDialog(plugin.settings)
    inputs = dialog.findChildren(QLineEdit) + dialog.findChildren(QSpinBox) + dialog.findChildren(QDoubleSpinBox)
    for widget in (dialog.url, dialog.token_file, dialog.executable, dialog.arguments, dialog.timeout, dialog.max_side):
        assert widget.toolTip(), widget
    assert inputs
    script = tmp_path / "think2seg"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    plugin.settings.backend_executable = str(script)
    plugin.settings.backend_url = "http://127.0.0.1:9"
    assert plugin.backend.start() == "" and wait_until(plugin.backend.owns_process, 10)
    dialog = SettingsDialog(plugin.settings)
    dialog.arguments.setText("--device cpu")
    dialog.accept()
    assert dialog.backend_changed()
    plugin.settings_changed(backend_changed=dialog.backend_changed())  # what follows the (modal) dialog's OK
    (item,) = [i for i in qgis_iface.messageBar().items() if "restart it" in i.text()]
    (restart,) = [b for b in item.findChildren(QPushButton) if b.text() == "Restart"]
    first = plugin.backend.process.processId()
    restart.click()
    assert wait_until(lambda: plugin.backend.owns_process() and plugin.backend.process.processId() != first, 10)
    assert "--device" in plugin.backend.serve_arguments()
    plugin.backend.stop_and_wait()
