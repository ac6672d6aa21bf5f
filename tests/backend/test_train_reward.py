"""The training reward: exact values on known masks, the answer checks, embedding reuse, and the
training prompt being the inference prompt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from think2seg.eval.datasets import load_samples
from think2seg.think2seg_rs.prompt import build_messages, make_view
from think2seg.think2seg_rs.rewards import format_valid, json_valid
from think2seg.train.reward import MaskReward, completion_text

SIDE = 420  # the 840 view is twice the image: view coordinates are halved on the image


def _answer(items: list) -> str:
    return f"<think>looking</think> <answer>```json{json.dumps(items)}```</answer>"


def _box(x1: int, y1: int, x2: int, y2: int) -> dict:
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    return {"bbox_2d": [x1, y1, x2, y2], "positive_points": [[cx, cy], [cx + 2, cy + 2]]}


@pytest.fixture
def samples(tmp_path: Path) -> list:
    """Two samples: ``target`` (image rows/cols 50-150 are target) and ``empty`` (no target)."""
    image = np.full((SIDE, SIDE, 3), 90, dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "image.png")
    target = np.zeros((SIDE, SIDE), dtype=np.uint8)
    target[50:150, 50:150] = 255
    Image.fromarray(target).save(tmp_path / "target.png")
    Image.fromarray(np.zeros_like(target)).save(tmp_path / "empty.png")
    entries = [
        {"image": "image.png", "mask": "target.png", "question": "segment the square"},
        {"image": "image.png", "mask": "empty.png", "question": "segment the airport"},
    ]
    (tmp_path / "samples.json").write_text(json.dumps(entries))
    return load_samples("folder", tmp_path, "train")


def _rewards(samples, segmenter, texts: list[str], which: int) -> list[float]:
    reward = MaskReward(samples, segmenter)
    sample_id = samples[which].sample_id
    return reward(prompts=[None] * len(texts), completions=texts, sample_id=[sample_id] * len(texts))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_answer([_box(100, 100, 300, 300)]), 4.0),  # the mask is the target: 2 x 1 + 1 + 1
        (_answer([_box(100, 100, 500, 300)]), 3.0),  # twice the target's area: IoU 0.5
        (_answer([_box(500, 500, 700, 700)]), 2.0),  # disjoint: IoU 0, valid JSON, format
        (_answer([_box(100, 100, 200, 300)]), 3.0),  # half the target: IoU 0.5
        (_answer([]), 2.0),  # "no target" on a target: IoU 0
        ("<think>unsure</think> <answer>I cannot tell.</answer>", 1.0),  # unparseable: format only
        ('<answer>```json[{"bbox_2d": [100,100,300,300], "positive_points": [[200,200],[202,202]]}]```</answer>', 3.0),
        ("no tags at all", 0.0),
    ],
)
def test_reward_on_a_target(samples, box_segmenter, text, expected):
    assert _rewards(samples, box_segmenter, [text], 0) == [pytest.approx(expected)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_answer([]), 4.0),  # an empty answer on an empty target scores full IoU
        (_answer([_box(100, 100, 300, 300)]), 2.0),  # any mask on an empty target: IoU 0
        ("<think>none</think> <answer>nothing here</answer>", 1.0),  # unparseable scores 0 even here
    ],
)
def test_reward_on_an_empty_target(samples, box_segmenter, text, expected):
    assert _rewards(samples, box_segmenter, [text], 1) == [pytest.approx(expected)]


def test_partial_overlap_is_computed_on_the_image_pixels(samples, box_segmenter):
    """View box (50, 100)-(200, 300) is image cols 25-100, rows 50-150: I = 50x100, U = 75x100 + 100x100 - I."""
    (value,) = _rewards(samples, box_segmenter, [_answer([_box(50, 100, 200, 300)])], 0)
    assert value == pytest.approx(2 * 5000 / 12500 + 2)


def test_the_embedding_is_computed_once_per_sample(samples, box_segmenter):
    reward = MaskReward(samples, box_segmenter)
    texts = [_answer([_box(100, 100, 300, 300)]), _answer([]), "garbled", _answer([_box(0, 0, 10, 10)])]
    for _ in range(2):
        reward(
            prompts=[None] * 8, completions=texts * 2, sample_id=[samples[0].sample_id] * 4 + [samples[1].sample_id] * 4
        )
    assert reward.encodes == 2


def test_conversational_completions_are_read():
    assert completion_text([{"role": "assistant", "content": "abc"}]) == "abc"
    assert (
        completion_text(
            [{"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}]
        )
        == "xy"
    )
    assert completion_text("plain") == "plain"


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        (_answer([]), True),
        (_answer([_box(1, 2, 30, 40)]), True),
        (
            '<think>a</think><answer>```json[{"bbox_2d": [1,2,3,4], "positive_points": [[1,2],[2,3]],}]```</answer>',
            True,
        ),  # repaired
        (
            '<think>a</think><answer>[{"bbox_2d": [1,2,3,4], "positive_points": [[1,2],[2,3]]}]</answer>',
            False,
        ),  # no fence
        ('<think>a</think><answer>```json[{"bbox_2d": [1,2,3,4]}]```</answer>', False),  # no points
        ('<think>a</think><answer>```json[{"positive_points": [[1,2],[2,3],[4,5]]}]```</answer>', False),
        (
            '<think>a</think><answer>```json[{"positive_points": [[1,2],[2,3]], "negative_points": [[5,5]]}]```</answer>',
            False,
        ),
        ('<think>a</think><answer>```json{"bbox_2d": [1,2,3,4]}```</answer>', False),  # not a list
    ],
)
def test_json_valid(text, valid):
    assert json_valid(text) is valid


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("<think>a</think> <answer>b</answer>", True),
        ("<think>a</think>\n\n<answer>b</answer>", True),
        ("x<think>a</think><answer>b</answer>", False),
        ("<think>a</think><answer>b</answer> trailing", False),
        ("<answer>b</answer>", False),
        ("<think>a</think>", False),
    ],
)
def test_format_valid(text, valid):
    assert format_valid(text) is valid


def test_the_training_prompt_is_the_inference_prompt(tiny_lvlm_dir):
    """TRL turns the dataset's prompt and view into exactly the messages inference sends, and the
    processor renders both into the same tokens."""
    from transformers import AutoProcessor
    from trl.data_utils import prepare_multimodal_messages

    from think2seg.train.grpo import training_prompt

    view = make_view(np.zeros((100, 120, 3), dtype=np.uint8))
    question = "segment the river"
    trained = prepare_multimodal_messages(training_prompt(question), images=[view])
    assert trained == build_messages(view, question)
    processor = AutoProcessor.from_pretrained(tiny_lvlm_dir)
    render = lambda m: processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True)  # noqa: E731
    assert render(trained) == render(build_messages(view, question))
