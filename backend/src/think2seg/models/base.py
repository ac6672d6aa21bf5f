"""The two model roles the engine composes, as protocols, so any object can stand in.

A *prompter* reads the 840x840 view and the question and answers with text (reasoning and
prompts); a *segmenter* turns instance prompts into masks at the tile's resolution. Either may
also offer a batched method (``generate_batch(views, question)``, ``encode_batch(images)``), which
the engine then uses for several tiles at once, and a segmenter ``predict_scored(embedding,
prompts)``, which returns each mask's predicted quality with it (SAM's IoU head).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from think2seg.think2seg_rs.answer import InstancePrompt

ENCODE_CHUNK = 16
"""Images per SAM encoder call: enough to fill a GPU, few enough to bound its activations."""


@dataclass(frozen=True)
class Generation:
    """One LVLM answer and what it cost.

    ``prepare_s`` is building the model inputs (chat template, image tensors); ``prefill_s`` runs
    until the first new token; ``decode_s`` the remaining tokens. ``new_tokens`` counts the
    generated tokens.
    """

    text: str
    new_tokens: int = 0
    prepare_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0


@runtime_checkable
class Prompter(Protocol):
    """Answers a question about an image with Think2Seg-RS formatted text."""

    name: str

    def generate(self, view: Image.Image, question: str, *, on_text: Callable[[str], None] | None = None) -> Generation:
        """Answer ``question`` about ``view`` (840x840 RGB); ``on_text`` receives text as it is generated."""
        ...


@runtime_checkable
class Segmenter(Protocol):
    """Segment Anything: one image embedding, then one mask per instance prompt."""

    name: str

    def encode(self, image: np.ndarray) -> Any:
        """Embed an (H, W, 3) uint8 RGB image; the result is opaque and goes to :meth:`predict`."""
        ...

    def predict(self, embedding: Any, prompts: Sequence[InstancePrompt]) -> np.ndarray:
        """(N, H, W) bool masks, one per prompt, at the encoded image's resolution.

        Prompts are in pixel coordinates of that image. Each mask comes from one call with the
        instance's box and its points (labels 1), single-mask output.
        """
        ...


def predict_scored(
    segmenter: Segmenter, embedding: Any, prompts: Sequence[InstancePrompt]
) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool masks and (N,) float32 scores, one per prompt.

    The score is the segmenter's own prediction of its mask's IoU (SAM's IoU head: the quality of
    the mask given the prompt, not the LVLM's certainty that the object is there). A segmenter
    without ``predict_scored`` gives NaN scores: unknown, never made up.
    """
    scored = getattr(segmenter, "predict_scored", None)
    if scored is not None:
        masks, scores = scored(embedding, prompts)
        return masks, np.asarray(scores, dtype=np.float32)
    return segmenter.predict(embedding, prompts), np.full(len(prompts), np.nan, dtype=np.float32)


def generate_many(
    prompter: Prompter,
    views: Sequence[Image.Image],
    questions: Sequence[str],
    *,
    on_text: Callable[[str], None] | None = None,
) -> list[Generation]:
    """Answer ``questions[i]`` about ``views[i]``: one batched call when the prompter has ``generate_batch``."""
    if len(views) == 1:
        return [prompter.generate(views[0], questions[0], on_text=on_text)]
    batch = getattr(prompter, "generate_batch", None)
    if batch is not None:
        same = all(q == questions[0] for q in questions)
        return list(batch(views, questions[0] if same else list(questions)))
    return [prompter.generate(view, q) for view, q in zip(views, questions)]


def encode_many(segmenter: Segmenter, images: Sequence[np.ndarray], *, chunk: int = ENCODE_CHUNK) -> list[Any]:
    """Embed each image: batched calls of up to ``chunk`` images when the segmenter has ``encode_batch``."""
    batch = getattr(segmenter, "encode_batch", None)
    if batch is None or len(images) == 1:
        return [segmenter.encode(image) for image in images]
    embeddings: list[Any] = []
    for start in range(0, len(images), chunk):
        embeddings.extend(batch(images[start : start + chunk]))
    return embeddings
