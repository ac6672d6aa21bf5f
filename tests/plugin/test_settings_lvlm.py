"""Settings: a trained prompter folder (a `think2seg train` run's RUN/lvlm) for the backend QGIS starts."""

from __future__ import annotations

import pytest
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import QDialog

from think2seg_qgis.dialogs import SettingsDialog, lvlm_folder_problem, lvlm_folder_suggestion


def _model_folder(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    return path


def _value_after(arguments, flag):
    return arguments[arguments.index(flag) + 1]


def test_the_setting_defaults_to_the_backend_model_and_round_trips(plugin, tmp_path):
    assert plugin.settings.backend_lvlm == ""
    plugin.settings.backend_lvlm = f"  {tmp_path}  "
    assert plugin.settings.backend_lvlm == str(tmp_path)
    plugin.settings.backend_lvlm = ""
    assert plugin.settings.backend_lvlm == ""


def test_serve_arguments_pass_the_folder_once(plugin, tmp_path):
    assert "--lvlm" not in plugin.backend.serve_arguments()
    model = _model_folder(tmp_path / "my models" / "lvlm")  # a space: one argument, no quoting needed
    plugin.settings.backend_lvlm = str(model)
    plugin.settings.backend_arguments = "--device cpu"
    arguments = plugin.backend.serve_arguments()
    assert arguments.count("--lvlm") == 1 and _value_after(arguments, "--lvlm") == str(model)
    assert "--any-path" in arguments and arguments[-2:] == ["--device", "cpu"]


@pytest.mark.parametrize(
    ("extra", "given"),
    [
        ("--lvlm /models/Think2Seg-RS-7B --device cpu", ["--lvlm", "/models/Think2Seg-RS-7B"]),
        ("--device cpu --lvlm=OWNER/NAME", ["--lvlm=OWNER/NAME"]),
    ],
)
def test_an_lvlm_in_the_extra_options_wins(plugin, tmp_path, extra, given):
    model = _model_folder(tmp_path / "run" / "lvlm")
    plugin.settings.backend_lvlm = str(model)
    plugin.settings.backend_arguments = extra
    arguments = plugin.backend.serve_arguments()
    assert str(model) not in arguments
    assert sum(a == "--lvlm" or a.startswith("--lvlm=") for a in arguments) == 1
    assert all(a in arguments for a in given)


def test_the_row_explains_itself(plugin):
    dialog = SettingsDialog(plugin.settings)
    tooltip = dialog.lvlm.toolTip()
    for words in ("RUN/lvlm", "think2seg train", "Qwen2.5-VL", "Empty uses", "extra options wins", "Restart"):
        assert words in tooltip, words
    assert dialog.lvlm.storageMode() == QgsFileWidget.StorageMode.GetDirectory
    assert dialog.lvlm_problem() == "" and dialog.problem.isHidden()
    dialog.reject()


def test_empty_is_the_default_model_and_a_model_folder_is_saved(plugin, tmp_path):
    dialog = SettingsDialog(plugin.settings)
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted and plugin.settings.backend_lvlm == ""
    assert not dialog.backend_changed()  # nothing the backend reads was touched
    model = _model_folder(tmp_path / "Qwen2.5-VL-3B")
    dialog = SettingsDialog(plugin.settings)
    dialog.lvlm.setFilePath(str(model))
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted and plugin.settings.backend_lvlm == str(model)
    assert dialog.backend_changed()  # the prompter folder alone asks for a restart


def test_a_folder_without_a_model_is_refused_with_the_reason(plugin, tmp_path):
    (tmp_path / "empty").mkdir()
    dialog = SettingsDialog(plugin.settings)
    dialog.lvlm.setFilePath(str(tmp_path / "empty"))
    problem = dialog.lvlm_problem()
    assert "holds no model" in problem and "RUN/lvlm" in problem and "think2seg train" in problem
    dialog.accept()  # stays open, the problem shown under the folder, nothing saved
    assert dialog.result() != QDialog.DialogCode.Accepted
    assert not dialog.problem.isHidden() and dialog.problem.text() == problem
    assert dialog.lvlm.filePath() == str(tmp_path / "empty")  # left as the user chose it
    assert plugin.settings.backend_lvlm == "" and not dialog.backend_changed()
    dialog.lvlm.setFilePath(str(tmp_path / "missing"))  # choosing again hides the old reason
    assert dialog.problem.isHidden() and "does not exist" in dialog.lvlm_problem()
    (tmp_path / "config.json").mkdir()  # not a file: still no model
    assert "holds no model" in lvlm_folder_problem(tmp_path)
    dialog.reject()


def test_a_training_run_folder_offers_its_model(plugin, tmp_path):
    run = tmp_path / "run"
    model = _model_folder(run / "lvlm")
    (run / "train.json").write_text("{}")
    assert lvlm_folder_suggestion(run) == model and lvlm_folder_suggestion(model) is None
    dialog = SettingsDialog(plugin.settings)
    dialog.lvlm.setFilePath(str(run))
    assert "is a `think2seg train` run" in dialog.lvlm_problem() and str(model) in dialog.lvlm_problem()
    dialog.accept()  # the first OK chooses RUN/lvlm and says so; nothing saved yet
    assert dialog.result() != QDialog.DialogCode.Accepted and plugin.settings.backend_lvlm == ""
    assert dialog.lvlm.filePath() == str(model)
    assert not dialog.problem.isHidden() and "Press OK to use it" in dialog.problem.text()
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted and plugin.settings.backend_lvlm == str(model)
    assert dialog.backend_changed()


def test_an_unfinished_training_run_is_refused(plugin, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.json").write_text('{"status": "data ready"}')
    assert lvlm_folder_suggestion(run) is None
    problem = lvlm_folder_problem(run)
    assert "has no model yet" in problem and "--resume" in problem


def test_a_home_folder_is_saved_expanded(plugin, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    model = _model_folder(tmp_path / "models" / "t2s")
    dialog = SettingsDialog(plugin.settings)
    dialog.lvlm.setFilePath("~/models/t2s")
    dialog.accept()
    assert plugin.settings.backend_lvlm == str(model)  # QProcess passes "~" on unexpanded
