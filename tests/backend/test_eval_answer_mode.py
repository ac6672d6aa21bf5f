"""`think2seg eval`: the paper protocol reads answers with the reference parser, native with the product's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from think2seg.engine import Engine
from think2seg.eval.datasets import Sample
from think2seg.eval.metrics import score
from think2seg.eval.predict import EnginePredictor, Loaded

from conftest import BoxSegmenter, FixedPrompter


def predict(text: str, protocol: str, segmenter: BoxSegmenter | None = None):
    """The prediction for one 840x840 sample whose target is the box (10, 20, 110, 220)."""
    target = np.zeros((840, 840), bool)
    target[20:220, 10:110] = True
    sample = Sample("s0", Path("s0.png"), "find the pond", lambda: target)
    loaded = Loaded(sample, np.full((840, 840, 3), 90, np.uint8), target, np.ones((840, 840), bool))
    engine = Engine(FixedPrompter(text), segmenter or BoxSegmenter())
    (prediction,) = EnginePredictor(engine, protocol).predict([loaded])
    return prediction


def answer(items: str) -> str:
    return f"<think>A pond.</think> <answer>```json{items}```</answer>"


def test_paper_rejects_the_whole_answer_for_one_bad_item_native_keeps_the_good_one():
    text = answer('[{"bbox_2d": [10, 20, 110, 220]}, {"label": "pond"}]')
    paper, native = predict(text, "paper"), predict(text, "native")
    assert paper.parse_failed and paper.status == "unparseable" and paper.prompts == []
    assert score("s0", paper.mask, paper.target, parse_failed=paper.parse_failed).iou == 0.0
    assert not native.parse_failed and native.status == "ok"
    assert score("s0", native.mask, native.target, parse_failed=native.parse_failed).iou == 1.0


def test_paper_keeps_an_unordered_box_as_answered_native_orders_it():
    segmenter = BoxSegmenter()
    paper = predict(answer('[{"bbox_2d": [110, 220, 10, 20]}]'), "paper", segmenter)
    assert [p.box_xyxy for p in paper.prompts] == [(110.0, 220.0, 10.0, 20.0)]
    assert [p.box_xyxy for p in segmenter.calls[0]] == [(110.0, 220.0, 10.0, 20.0)]
    assert not paper.parse_failed
    native = predict(answer('[{"bbox_2d": [110, 220, 10, 20]}]'), "native")
    assert [p.box_xyxy for p in native.prompts] == [(10.0, 20.0, 110.0, 220.0)]


def test_paper_turns_values_float_accepts_into_numbers():
    segmenter = BoxSegmenter()
    paper = predict(answer('[{"bbox_2d": ["10", "20", "110", "220"]}]'), "paper", segmenter)
    assert not paper.parse_failed and paper.status == "ok"
    assert [p.box_xyxy for p in segmenter.calls[0]] == [(10.0, 20.0, 110.0, 220.0)]
    assert score("s0", paper.mask, paper.target, parse_failed=False).iou == 1.0
    assert predict(answer('[{"bbox_2d": ["10", "20", "110", "220"]}]'), "native").parse_failed  # strings refused


@pytest.mark.parametrize("box", ['["a", 20, 110, 220]', "[null, 20, 110, 220]", "[0, 0, Infinity, 220]"])
def test_paper_scores_an_answer_of_values_that_are_not_numbers_as_a_failure(box):
    segmenter = BoxSegmenter()
    paper = predict(answer(f'[{{"bbox_2d": {box}}}]'), "paper", segmenter)
    assert paper.parse_failed and paper.status == "unparseable" and not paper.mask.any()
    assert segmenter.calls == []
