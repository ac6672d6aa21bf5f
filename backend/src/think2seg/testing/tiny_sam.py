"""Tiny Segment Anything models with random weights for offline tests and benchmarks.

``build_tiny_sam2`` saves a ~350k-parameter ``Sam2Model`` (Hiera dims 16/32/64/128, image size kept
at 1024) with its ``Sam2Processor``, loadable through ``--segmenter DIR``. ``tiny_sam1_builder``
builds a SAM v1 with a small ViT encoder, the stand-in for ``sam_model_registry['vit_b']``.
Masks from random weights are arbitrary blobs: use these for plumbing and cost, never quality.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor


def tiny_sam2_config() -> Sam2Config:
    return Sam2Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam2_hiera_det_model",
                "hidden_size": 16,
                "embed_dim_per_stage": [16, 32, 64, 128],
                "num_attention_heads_per_stage": [1, 1, 2, 2],
                "blocks_per_stage": [1, 1, 2, 1],
                "global_attention_blocks": [3],
            },
            "backbone_channel_list": [128, 64, 32, 16],
            "fpn_hidden_size": 32,
        },
        prompt_encoder_config={"hidden_size": 32},
        mask_decoder_config={"hidden_size": 32, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": 32},
    )


def build_tiny_sam2(folder: Path, *, seed: int = 0) -> Path:
    """Save a tiny random ``Sam2Model`` and its processor to ``folder``."""
    torch.manual_seed(seed)
    model = Sam2Model(tiny_sam2_config()).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    Sam2Processor(image_processor=Sam2ImageProcessor()).save_pretrained(folder)
    return folder


def tiny_sam1_builder() -> Any:
    """A ``sam_model_registry``-style builder (``builder(checkpoint=PATH)``) of a small SAM v1."""
    from segment_anything.build_sam import _build_sam

    return functools.partial(
        _build_sam, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1]
    )


def build_tiny_sam1(path: Path, *, seed: int = 0) -> Path:
    """Save the state dict of a tiny random SAM v1 to ``path`` (a ``.pth`` file)."""
    torch.manual_seed(seed)
    model = tiny_sam1_builder()(checkpoint=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
