"""The deferred stop check answers exactly as the per-step check does, and stays in its thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.generation import utils as generation

from think2seg.models.device import plan_device
from think2seg.models.qwen import QwenPrompter
from think2seg.models.stop_check import deferred_stop_check
from think2seg.testing.tiny_lvlm import TEST_ANSWERS, question_for

LONG = "segment the river, and then the ponds beside it"
"""Untrained and longer than the trained questions: batches holding it are left-padded."""


class HostEvent:
    """``torch.Event`` for the CPU, which has none: CPU copies are done when they return."""

    made = 0

    def __init__(self, device: torch.device, blocking: bool = False) -> None:
        HostEvent.made += 1

    def record(self) -> None:
        pass

    def synchronize(self) -> None:
        pass


@pytest.fixture(scope="module")
def prompter(tiny_lvlm_dir) -> QwenPrompter:
    loaded = QwenPrompter.load(str(tiny_lvlm_dir), device=plan_device("cpu"))
    loaded.max_new_tokens = 300
    return loaded


@pytest.fixture
def host_events(monkeypatch):
    monkeypatch.setattr(torch, "Event", HostEvent)
    HostEvent.made = 0


def views(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 255, (840, 840, 3), dtype=np.uint8)) for _ in range(count)]


@pytest.mark.parametrize("static", [False, True], ids=["dynamic-cache", "static-cache"])
@pytest.mark.parametrize("budget", [300, 12], ids=["answers-end", "budget-ends"])
def test_deferred_answers_equal_per_step_answers(prompter, host_events, static, budget):
    images = views(3)
    questions = [question_for("river"), LONG, question_for("ponds")]
    prompter.static_cache, prompter.max_new_tokens = static, budget
    try:
        per_step = prompter.generate_batch(images, questions)
        assert HostEvent.made == 0  # the CPU path does not defer by itself
        with deferred_stop_check() as deferred:
            late = prompter.generate_batch(images, questions)
    finally:
        prompter.static_cache, prompter.max_new_tokens = False, 300
    assert deferred and HostEvent.made > 0  # the deferred check really ran
    assert [g.text for g in late] == [g.text for g in per_step]
    assert [g.new_tokens for g in late] == [g.new_tokens for g in per_step]
    if budget == 300:  # every answer ends on its own: the extra step is undone
        assert late[0].text == TEST_ANSWERS["river"] and max(g.new_tokens for g in late) < budget
    else:  # the trained answers are longer than the budget: cut there (the untrained one may end sooner)
        assert late[0].new_tokens == late[2].new_tokens == budget and late[1].new_tokens <= budget


def test_deferred_streaming_sends_the_same_text(prompter, host_events):
    image, question = views(1)[0], question_for("ponds")
    plain: list[str] = []
    late: list[str] = []
    expected = prompter.generate(image, question, on_text=plain.append).text
    with deferred_stop_check():
        answer = prompter.generate(image, question, on_text=late.append).text
    assert HostEvent.made > 0
    assert answer == expected and "".join(late).strip() == "".join(plain).strip() == expected.strip()


def test_the_deferral_stays_in_its_block_and_thread():
    cpu = torch.device("cpu")
    supported = generation.DeferredStopCheck.is_supported
    with deferred_stop_check() as deferred:
        assert deferred and generation.DeferredStopCheck.is_supported(cpu, None, False, is_assistant=False)
        assert not generation.DeferredStopCheck.is_supported(cpu, None, False, is_assistant=True)
        elsewhere: list[bool] = []
        thread = threading.Thread(target=lambda: elsewhere.append(supported(cpu, None, False, is_assistant=False)))
        thread.start()
        thread.join()
        assert elsewhere == [False]
        with deferred_stop_check(False):
            assert not supported(cpu, None, False, is_assistant=False)
        assert supported(cpu, None, False, is_assistant=False)
    assert not supported(cpu, None, False, is_assistant=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_cuda_decoding_answers_as_eager(tiny_lvlm_dir):
    """On CUDA ``--compile`` (static cache, compiled step, deferred stop) gives the eager answers."""
    gpu = QwenPrompter.load(str(tiny_lvlm_dir), device=plan_device("cuda"))
    gpu.max_new_tokens = 300
    images, questions = views(3), [question_for("river"), LONG, question_for("airport")]
    eager = gpu.generate_batch(images, questions)
    gpu.static_cache = True
    compiled = gpu.generate_batch(images, questions)
    assert [g.text for g in compiled] == [g.text for g in eager]
    assert compiled[0].text == TEST_ANSWERS["river"]
