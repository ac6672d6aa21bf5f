"""Shared by the benchmarks: models with random weights whose outputs are replaced by plausible ones.

Random weights cost exactly what trained ones do, but their outputs mean nothing: the LVLM writes
gibberish and SAM's logits sit near 0 everywhere (speckle masks with thousands of polygons). The
wrappers below run the real models in full, so every model stage is timed, and then hand on a fixed
answer text and masks that depend on the prompts, as a trained model's would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from think2seg.engine import Engine
from think2seg.models.base import Generation, Prompter, Segmenter
from think2seg.models.device import plan_device
from think2seg.models.qwen import QwenPrompter
from think2seg.testing.real_arch import random_qwen25vl_3b, random_sam21_small
from think2seg.testing.tiny_lvlm import save_untrained_tiny_lvlm
from think2seg.testing.tiny_sam import build_tiny_sam2
from think2seg.think2seg_rs.answer import InstancePrompt

ANSWER = (
    "<think>The river runs from the top to the bottom of the scene.</think> <answer>```json["
    '{"bbox_2d": [250,0,480,420], "positive_points": [[400,100], [380,300]]}, '
    '{"bbox_2d": [200,420,420,840], "positive_points": [[280,600], [290,760]]}]```</answer>'
)
"""A two-instance answer in the released checkpoints' format."""

MaskMaker = Callable[[tuple[int, int], Sequence[InstancePrompt]], np.ndarray]


class FixedText:
    """Runs the real prompter (so its cost is measured) and hands on a fixed answer text."""

    def __init__(self, inner: Prompter, text: str = ANSWER) -> None:
        self.inner, self.text, self.name = inner, text, inner.name

    def __getattr__(self, name: str):  # the inner prompter's device, memory estimate...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def generate(self, view, question, *, on_text=None) -> Generation:
        return dataclasses.replace(self.inner.generate(view, question), text=self.text)

    def generate_batch(self, views, question) -> list[Generation]:
        return [dataclasses.replace(g, text=self.text) for g in self.inner.generate_batch(views, question)]


class SubstituteMasks:
    """Runs the real segmenter (so its cost is measured) and hands on masks from ``make``."""

    def __init__(self, inner: Segmenter, make: MaskMaker) -> None:
        self.inner, self.make, self.name = inner, make, inner.name

    def encode(self, image: np.ndarray) -> tuple[object, tuple[int, int]]:
        return self.inner.encode(image), image.shape[:2]

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[tuple[object, tuple[int, int]]]:
        return list(zip(self.inner.encode_batch(images), (i.shape[:2] for i in images)))

    def predict(self, embedding: tuple[object, tuple[int, int]], prompts: Sequence[InstancePrompt]) -> np.ndarray:
        inner, shape = embedding
        self.inner.predict(inner, prompts)
        return self.make(shape, prompts)


def ellipse_in_box(shape: tuple[int, int], prompts: Sequence[InstancePrompt]) -> np.ndarray:
    """An ellipse inscribed in each prompt's box: a plausible, smooth object mask."""
    height, width = shape
    rows, cols = np.ogrid[0:height, 0:width]
    masks = np.zeros((len(prompts), height, width), dtype=bool)
    for k, prompt in enumerate(prompts):
        x1, y1, x2, y2 = prompt.box_xyxy
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, max((x2 - x1) / 2, 1), max((y2 - y1) / 2, 1)
        masks[k] = ((cols + 0.5 - cx) / rx) ** 2 + ((rows + 0.5 - cy) / ry) ** 2 < 1
    return masks


def random_weight_models(arch: str, device: str, folder: Path, new_tokens: int) -> tuple[QwenPrompter, Segmenter]:
    """The prompter (writing exactly ``new_tokens``) and segmenter with random weights.

    ``tiny``: the test architectures, saved to ``folder`` and loaded as users load models.
    ``real``: Qwen2.5-VL-3B and SAM 2.1 hiera-small sizes, built in memory on the device.
    """
    if arch == "real":
        plan = plan_device(device)
        return random_qwen25vl_3b(plan, new_tokens=new_tokens), random_sam21_small(plan)
    engine = Engine.load(
        lvlm=str(save_untrained_tiny_lvlm(folder / "lvlm")),
        segmenter=str(build_tiny_sam2(folder / "sam2")),
        device=device,
    )
    prompter = engine.prompter
    assert isinstance(prompter, QwenPrompter)
    prompter.max_new_tokens = prompter.min_new_tokens = new_tokens
    return prompter, engine.segmenter
