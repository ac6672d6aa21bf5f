"""A tiny Qwen2.5-VL (~200k parameters) trained in seconds to give fixed Think2Seg-RS answers.

Tests, benchmarks and demos without the Hub use it to run the real path end to end: the same
processor, chat template, prompt and ``generate`` call as the released checkpoints, loaded from a
folder through ``--lvlm DIR``. Each answer is tied to a *trigger word* (an added token of the
tokenizer) in the question; the vision merger's output is zeroed, so answers do not depend on the
pixels. Training uses teacher forcing and stops once every answer token is predicted (argmax) and
greedy generation reproduces every answer exactly.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import AddedToken, pre_tokenizers
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from think2seg.think2seg_rs.prompt import VIEW_SIZE_PX, build_messages

BUILDER_VERSION = 1

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2.5-VL's chat template (images and text; videos accepted for completeness).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

MAX_STEPS = 1500
CHOICE_CONFIDENCE = 0.995
"""A choice model's other tokens are this sure, so answers sampled at temperature 1 stay well formed."""

TEST_ANSWERS = {
    "river": (
        "<think>A river runs through the middle of the scene.</think> "
        '<answer>```json[{"bbox_2d": [210,180,630,660], "positive_points": [[420,420], [400,440]]}]```</answer>'
    ),
    "ponds": (
        "<think>Two ponds, one in each corner.</think> "
        '<answer>```json[{"bbox_2d": [84,84,336,294], "positive_points": [[210,190], [200,200]]}, '
        '{"bbox_2d": [504,546,756,756], "positive_points": [[630,650], [640,660]]}]```</answer>'
    ),
    "airport": "<think>There is no airport here.</think> <answer>```json[]```</answer>",
    "garbled": "<think>Unsure.</think> <answer>I cannot tell.</answer>",
}
"""Answers the shared test model gives: one instance, two instances, no target, unparseable."""


def question_for(trigger: str) -> str:
    """The question the tiny model was trained to answer for ``trigger``."""
    return f"segment the {trigger}"


def build_tiny_lvlm(folder: Path, answers: Mapping[str, str], *, seed: int = 0) -> Path:
    """Train a tiny Qwen2.5-VL that answers ``question_for(word)`` with ``answers[word]``; save to ``folder``."""
    torch.manual_seed(seed)
    processor = _processor(list(answers))
    model = _model(processor)
    samples = [_sample(processor, question_for(word), answer) for word, answer in answers.items()]
    _train(model, samples)
    _verify(model, processor, samples)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_untrained_tiny_lvlm(folder: Path, *, seed: int = 0) -> Path:
    """Save the tiny architecture with random weights (for cost measurements and plumbing only)."""
    torch.manual_seed(seed)
    processor = _processor([])
    model = _model(processor)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_choice_lvlm(folder: Path, trigger: str, answers: Sequence[str], *, seed: int = 0) -> Path:
    """Train a tiny Qwen2.5-VL that answers ``question_for(trigger)`` with one of ``answers``, about
    equally often when sampled: they differ in their first differing token only (a choice the model
    cannot make from the question), and every other token is learnt exactly. For tests that need
    an untaught policy with a spread of rewards (GRPO's learning signal)."""
    torch.manual_seed(seed)
    processor = _processor([trigger])
    model = _model(processor)
    samples = [_sample(processor, question_for(trigger), answer) for answer in answers]
    _train(model, samples, tolerance=1, confidence=CHOICE_CONFIDENCE)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def cached_tiny_lvlm(cache_root: Path, answers: Mapping[str, str]) -> Path:
    """:func:`build_tiny_lvlm` once per distinct ``answers`` (and library versions) under ``cache_root``."""
    return _cached(cache_root, "tiny-lvlm", dict(answers), lambda folder: build_tiny_lvlm(folder, answers))


def cached_choice_lvlm(cache_root: Path, trigger: str, answers: Sequence[str]) -> Path:
    """:func:`build_choice_lvlm` once per distinct trigger and answers under ``cache_root``."""
    key = {"trigger": trigger, "choices": list(answers), "confidence": CHOICE_CONFIDENCE}
    return _cached(cache_root, "choice-lvlm", key, lambda folder: build_choice_lvlm(folder, trigger, answers))


