"""The Think2Seg-RS prompter: a Qwen2.5-VL model through Transformers, greedy decoding."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoProcessor,
    LogitsProcessor,
    LogitsProcessorList,
    Qwen2_5_VLForConditionalGeneration,
    TextStreamer,
)

from think2seg.errors import ModelError
from think2seg.models.base import Generation
from think2seg.models.device import DevicePlan
from think2seg.models.stop_check import deferred_stop_check
from think2seg.models.weights import resolve_model_dir
from think2seg.think2seg_rs.prompt import VIEW_SIZE_PX, build_messages

MAX_NEW_TOKENS = 2048
"""The reference evaluation's budget for one answer (reasoning included)."""
TEXT_TOKENS_BOUND = 512
"""Text tokens of a prompt at most: the template, the instructions and a 1000-character question."""


class QwenPrompter:
    """Runs a Qwen2.5-VL checkpoint on the Think2Seg-RS prompt.

    Decoding is greedy (``do_sample=False``); the checkpoint's other generation settings (such as
    its repetition penalty) apply unchanged, as in the reference evaluation. ``min_new_tokens`` is
    for benchmarks that force a fixed answer length. ``static_cache`` preallocates the KV cache
    at full length, which on a GPU also makes Transformers compile the decoding step
    (``torch.compile``, CUDA graphs; each new batch shape compiles once) and defers its stop check
    (:mod:`~think2seg.models.stop_check`): the compiled loop then never waits on the GPU. The eager
    loop waits in the model anyway (SDPA's check for padding), so it keeps the plain check.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        name: str,
        max_new_tokens: int = MAX_NEW_TOKENS,
        min_new_tokens: int = 0,
        static_cache: bool = False,
    ) -> None:
        self.model = model
        self.processor = processor
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.static_cache = static_cache

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
        model.to(device.device).eval()  # type: ignore[arg-type]  # transformers types to() as the unbound Module.to
        return cls(model, processor, name=source, max_new_tokens=max_new_tokens, static_cache=device.compile)

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
        inputs = self.model_inputs(views, questions)
        clock = GenerationClock(self.device)
        extra: dict[str, Any] = {"cache_implementation": "static"} if self.static_cache else {}
        defer = deferred_stop_check() if self.static_cache and self.device.type == "cuda" else nullcontext()
        with torch.inference_mode(), defer:
            output = self.model.generate(
                **inputs,
                **extra,
                streamer=text_stream,  # only when streaming: it copies each token to the host
                logits_processor=LogitsProcessorList([clock]),
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                max_new_tokens=self.max_new_tokens,
                min_new_tokens=self.min_new_tokens,
            )
        new_ids = output[:, inputs["input_ids"].shape[1] :].cpu()  # waits for the GPU
        done = time.perf_counter()
        texts = self.processor.batch_decode(new_ids, skip_special_tokens=True)
        prepare_s, prefill_s = clock.split(start, done)
        n = len(views)
        shares = (prepare_s / n, prefill_s / n, (done - start - prepare_s - prefill_s) / n)
        return [Generation(text, self._answer_length(ids), *shares) for text, ids in zip(texts, new_ids)]

    def model_inputs(self, views: list[Image.Image], questions: list[str]) -> Any:
        """The processor's tensors for ``questions[i]`` about ``views[i]``, left-padded, on the model's device."""
        texts = [
            self.processor.apply_chat_template(build_messages(view, q), tokenize=False, add_generation_prompt=True)
            for view, q in zip(views, questions)
        ]
        inputs = self.processor(text=texts, images=views, padding=True, padding_side="left", return_tensors="pt")
        return inputs.to(self.device, dtype=self.model.dtype)

    def memory_per_sample(self, text_tokens: int = TEXT_TOKENS_BOUND) -> int:
        """Bytes one more answer in a batch needs at most: its KV cache at full length, plus the
        larger of its prefill and vision-encoder activations (an estimate from the config)."""
        text, vision = self.model.config.text_config, self.model.config.vision_config
        width = self.model.dtype.itemsize
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        image_tokens = (VIEW_SIZE_PX // (vision.patch_size * vision.spatial_merge_size)) ** 2
        prompt = image_tokens + text_tokens
        kv_cache = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * (prompt + self.max_new_tokens)
        prefill = prompt * (4 * text.hidden_size + 3 * text.intermediate_size)
        patches = (VIEW_SIZE_PX // vision.patch_size) ** 2
        encoder = patches * (6 * vision.hidden_size + 3 * vision.intermediate_size)
        logits = 4 * text.vocab_size  # float32 scores of the last position
        return width * (kv_cache + max(prefill, encoder)) + 2 * logits

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


class GenerationClock(LogitsProcessor):
    """Times the inputs' preparation and the prefill without stopping the GPU inside the loop.

    ``generate`` calls it first once the prefill's logits exist: on CUDA it records events there
    (read after generation), on the CPU it reads the clock.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.prepared_at = time.perf_counter()
        self.first_at: float | None = None
        self.events: list[torch.cuda.Event] = []
        if self.cuda:
            self.events.append(torch.cuda.Event(enable_timing=True))
            self.events[0].record()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.first_at is None:
            self.first_at = time.perf_counter()
            if self.cuda:
                self.events.append(torch.cuda.Event(enable_timing=True))
                self.events[1].record()
        return scores

    def split(self, start: float, done: float) -> tuple[float, float]:
        """(preparation, prefill) seconds of a generation that ran from ``start`` to ``done``."""
        prepare = self.prepared_at - start
        if self.first_at is None:
            return prepare, done - self.prepared_at
        if self.cuda and len(self.events) == 2:
            return prepare, self.events[0].elapsed_time(self.events[1]) / 1000
        return prepare, self.first_at - self.prepared_at


class _TextForwarder(TextStreamer):
    """Hands decoded answer text to a callback as it is generated (one sequence only)."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._on_text(text)
