"""Settings: a trained prompter folder (a `think2seg train` run's RUN/lvlm) for the backend QGIS starts."""

from __future__ import annotations

from think2seg_qgis.dialogs import SettingsDialog


def _model_folder(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    return path


def test_the_setting_defaults_to_the_backend_model_and_round_trips(plugin, tmp_path):
    assert plugin.settings.backend_lvlm == ""
    plugin.settings.backend_lvlm = f"  {tmp_path}  "
    assert plugin.settings.backend_lvlm == str(tmp_path)


def test_serve_arguments_pass_the_folder_unless_the_extra_options_name_one(plugin, tmp_path):
    assert "--lvlm" not in plugin.backend.serve_arguments()
    model = _model_folder(tmp_path / "run" / "lvlm")
    plugin.settings.backend_lvlm = str(model)
    arguments = plugin.backend.serve_arguments()
    assert arguments[arguments.index("--lvlm") + 1] == str(model)
    plugin.settings.backend_arguments = "--lvlm /models/Think2Seg-RS-7B --device cpu"
    arguments = plugin.backend.serve_arguments()
    assert arguments.count("--lvlm") == 1 and arguments[arguments.index("--lvlm") + 1] == "/models/Think2Seg-RS-7B"


def test_the_dialog_refuses_a_folder_without_a_model(plugin, tmp_path):
    dialog = SettingsDialog(plugin.settings)
    assert dialog.lvlm.toolTip() and dialog.lvlm_problem() == ""  # empty: the default model
    (tmp_path / "empty").mkdir()
    dialog.lvlm.setFilePath(str(tmp_path / "empty"))
    assert "holds no model" in dialog.lvlm_problem() and "RUN/lvlm" in dialog.lvlm_problem()
    dialog.accept()  # stays open, the problem shown, nothing saved
    assert not dialog.problem.isHidden() and "holds no model" in dialog.problem.text()
    assert plugin.settings.backend_lvlm == ""
    dialog.lvlm.setFilePath(str(tmp_path / "missing"))
    assert "does not exist" in dialog.lvlm_problem()


def test_a_training_run_folder_is_taken_for_its_model(plugin, tmp_path):
    model = _model_folder(tmp_path / "run" / "lvlm")
    dialog = SettingsDialog(plugin.settings)
    dialog.lvlm.setFilePath(str(tmp_path / "run"))
    dialog.accept()
    assert plugin.settings.backend_lvlm == str(model)
    assert dialog.backend_changed()