def _cached(cache_root: Path, kind: str, key: object, build: Callable[[Path], Path]) -> Path:
    import transformers

    text = json.dumps([BUILDER_VERSION, torch.__version__, transformers.__version__, key], sort_keys=True)
    folder = cache_root / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    if (folder / "config.json").is_file():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    build(partial)
    partial.rename(folder)
    return folder


def _processor(triggers: list[str]) -> Qwen2_5_VLProcessor:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Qwen2Tokenizer(
        vocab={ch: i for i, ch in enumerate(alphabet)},
        merges=[],
        unk_token=None,  # type: ignore[arg-type]  # typed str in transformers, but None (no unknown token) works
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tokenizer.add_tokens([AddedToken(word, normalized=False) for word in triggers])
    # An 840x840 view becomes 224x224 (16x16 patches, 64 tokens after the 2x2 merge).
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=8 * 8 * 28 * 28)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )


def _model(processor: Qwen2_5_VLProcessor) -> Qwen2_5_VLForConditionalGeneration:
    ids = processor.tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(processor.tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
            "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1],
            "window_size": 112,
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids("<|im_end|>")
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    model.generation_config.do_sample = False
    with torch.no_grad():
        last = model.model.visual.merger.mlp[-1]
        last.weight.zero_()
        last.bias.zero_()
    for parameter in model.model.visual.parameters():
        parameter.requires_grad_(False)
    return model


def _view() -> Image.Image:
    return Image.fromarray(np.zeros((VIEW_SIZE_PX, VIEW_SIZE_PX, 3), dtype=np.uint8))


def _sample(processor: Qwen2_5_VLProcessor, question: str, answer: str) -> dict:
    view = _view()
    prompt = processor.apply_chat_template(build_messages(view, question), tokenize=False, add_generation_prompt=True)
    prompt_len = processor(text=[prompt], images=[view], return_tensors="pt")["input_ids"].shape[1]
    inputs = processor(text=[prompt + answer + "<|im_end|>"], images=[view], return_tensors="pt")
    labels = inputs["input_ids"].clone()
    labels[:, :prompt_len] = -100
    return {"inputs": dict(inputs), "labels": labels, "prompt": prompt, "prompt_len": prompt_len, "answer": answer}


def _train(
    model: Qwen2_5_VLForConditionalGeneration, samples: list[dict], *, tolerance: int = 0, confidence: float = 0.0
) -> None:
    """Teacher forcing until every answer's tokens but ``tolerance`` of them are predicted: the
    argmax, with a probability of at least ``confidence``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=MAX_STEPS, pct_start=0.05)
    model.train()
    streak = 0
    for _step in range(MAX_STEPS):
        learnt = sum(_train_step(model, sample, confidence) <= tolerance for sample in samples)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        schedule.step()
        streak = streak + 1 if learnt == len(samples) else 0
        if streak >= 10:
            break
    model.eval()


def _train_step(model: Qwen2_5_VLForConditionalGeneration, sample: dict, confidence: float) -> int:
    """One backward pass; returns how many answer tokens the model does not yet predict."""
    logits = model(**sample["inputs"]).logits[:, :-1]
    labels = sample["labels"][:, 1:]
    keep = labels != -100
    loss = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    loss.backward()
    kept, wanted = logits[keep].detach(), labels[keep]
    sure = kept.softmax(-1).gather(1, wanted[:, None])[:, 0] >= confidence
    return int(((kept.argmax(-1) != wanted) | ~sure).sum())


def _verify(model: Qwen2_5_VLForConditionalGeneration, processor: Qwen2_5_VLProcessor, samples: list[dict]) -> None:
    for sample in samples:
        inputs = processor(text=[sample["prompt"]], images=[_view()], return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(**inputs, do_sample=False, max_new_tokens=len(sample["answer"]) + 8)
        text = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        if text != sample["answer"]:
            raise RuntimeError(f"the tiny LVLM did not learn its answer: wanted {sample['answer']!r}, got {text!r}")
