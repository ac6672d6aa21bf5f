"""Build the prompter and segmenter named on the command line (or by the Python API)."""

from __future__ import annotations

from think2seg.errors import InputError
from think2seg.models.base import Prompter, Segmenter
from think2seg.models.device import DevicePlan
from think2seg.models.qwen import MAX_NEW_TOKENS, QwenPrompter
from think2seg.models.sam1 import SAM1_VARIANTS, Sam1Segmenter
from think2seg.models.sam2 import Sam2Segmenter
from think2seg.models.weights import check_local_source

SEGMENTER_SYNTAX = (
    "a SAM 2.1 Transformers checkpoint (Hub id or folder, e.g. facebook/sam2.1-hiera-small) "
    "or a SAM v1 checkpoint as sam1-vit-b:PATH.pth, sam1-vit-l:PATH.pth or sam1-vit-h:PATH.pth"
)


def load_prompter(source: str, *, device: DevicePlan, max_new_tokens: int = MAX_NEW_TOKENS) -> Prompter:
    """The Qwen2.5-VL prompter from a Hub id or local folder."""
    return QwenPrompter.load(source, device=device, max_new_tokens=max_new_tokens)


def load_segmenter(spec: str, *, device: DevicePlan) -> Segmenter:
    """The segmenter named by ``spec`` (see :data:`SEGMENTER_SYNTAX`)."""
    variant, checkpoint = parse_sam1_spec(spec)
    if variant is not None:
        return Sam1Segmenter.load(variant, checkpoint, device=device)
    return Sam2Segmenter.load(spec, device=device)


def check_segmenter(spec: str) -> None:
    """Refuse a ``--segmenter`` that cannot load, before any model loads (reads no network)."""
    variant, checkpoint = parse_sam1_spec(spec)
    if variant is not None:
        Sam1Segmenter.checkpoint_path(variant, checkpoint)
    else:
        check_local_source(spec, flag="--segmenter")


def parse_sam1_spec(spec: str) -> tuple[str | None, str]:
    """(variant, checkpoint path) for ``sam1-vit-X:PATH``; (None, spec) for anything else."""
    head, sep, tail = spec.partition(":")
    if head.lower() not in SAM1_VARIANTS:
        if head.lower().startswith("sam1"):
            raise InputError(f"unknown segmenter {spec!r}: use {SEGMENTER_SYNTAX}")
        return None, spec
    if not sep or not tail.strip():
        raise InputError(f"{head} needs its checkpoint file: {head}:PATH.pth")
    return head.lower(), tail.strip()
