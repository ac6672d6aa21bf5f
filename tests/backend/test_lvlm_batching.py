"""Batched LVLM generation (left-padded, one question per view) agrees with one view at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from think2seg.engine import Engine
from think2seg.geo.arrays import tile_from_array
from think2seg.models.device import plan_device
from think2seg.models.qwen import QwenPrompter
from think2seg.testing.tiny_lvlm import TEST_ANSWERS, question_for

from rasters import UTM_TRANSFORM

WORDS = ["river", "ponds", "airport", "garbled", "river"]
LONG = "segment the river, and then the ponds beside it"
"""An untrained question, longer than the trained ones: batches holding it are left-padded."""


@pytest.fixture(scope="module")
def prompter(tiny_lvlm_dir) -> QwenPrompter:
    loaded = QwenPrompter.load(str(tiny_lvlm_dir), device=plan_device("cpu"))
    loaded.max_new_tokens = 300  # the trained answers are shorter; the untrained one stops here
    return loaded


def views(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (840, 840, 3), dtype=np.uint8)) for _ in range(count)]


def test_a_batch_of_different_questions_answers_as_one_at_a_time(prompter):
    images, questions = views(len(WORDS) + 1), [question_for(w) for w in WORDS] + [LONG]
    assert (prompter.model_inputs(images, questions)["attention_mask"] == 0).any()  # really padded
    alone = [prompter.generate(v, q) for v, q in zip(images, questions)]
    together = prompter.generate_batch(images, questions)
    assert [g.text for g in together] == [g.text for g in alone]
    assert [g.text for g in together[:-1]] == [TEST_ANSWERS[w] for w in WORDS]
    assert [g.new_tokens for g in together] == [g.new_tokens for g in alone]
    for generation in together:
        assert min(generation.prepare_s, generation.prefill_s, generation.decode_s) >= 0


def test_the_static_cache_answers_the_same(prompter):
    images, questions = views(3, seed=1), [question_for("river"), LONG, question_for("ponds")]
    dynamic = [g.text for g in prompter.generate_batch(images, questions)]
    prompter.static_cache = True
    try:
        static = [g.text for g in prompter.generate_batch(images, questions)]
        single = prompter.generate(images[0], questions[0]).text
    finally:
        prompter.static_cache = False
    assert static == dynamic and single == dynamic[0]


def test_left_padding_moves_the_next_token_logits_by_float_noise_only(prompter):
    """The bound on padding effects: each answer's first-step logits, padded in a batch or alone."""
    images, questions = views(3, seed=2), [question_for("ponds"), LONG, question_for("river")]
    batch = prompter.model_inputs(images, questions)
    assert (batch["attention_mask"] == 0).any()  # some rows really are padded
    with torch.inference_mode():
        together = prompter.model(**batch).logits[:, -1]
        for row, (image, question) in enumerate(zip(images, questions)):
            alone = prompter.model(**prompter.model_inputs([image], [question])).logits[0, -1]
            scale = float(alone.abs().max())
            assert float((together[row] - alone).abs().max()) <= 1e-4 * scale


def test_engine_batch_equals_tile_by_tile(prompter, box_segmenter):
    engine = Engine(prompter, box_segmenter)
    rng = np.random.default_rng(3)
    tiles = [
        tile_from_array(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), transform=UTM_TRANSFORM, crs="EPSG:32633")
        for h, w in ((200, 300), (256, 256), (120, 400), (300, 200))
    ]
    questions = [question_for("river"), LONG, question_for("ponds"), question_for("airport")]
    together = engine.infer_batch(tiles, questions)
    for tile, question, batched in zip(tiles, questions, together):
        alone = engine.infer(tile, question)
        assert batched.status == alone.status and batched.raw_answer == alone.raw_answer
        assert np.array_equal(batched.mask, alone.mask) and batched.instances == alone.instances
