"""Shared fixtures: tiny models built once per session, generated rasters, a box segmenter."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from think2seg.engine import Engine
from think2seg.models.base import Generation
from think2seg.testing.tiny_lvlm import TEST_ANSWERS, cached_tiny_lvlm
from think2seg.testing.tiny_sam import build_tiny_sam2
from think2seg.think2seg_rs.answer import InstancePrompt

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI's ``main`` points the root logger at the stderr of its test (a capture that closes
    after it): put back the handlers of before, so later tests do not log into a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def tiny_lvlm_dir(request: pytest.FixtureRequest) -> Path:
    """The trained tiny Qwen2.5-VL (cached in .pytest_cache between runs)."""
    return cached_tiny_lvlm(Path(request.config.cache.mkdir("think2seg-models")), TEST_ANSWERS)


@pytest.fixture(scope="session")
def tiny_sam2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sam2(tmp_path_factory.mktemp("tiny-sam2"))


def tiny_model_flags(lvlm_dir: Path, sam2_dir: Path) -> list[str]:
    """The CLI's model options for the tiny models on the CPU."""
    return ["--lvlm", str(lvlm_dir), "--segmenter", str(sam2_dir), "--device", "cpu"]


@pytest.fixture(scope="session")
def tiny_engine(tiny_lvlm_dir: Path, tiny_sam2_dir: Path) -> Engine:
    return Engine.load(lvlm=str(tiny_lvlm_dir), segmenter=str(tiny_sam2_dir), device="cpu")


class BoxSegmenter:
    """A segmenter whose mask is each prompt's box (pixel centres inside it): masks are known exactly.
    A prompt of points alone gets the pixels of its points."""

    name = "box-segmenter"

    def __init__(self) -> None:
        self.calls: list[list[InstancePrompt]] = []

    def encode(self, image: np.ndarray) -> tuple[int, int]:
        return image.shape[:2]

    def predict(self, embedding: tuple[int, int], prompts: Sequence[InstancePrompt]) -> np.ndarray:
        self.calls.append(list(prompts))
        height, width = embedding
        cols, rows = np.arange(width) + 0.5, np.arange(height) + 0.5
        masks = np.zeros((len(prompts), height, width), dtype=bool)
        for k, prompt in enumerate(prompts):
            if prompt.box_xyxy is None:
                for col, row in prompt.points_xy or ():
                    masks[k, min(int(row), height - 1), min(int(col), width - 1)] = True
                continue
            x1, y1, x2, y2 = prompt.box_xyxy
            masks[k] = ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
        return masks


class ScoredBoxSegmenter(BoxSegmenter):
    """A box segmenter that also predicts a score per mask: ``scores[k]`` for the k-th prompt of
    each call (cycling), as SAM's IoU head would."""

    name = "scored-box-segmenter"

    def __init__(self, scores: Sequence[float] = (0.9, 0.4, 0.7)) -> None:
        super().__init__()
        self.scores = list(scores)

    def predict_scored(self, embedding: tuple[int, int], prompts: Sequence[InstancePrompt]):
        masks = self.predict(embedding, prompts)
        return masks, np.array([self.scores[k % len(self.scores)] for k in range(len(prompts))], dtype=np.float32)


class FixedPrompter:
    """A prompter that returns one fixed answer and counts its calls."""

    name = "fixed-prompter"

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls = 0

    def generate(self, view, question, *, on_text=None) -> Generation:
        self.calls += 1
        if on_text is not None:
            on_text(self.text)
        return Generation(self.text, new_tokens=len(self.text))


@pytest.fixture
def box_segmenter() -> BoxSegmenter:
    return BoxSegmenter()


@pytest.fixture
def cli(tiny_lvlm_dir, tiny_sam2_dir, capsys):
    """``think2seg ARGS`` in this process with the tiny models: (exit code, stdout, stderr)."""
    from think2seg.cli import main

    def run(*args):
        models = ["--lvlm", str(tiny_lvlm_dir), "--segmenter", str(tiny_sam2_dir), "--device", "cpu"]
        code = main([*map(str, args), *models])
        out, err = capsys.readouterr()
        return code, out, err

    return run
