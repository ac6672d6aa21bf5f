"""The Think2Seg-RS prompter: a Qwen2.5-VL model through Transformers, greedy decoding."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration, TextStreamer

from think2seg.errors import ModelError
from think2seg.models.base import Generation
from think2seg.models.device import DevicePlan
from think2seg.models.weights import resolve_model_dir
from think2seg.prompt import build_messages

MAX_NEW_TOKENS = 2048
"""The reference evaluation's budget for one answer (reasoning included)."""


class QwenPrompter:
    """Runs a Qwen2.5-VL checkpoint on the Think2Seg-RS prompt.

    Decoding is greedy (``do_sample=False``); the checkpoint's other generation settings (such as
    its repetition penalty) apply unchanged, as in the reference evaluation. ``min_new_tokens`` is
    for benchmarks that force a fixed answer length.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        name: str,
        max_new_tokens: int = MAX_NEW_TOKENS,
        min_new_tokens: int = 0,
    ) -> None:
        self.model = model
        self.processor = processor
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens

    @classmethod
    def load(cls, source: str, *, device: DevicePlan, max_new_tokens: int = MAX_NEW_TOKENS) -> QwenPrompter:
        """Load from a Hub id (downloaded into the cache when missing) or a local folder."""
        folder = resolve_model_dir(source, flag="--lvlm")
        model_type = _model_type(folder)
        if model_type != "qwen2_5_vl":
            raise ModelError(
                f"{source} is a {model_type!r} model: --lvlm needs a Qwen2.5-VL checkpoint "
                "such as RicardoString/Think2Seg-RS-3B"
            )
        try:
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                folder, dtype=device.dtype, attn_implementation=device.attn_implementation, local_files_only=True
            )
            processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the LVLM from {folder}: {exc}") from exc
        model.to(device.device).eval()
        return cls(model, processor, name=source, max_new_tokens=max_new_tokens)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def generate(
        self, view: Image.Image, question: str, *, on_text: Callable[[str], None] | None = None
    ) -> Generation:
        """Answer ``question`` about the 840x840 ``view``; see :class:`~think2seg.models.base.Prompter`."""
        start = time.perf_counter()
        inputs = self._inputs(view, question)
        prepared = time.perf_counter()
        clock = _TokenClock(self.processor.tokenizer, on_text, self.device)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                streamer=clock,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                max_new_tokens=self.max_new_tokens,
                min_new_tokens=self.min_new_tokens,
            )
        done = time.perf_counter()
        new_ids = output[0, inputs["input_ids"].shape[1] :]
        text = self.processor.decode(new_ids, skip_special_tokens=True)
        first = clock.first_token_at or done
        return Generation(text, int(new_ids.numel()), prepared - start, first - prepared, done - first)

    def _inputs(self, view: Image.Image, question: str) -> Any:
        messages = build_messages(view, question)
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = self.processor(text=[text], images=[view], return_tensors="pt")
        return inputs.to(self.device, dtype=self.model.dtype)


def _model_type(folder: Path) -> str:
    try:
        return str(AutoConfig.from_pretrained(folder, local_files_only=True).model_type)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the model config in {folder}: {exc}") from exc


class _TokenClock(TextStreamer):
    """Notes when the first new token exists (end of prefill) and forwards decoded text."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None] | None, device: torch.device) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.first_token_at: float | None = None
        self._on_text = on_text
        self._device = device
        self._calls = 0

    def put(self, value: torch.Tensor) -> None:
        self._calls += 1
        if self._calls == 2:  # the first call carries the prompt, the second the first new token
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
            self.first_token_at = time.perf_counter()
        if self._on_text is not None:
            super().put(value)

    def end(self) -> None:
        if self._on_text is not None:
            super().end()

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if self._on_text is not None and text:
            self._on_text(text)
