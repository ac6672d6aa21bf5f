"""Weights resolution, devices, the SAM wrappers and the info/download commands."""

import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError

from think2seg.cli import main
from think2seg.errors import DeviceError, InputError, ModelError, WeightsUnavailableError
from think2seg.models.device import plan_device
from think2seg.models.registry import load_segmenter, parse_sam1_spec
from think2seg.models.sam2 import Sam2Segmenter
from think2seg.models.weights import DEFAULT_LVLM, resolve_model_dir
from think2seg.testing.tiny_sam import build_tiny_sam1, tiny_sam1_builder
from think2seg.think2seg_rs.answer import InstancePrompt

CPU = plan_device("cpu")


def test_local_folder_used_as_is(tiny_sam2_dir):
    assert resolve_model_dir(str(tiny_sam2_dir), flag="--segmenter") == tiny_sam2_dir


def test_folder_without_config_and_missing_folder(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="no config.json"):
        resolve_model_dir(str(tmp_path), flag="--lvlm")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        resolve_model_dir(str(tmp_path / "nope"), flag="--lvlm")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        resolve_model_dir("./models/qwen", flag="--lvlm")
    for folder in ("C:/models/qwen", "models\\qwen", "/opt/models/qwen", "a/b/c"):
        with pytest.raises(WeightsUnavailableError, match="does not exist"):
            resolve_model_dir(folder, flag="--lvlm")


def test_hub_ids_are_ids_whatever_the_path_separators(monkeypatch):
    """On Windows os.altsep is '/': owner/name must still be looked up on the Hub."""
    asked: list[str] = []

    def offline(repo_id, **kwargs):
        asked.append(repo_id)
        raise LocalEntryNotFoundError("Got: ConnectError")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.setattr(os, "altsep", "/")
    with pytest.raises(WeightsUnavailableError, match="cannot be reached"):
        resolve_model_dir(DEFAULT_LVLM, flag="--lvlm")
    assert asked and set(asked) == {DEFAULT_LVLM}  # looked up (cache, then download), not taken for a folder


