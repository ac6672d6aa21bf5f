"""``think2seg train`` end to end with the tiny models: GRPO steps, saving, merging, reloading,
Ctrl-C and --resume, the run folder's policy, and one test that shows learning."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from think2seg.cli import main
from think2seg.engine import Engine
from think2seg.errors import InputError, OutputError, OutputExistsError
from think2seg.testing.tiny_lvlm import cached_choice_lvlm, question_for
from think2seg.train.grpo import TrainSettings
from think2seg.train.progress import TrainMonitor
from think2seg.train.run import TrainingInterrupted, TrainRequest, train
from think2seg.train.sources import DatasetData

SIDE = 420
QUICK = dict(generations=2, prompts_per_step=1, max_completion_length=48, save_steps=1, gradient_checkpointing=False)


def _folder_dataset(root: Path, count: int, question: str) -> Path:
    """``count`` images, each with the square rows/cols 50-150 (view 100-300) as its target."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    target = np.zeros((SIDE, SIDE), dtype=np.uint8)
    target[50:150, 50:150] = 255
    entries = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)).save(root / f"image{i}.png")
        Image.fromarray(target).save(root / f"mask{i}.png")
        entries.append({"image": f"image{i}.png", "mask": f"mask{i}.png", "question": question})
    (root / "samples.json").write_text(json.dumps(entries))
    return root


def _request(tmp_path: Path, lvlm: Path, segmenter: Path | str, **settings) -> TrainRequest:
    data = DatasetData("folder", _folder_dataset(tmp_path / "data", 4, question_for("river")), val_fraction=0.25)
    return TrainRequest(
        run_dir=tmp_path / "run",
        source=data,
        settings=TrainSettings(**{**QUICK, **settings}),
        lvlm=str(lvlm),
        segmenter=str(segmenter),
        device="cpu",
        examples=1,
    )


def test_lora_run_saves_a_model_that_loads_like_any_checkpoint(tmp_path, tiny_lvlm_dir, tiny_sam2_dir):
    request = _request(tmp_path, tiny_lvlm_dir, tiny_sam2_dir, max_steps=2)
    result = train(request)
    run = result.run_dir
    record = json.loads((run / "train.json").read_text())
    assert record["status"] == "done" and record["steps"] == 2
    assert [p["step"] for p in record["curve"]] == [1.0, 2.0]
    assert {"reward", "iou", "json_valid", "format_valid", "kl"} <= set(record["curve"][0])
    settings = record["params"]["settings"]
    assert (settings["beta"], settings["epsilon"], settings["temperature"], settings["loss_type"]) == (
        0.001,
        0.2,
        1.0,
        "grpo",
    )
    assert settings["method"] == "lora" and settings["learning_rate"] == 1e-5
    assert record["data"] == {"train_samples": 3, "val_samples": 1, "dataset": "folder"}
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    assert record["before"]["metrics"]["samples"] == record["after"]["metrics"]["samples"] == 1
    report = (run / "report.md").read_text()
    assert "| gIoU |" in report and "before" in report and "after" in report
    assert len(list((run / "examples").glob("*.png"))) == 1
    # The merged model is a whole Qwen2.5-VL that --lvlm loads, with no PEFT layers left in it.
    engine = Engine.load(lvlm=str(result.lvlm_dir), segmenter=str(tiny_sam2_dir), device="cpu", max_new_tokens=48)
    assert not any("lora" in name for name, _ in engine.prompter.model.named_parameters())
    found = engine.segment_array(
        np.zeros((64, 64, 3), dtype=np.uint8), "segment the river", transform=(1, 0, 0, 0, -1, 64), crs="EPSG:32633"
    )
    assert found.model == str(result.lvlm_dir)


def test_interrupted_run_keeps_a_checkpoint_and_resumes(tmp_path, tiny_lvlm_dir, tiny_sam2_dir, monkeypatch):
    request = _request(tmp_path, tiny_lvlm_dir, tiny_sam2_dir, max_steps=4, full=True)
    original = TrainMonitor.on_step_end

    def stop_at_two(self, args, state, control, **kwargs):
        if state.global_step == 2 and not self.interrupted:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the handler asks for a checkpoint and a stop
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(TrainMonitor, "on_step_end", stop_at_two)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(request)
    record = json.loads((tmp_path / "run" / "train.json").read_text())
    assert record["status"] == "interrupted" and record["steps"] == 2
    assert not (tmp_path / "run" / "lvlm").exists()
    monkeypatch.setattr(TrainMonitor, "on_step_end", original)
    with pytest.raises(OutputExistsError, match="--resume"):
        train(request)
    longer = TrainSettings(**{**QUICK, "max_steps": 5, "full": True})
    with pytest.raises(InputError, match="max_steps"):
        train(replace(request, settings=longer, resume=True))
    result = train(replace(request, resume=True))
    assert result.record["resumed_from"].endswith("checkpoint-2")
    assert [p["step"] for p in result.record["curve"]] == [1.0, 2.0, 3.0, 4.0]
    assert result.record["steps"] == 4 and (result.lvlm_dir / "config.json").is_file()
    assert not (tmp_path / "run" / "adapter").exists()  # a full fine-tune has no adapter


