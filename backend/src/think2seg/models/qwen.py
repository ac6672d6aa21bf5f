"""The Think2Seg-RS prompter: a Qwen2.5-VL model through Transformers, greedy decoding."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration, TextStreamer
from transformers.generation.streamers import BaseStreamer

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

    def generate(self, view: Image.Image, question: str, *, on_text: Callable[[str], None] | None = None) -> Generation:
        """Answer ``question`` about the 840x840 ``view``; see :class:`~think2seg.models.base.Prompter`."""
        text_stream = _TextForwarder(self.processor.tokenizer, on_text) if on_text is not None else None
        return self._generate([view], [question], text_stream)[0]

    def generate_batch(self, views: Sequence[Image.Image], question: str | Sequence[str]) -> list[Generation]:
        """Answer ``question`` (one for all, or one per view) about several views in one ``generate``
        call, left-padded.

        Each :class:`Generation` carries an equal share of the batch's preparation, prefill and
        decode time.
        """
        questions = [question] * len(views) if isinstance(question, str) else list(question)
        return self._generate(list(views), questions, None)

    def _generate(
        self, views: list[Image.Image], questions: list[str], text_stream: TextStreamer | None
    ) -> list[Generation]:
        start = time.perf_counter()
        inputs = self._inputs(views, questions)
        prepared = time.perf_counter()
        clock = _TokenClock(self.device, text_stream)
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
        new_ids = output[:, inputs["input_ids"].shape[1] :].cpu()
        texts = self.processor.batch_decode(new_ids, skip_special_tokens=True)
        first = clock.first_token_at or done
        n = len(views)
        shares = ((prepared - start) / n, (first - prepared) / n, (done - first) / n)
        return [Generation(text, self._answer_length(ids), *shares) for text, ids in zip(texts, new_ids)]

    def _inputs(self, views: list[Image.Image], questions: list[str]) -> Any:
        texts = [
            self.processor.apply_chat_template(build_messages(view, q), tokenize=False, add_generation_prompt=True)
            for view, q in zip(views, questions)
        ]
        inputs = self.processor(text=texts, images=views, padding=True, padding_side="left", return_tensors="pt")
        return inputs.to(self.device, dtype=self.model.dtype)

    def _answer_length(self, ids: torch.Tensor) -> int:
        """Generated tokens up to and including the first end-of-answer token."""
        stops = self.model.generation_config.eos_token_id
        stops = set(stops if isinstance(stops, list) else [stops])
        for position, token in enumerate(ids.tolist()):
            if token in stops:
                return position + 1
        return int(ids.numel())


def _model_type(folder: Path) -> str:
    try:
        return str(AutoConfig.from_pretrained(folder, local_files_only=True).model_type)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the model config in {folder}: {exc}") from exc


class _TokenClock(BaseStreamer):
    """Notes when the first new token exists (the end of prefill); forwards tokens to a text stream."""

    def __init__(self, device: torch.device, text_stream: TextStreamer | None) -> None:
        self.first_token_at: float | None = None
        self._device = device
        self._text_stream = text_stream
        self._calls = 0

    def put(self, value: torch.Tensor) -> None:
        self._calls += 1
        if self._calls == 2:  # the first call carries the prompt, the second the first new token
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
            self.first_token_at = time.perf_counter()
        if self._text_stream is not None:
            self._text_stream.put(value)

    def end(self) -> None:
        if self._text_stream is not None:
            self._text_stream.end()


class _TextForwarder(TextStreamer):
    """Hands decoded answer text to a callback as it is generated (one sequence only)."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._on_text(text)