def test_unreachable_hub_names_model_cache_and_local_folder_option(monkeypatch):
    def offline(repo_id, **kwargs):
        raise LocalEntryNotFoundError("Got: ConnectError: [Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_model_dir(DEFAULT_LVLM, flag="--lvlm")
    message = str(caught.value)
    assert DEFAULT_LVLM in message and "cannot be reached" in message
    assert "--lvlm DIR" in message and "think2seg download" in message
    assert str(Path(huggingface_hub.constants.HF_HUB_CACHE)) in message


def _offline_env(tmp_path: Path) -> dict:
    return {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}


def test_segment_without_weights_fails_with_clear_message(tmp_path):
    from rasters import scene, write_raster

    raster = write_raster(tmp_path / "r.tif", scene(32, 32))
    command = [
        sys.executable,
        "-m",
        "think2seg",
        "segment",
        str(raster),
        "segment the river",
        "-o",
        str(tmp_path / "o.gpkg"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=_offline_env(tmp_path), timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("think2seg: error: cannot get the weights of 'RicardoString/Think2Seg-RS-3B'")
    assert str(tmp_path / "hf" / "hub") in last and "--lvlm DIR" in last
    assert not (tmp_path / "o.gpkg").exists()


def test_info_reports_missing_and_present_weights(tmp_path):
    env = _offline_env(tmp_path)
    snapshot = tmp_path / "hf" / "hub" / "models--facebook--sam2.1-hiera-small" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    done = subprocess.run(
        [sys.executable, "-m", "think2seg", "info"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "RicardoString/Think2Seg-RS-3B: missing" in done.stdout
    assert f"facebook/sam2.1-hiera-small: present: {snapshot}" in done.stdout
    assert "transformers" in done.stdout and "device" in done.stdout and str(tmp_path / "hf" / "hub") in done.stdout


def test_download_offline_fails_clearly(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "think2seg", "download", "--segmenter", "facebook/sam2.1-hiera-small"],
        capture_output=True,
        text=True,
        env=_offline_env(tmp_path),
        timeout=300,
    )
    assert done.returncode == 1 and "HF_HUB_OFFLINE" in done.stderr


def test_cpu_plan_and_bad_device_specs():
    assert (CPU.device.type, CPU.dtype, CPU.attn_implementation) == ("cpu", torch.float32, "sdpa")
    with pytest.raises(DeviceError, match="unknown device"):
        plan_device("tpu")
    if not torch.cuda.is_available():
        assert plan_device("auto").device.type == "cpu"
        with pytest.raises(DeviceError, match="--device cpu"):
            plan_device("cuda:0")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_plan_uses_bf16():
    plan = plan_device("auto")
    assert plan.device.type == "cuda" and plan.dtype == torch.bfloat16
    with pytest.raises(DeviceError, match="does not exist"):
        plan_device(f"cuda:{torch.cuda.device_count()}")


def test_sam2_wrapper_matches_a_direct_single_mask_call(tiny_sam2_dir):
    segmenter = Sam2Segmenter.load(str(tiny_sam2_dir), device=CPU)
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    prompt = InstancePrompt((10.0, 20.0, 80.0, 70.0), ((40.0, 40.0), (50.0, 45.0)))
    (mask,) = segmenter.predict(segmenter.encode(image), [prompt])
    processor, model = segmenter.processor, segmenter.model
    inputs = processor(
        images=image,
        input_boxes=[[[10.0, 20.0, 80.0, 70.0]]],
        input_points=[[[[40.0, 40.0], [50.0, 45.0]]]],
        input_labels=[[[1, 1]]],
        return_tensors="pt",
    )
    with torch.inference_mode():
        output = model(**{k: v for k, v in inputs.items() if k != "original_sizes"}, multimask_output=False)
    expected = processor.post_process_masks(output.pred_masks, inputs["original_sizes"])[0][0, 0].numpy()
    assert mask.shape == (90, 120) and mask.dtype == bool
    assert np.array_equal(mask, expected)
    (scored,), (score,) = segmenter.predict_scored(segmenter.encode(image), [prompt])
    assert np.array_equal(scored, mask)
    assert 0 <= score <= 1 and score == pytest.approx(float(output.iou_scores[0, 0, 0]), abs=1e-5)


def test_sam2_decodes_all_instances_of_an_image_as_their_own_calls_would(tiny_sam2_dir):
    segmenter = Sam2Segmenter.load(str(tiny_sam2_dir), device=CPU)
    embedding = segmenter.encode(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    prompts = [
        InstancePrompt((10.0, 20.0, 80.0, 70.0), ((40.0, 40.0), (50.0, 45.0))),
        InstancePrompt((0.0, 0.0, 30.0, 30.0), None),
        InstancePrompt(None, ((5.0, 5.0), (60.0, 60.0))),
        InstancePrompt((50.0, 10.0, 110.0, 85.0), ((60.0, 20.0), (100.0, 80.0))),
        InstancePrompt((20.0, 50.0, 70.0, 89.0), ((30.0, 60.0), (40.0, 70.0))),
    ]
    batched = segmenter.predict_logits(embedding, prompts)
    alone = np.stack([segmenter.predict_logits(embedding, [prompt])[0] for prompt in prompts])
    scale = float(np.abs(alone).max())  # random tiny weights give small logits: compare relative to them
    assert batched.shape == (5, 90, 120) and scale > 0
    np.testing.assert_allclose(batched, alone, rtol=1e-4, atol=1e-4 * scale)
    assert np.abs(alone[0] - alone[3]).max() > 1e-2 * scale  # distinct prompts: a mix-up would show
    assert np.array_equal(segmenter.predict(embedding, prompts), batched > 0)
    masks, scores = segmenter.predict_scored(embedding, prompts)
    alone_scores = [segmenter.predict_scored(embedding, [prompt])[1][0] for prompt in prompts]
    assert np.array_equal(masks, batched > 0) and scores.shape == (5,)
    np.testing.assert_allclose(scores, alone_scores, atol=1e-5)  # each score stays with its own prompt
    assert len(set(np.round(scores, 6))) > 1


def test_segmenter_spec_syntax():
    assert parse_sam1_spec("sam1-vit-b:/w/sam.pth") == ("sam1-vit-b", "/w/sam.pth")
    assert parse_sam1_spec("facebook/sam2.1-hiera-small") == (None, "facebook/sam2.1-hiera-small")
    with pytest.raises(InputError, match="PATH"):
        parse_sam1_spec("sam1-vit-b")
    with pytest.raises(InputError, match="unknown segmenter"):
        parse_sam1_spec("sam1-vit-x:/w/sam.pth")
    with pytest.raises(WeightsUnavailableError):
        load_segmenter("sam1-vit-l:/no/such/file.pth", device=CPU)


def test_each_role_refuses_the_other_models_folder(tiny_sam2_dir, tiny_lvlm_dir):
    from think2seg.models.registry import load_prompter

    with pytest.raises(ModelError, match="Qwen2.5-VL"):
        load_prompter(str(tiny_sam2_dir), device=CPU)
    with pytest.raises(ModelError, match="SAM 2.1"):
        load_segmenter(str(tiny_lvlm_dir), device=CPU)


def test_sam1_through_segment_anything(tmp_path, monkeypatch, tiny_lvlm_dir, capsys):
    import segment_anything

    checkpoint = build_tiny_sam1(tmp_path / "sam_tiny.pth")
    monkeypatch.setitem(segment_anything.sam_model_registry, "vit_b", tiny_sam1_builder())
    segmenter = load_segmenter(f"sam1-vit-b:{checkpoint}", device=CPU)
    image = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    prompts = [
        InstancePrompt((5.0, 5.0, 60.0, 50.0), ((20.0, 20.0), (30.0, 25.0))),
        InstancePrompt(None, ((70.0, 30.0), (80.0, 40.0))),
    ]
    masks = segmenter.predict(segmenter.encode(image), prompts)
    assert masks.shape == (2, 64, 96) and masks.dtype == bool
    scored, scores = segmenter.predict_scored(segmenter.encode(image), prompts)
    assert np.array_equal(scored, masks) and scores.shape == (2,) and np.isfinite(scores).all()
    _, direct, _ = segmenter.predictor.predict(
        point_coords=np.array([[70.0, 30.0], [80.0, 40.0]]), point_labels=np.ones(2), multimask_output=False
    )
    assert scores[1] == pytest.approx(float(direct[0]), abs=1e-5)

    from think2seg.testing.tiny_lvlm import question_for

    from rasters import scene, write_raster

    raster = write_raster(tmp_path / "r.tif", scene(40, 60))
    args = ["segment", str(raster), question_for("river"), "--json", "--lvlm", str(tiny_lvlm_dir)]
    assert main([*args, "--segmenter", f"sam1-vit-b:{checkpoint}", "--device", "cpu"]) == 0
    assert '"segmenter": "sam1-vit-b:sam_tiny.pth"' in capsys.readouterr().out


def test_a_bad_segmenter_fails_before_the_lvlm_loads(monkeypatch):
    import think2seg.engine
    from think2seg.engine import Engine

    loaded: list[str] = []
    monkeypatch.setattr(think2seg.engine, "load_prompter", lambda source, **kwargs: loaded.append(source))
    with pytest.raises(InputError, match="unknown segmenter"):
        Engine.load(lvlm=DEFAULT_LVLM, segmenter="sam1-vit-q:/w/sam.pth", device="cpu")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        Engine.load(lvlm=DEFAULT_LVLM, segmenter="./no/such/sam2", device="cpu")
    assert loaded == []
