"""The Think2Seg-RS prompt: the exact text, the 840x840 view and the chat messages.

The released checkpoints were trained on exactly this system message, this user text and an image
resized to 840x840 (aspect ratio not kept, LANCZOS). Change nothing here without retraining.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from think2seg.errors import QuestionError

VIEW_SIZE_PX = 840
"""Side of the square view the LVLM sees; its answers are in pixels of this view."""

MAX_QUESTION_CHARS = 1000
"""Longest question accepted. The model was trained on one-sentence questions."""

SYSTEM_PROMPT = "You are a remote sensing analysis assistant. Your task is to generate spatial prompts for the Segment Anything Model (SAM) based on a user's request."

USER_TEMPLATE = (
    'Please find "{Question}", identify the target. For each target instance, provide:\n'
    "1.  `bbox_2d`: A tight bounding box.\n"
    "2.  `positive_points`: Exactly two points, placed inside the target.\n"
    "Output your thinking process in <think> </think> tags.\n"
    "Output the final answer in <answer> </answer> tags with the specified JSON format. If no targets are found, output an empty list.\n"
    "i.e. <think> thinking process here </think> \n"
    '<answer>```json[{"bbox_2d": [310,360,567,586], "positive_points": [[434, 474], [450, 460]]}, {"bbox_2d": [10,200,100,320], "positive_points": [[50, 250], [90, 300]]}]```</answer>'
)
"""The user text; ``{Question}`` is replaced by the question (plain replacement, no formatting)."""


def validate_question(question: str) -> str:
    """Return the question stripped of surrounding whitespace, or raise :class:`QuestionError`."""
    if not isinstance(question, str):
        raise QuestionError(f"the question must be text, got {type(question).__name__}")
    text = question.strip()
    if not text:
        raise QuestionError('the question is empty: ask what to segment, e.g. "segment the river"')
    if len(text) > MAX_QUESTION_CHARS:
        raise QuestionError(
            f"the question has {len(text)} characters; the limit is {MAX_QUESTION_CHARS}: "
            "ask one short question about one kind of target"
        )
    return text


def user_text(question: str) -> str:
    """The user message text for ``question`` (already validated)."""
    return USER_TEMPLATE.replace("{Question}", question)


def make_view(pixels: np.ndarray) -> Image.Image:
    """Resize an (H, W, 3) uint8 RGB array to the 840x840 view with LANCZOS (aspect not kept)."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {pixels.shape} {pixels.dtype}")
    return Image.fromarray(pixels).resize((VIEW_SIZE_PX, VIEW_SIZE_PX), Image.Resampling.LANCZOS)


def build_messages(view: Image.Image, question: str) -> list[dict[str, Any]]:
    """Chat messages for the processor's chat template: the system message, then [image, text]."""
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {
            "role": "user",
            "content": [{"type": "image", "image": view}, {"type": "text", "text": user_text(question)}],
        },
    ]