def test_a_folder_that_is_not_a_run_is_never_deleted(tmp_path, tiny_lvlm_dir, tiny_sam2_dir):
    request = _request(tmp_path, tiny_lvlm_dir, tiny_sam2_dir, max_steps=1)
    request.run_dir.mkdir()
    (request.run_dir / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a think2seg training run"):
        train(replace(request, overwrite=True))
    assert (request.run_dir / "precious.txt").is_file()


def test_cli_refuses_bad_combinations(tmp_path, capsys):
    assert main(["train", "-o", str(tmp_path / "run")]) == 1
    assert "--raster" in capsys.readouterr().err
    args = ["train", "-o", str(tmp_path / "run"), "--raster", "a.tif", "--labels", "l.gpkg"]
    assert main(args) == 1
    assert "--question" in capsys.readouterr().err
    assert (
        main(["train", "-o", str(tmp_path / "r"), "--dataset", "folder", "--root", str(tmp_path), "--generations", "1"])
        == 1
    )
    assert "at least 2" in capsys.readouterr().err


def test_cli_names_the_extra_when_trl_is_missing(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    assert main(["train", "-o", str(tmp_path / "run"), "--dataset", "folder", "--root", str(tmp_path)]) == 1
    assert "pip install 'think2seg[train]'" in capsys.readouterr().err


def _answer(think: str, items: list) -> str:
    return f"<think>{think}</think> <answer>```json{json.dumps(items)}```</answer>"


CHOICES = (
    _answer("A", [{"bbox_2d": [100, 100, 300, 300], "positive_points": [[200, 200], [202, 202]]}]),  # the target
    _answer("B", [{"bbox_2d": [500, 500, 700, 700], "positive_points": [[600, 600], [602, 602]]}]),  # elsewhere
    _answer("C", []),  # "nothing here"
)


def test_grpo_learns_to_pick_the_answer_that_hits_the_target(tmp_path, request, box_segmenter):
    """A tiny model that answers one of three ways at random (one hits the target: reward 4, the
    others 2) learns, from the mask reward alone, to give the one that hits."""
    lvlm = cached_choice_lvlm(Path(request.config.cache.mkdir("think2seg-models")), "square", CHOICES)
    data = DatasetData("folder", _folder_dataset(tmp_path / "data", 4, question_for("square")), val_fraction=0.25)
    settings = TrainSettings(
        max_steps=30,
        generations=8,
        prompts_per_step=1,
        max_completion_length=128,
        learning_rate=2e-3,  # LoRA, the default method, on a tiny model
        save_steps=1000,
        gradient_checkpointing=False,
    )
    result = train(
        TrainRequest(tmp_path / "run", data, settings, lvlm=str(lvlm), device="cpu", examples=0),
        segmenter=box_segmenter,
    )
    rewards = [p["reward"] for p in result.record["curve"]]
    start, end = np.mean(rewards[:5]), np.mean(rewards[-15:])
    assert end > start + 0.4, rewards
    assert result.record["after"]["metrics"]["giou"] > result.record["before"]["metrics"]["giou"]


def test_cli_trains_on_a_raster_and_its_polygons(tmp_path, tiny_lvlm_dir, tiny_sam2_dir, capsys):
    """`think2seg train --raster --labels --question`: tiles cut into RUN/data, a model in RUN/lvlm."""
    import geopandas as gpd
    from shapely.geometry import box

    from rasters import UTM_TRANSFORM, scene, write_raster

    raster = write_raster(tmp_path / "scene.tif", scene(128, 256))
    x0, y0 = UTM_TRANSFORM.c, UTM_TRANSFORM.f  # the raster's top-left corner; 0.5 m pixels
    fields = [box(x0 + 5, y0 - 25, x0 + 20, y0 - 5), box(x0 + 70, y0 - 60, x0 + 90, y0 - 40)]
    gpd.GeoDataFrame({"kind": ["field", "field"]}, geometry=fields, crs="EPSG:32633").to_file(tmp_path / "labels.gpkg")
    run = tmp_path / "run"
    args = [
        "train",
        "--raster",
        str(raster),
        "--labels",
        str(tmp_path / "labels.gpkg"),
        "--question",
        "segment the river",
    ]
    args += [
        "-o",
        str(run),
        "--tile-size-px",
        "64",
        "--block-tiles",
        "1",
        "--val-fraction",
        "0.5",
        "--empty-ratio",
        "1",
    ]
    args += ["--max-steps", "1", "--generations", "2", "--prompts-per-step", "1", "--max-completion-length", "32"]
    args += ["--no-gradient-checkpointing", "--quiet", "--lvlm", str(tiny_lvlm_dir), "--segmenter", str(tiny_sam2_dir)]
    assert main([*args, "--device", "cpu"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "trained model:" in out and "validation after" in out
    record = json.loads((run / "train.json").read_text())
    assert record["data"]["counts"]["samples"]["train"] > 0 and record["data"]["counts"]["tiles"] == 8
    assert json.loads((run / "data" / "train" / "samples.json").read_text())
    assert (run / "lvlm" / "config.json").is_file() and (run / "report.md").is_file()


@pytest.mark.slow
def test_two_processes_train_one_run(tmp_path, tiny_lvlm_dir, tiny_sam2_dir):
    """`torchrun --nproc_per_node 2 -m think2seg train` (gloo on the CPU, as `accelerate launch`
    on GPUs): one run folder, the main process alone cuts, evaluates, merges and reports."""
    import os
    import subprocess
    import sys

    data = _folder_dataset(tmp_path / "data", 4, question_for("river"))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "think2seg", "train"]
    command += ["--dataset", "folder", "--root", str(data), "--val-fraction", "0.25", "-o", str(run), "--quiet"]
    command += ["--max-steps", "2", "--generations", "2", "--prompts-per-step", "1", "--max-completion-length", "32"]
    command += ["--no-gradient-checkpointing", "--examples", "0", "--device", "cpu"]
    command += ["--lvlm", str(tiny_lvlm_dir), "--segmenter", str(tiny_sam2_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained model:") == 1
    record = json.loads((run / "train.json").read_text())
    assert record["status"] == "done" and record["processes"] == 2 and record["steps"] == 2
    assert (run / "lvlm" / "config.json").is_file()
