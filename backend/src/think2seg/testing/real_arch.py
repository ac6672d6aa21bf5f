"""Real-size architectures with random weights, for cost measurements (never for quality).

Qwen2.5-VL-3B and SAM 2.1 hiera-small cost the same FLOPs and memory traffic as the released
checkpoints. The tokenizer is the tiny byte-level one, so text prompts are longer in tokens than
with Qwen's BPE (about 850 instead of about 300); the 840x840 view still gives 900 image tokens.
"""

from __future__ import annotations

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    Sam2Config,
    Sam2ImageProcessor,
    Sam2Model,
    Sam2Processor,
)

from think2seg.models.device import DevicePlan
from think2seg.models.qwen import QwenPrompter
from think2seg.models.sam2 import Sam2Segmenter
from think2seg.testing.tiny_lvlm import CHAT_TEMPLATE, _processor


def qwen25vl_3b_config(tokenizer_ids: dict[str, int]) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL-3B-Instruct's architecture; special-token ids follow the given tokenizer."""
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
            "bos_token_id": tokenizer_ids["<|endoftext|>"],
            "eos_token_id": tokenizer_ids["<|im_end|>"],
            "pad_token_id": tokenizer_ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "window_size": 112,
            "tokens_per_second": 2,
        },
        image_token_id=tokenizer_ids["<|image_pad|>"],
        video_token_id=tokenizer_ids["<|video_pad|>"],
        vision_start_token_id=tokenizer_ids["<|vision_start|>"],
        vision_end_token_id=tokenizer_ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def sam21_small_config() -> Sam2Config:
    """SAM 2.1 hiera-small: Hiera stages 1/2/11/2, global attention in blocks 7, 10 and 13."""
    return Sam2Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam2_hiera_det_model",
                "blocks_per_stage": [1, 2, 11, 2],
                "global_attention_blocks": [7, 10, 13],
            }
        }
    )


def qwen25vl_processor() -> Qwen2_5_VLProcessor:
    """Qwen2.5-VL's processor with the tiny tokenizer (same special tokens) and the published image
    limits, spelled out: an 840x840 view -> 30x30 = 900 image tokens. Not the class defaults: under
    transformers 5.17 a processor built with other limits (the tiny model's) changes them."""
    tiny = _processor([])
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 16384),
        tokenizer=tiny.tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )


def random_qwen25vl_3b(device: DevicePlan, *, new_tokens: int) -> QwenPrompter:
    """A prompter with Qwen2.5-VL-3B's architecture and random weights that writes exactly ``new_tokens``."""
    processor = qwen25vl_processor()
    tokenizer = processor.tokenizer
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens}
    config = qwen25vl_3b_config(ids)
    config._attn_implementation = device.attn_implementation
    with torch.device(device.device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(device.dtype).eval()  # type: ignore[arg-type]  # transformers types to() as the unbound Module.to
    return QwenPrompter(
        model, processor, name="random Qwen2.5-VL-3B", max_new_tokens=new_tokens, min_new_tokens=new_tokens
    )


def random_sam21_small(device: DevicePlan) -> Sam2Segmenter:
    with torch.device(device.device):
        model = Sam2Model(sam21_small_config()).to(device.dtype).eval()  # type: ignore[arg-type]  # transformers types to() as the unbound Module.to
    return Sam2Segmenter(model, Sam2Processor(image_processor=Sam2ImageProcessor()), name="random SAM 2.1 hiera-small")
