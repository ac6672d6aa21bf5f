"""SAM 2.1 through Transformers (``Sam2Model`` + ``Sam2Processor``), the default segmenter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, Sam2Model, Sam2Processor

from think2seg.answer import InstancePrompt
from think2seg.errors import ModelError
from think2seg.models.device import DevicePlan
from think2seg.models.weights import resolve_model_dir


@dataclass(frozen=True)
class Sam2Embedding:
    """Image embeddings of one image and its (H, W) size."""

    features: list[torch.Tensor]
    original_size: tuple[int, int]


class Sam2Segmenter:
    """One ``Sam2Model`` call per instance: its box and two points (labels 1), one mask out."""

    def __init__(self, model: Any, processor: Any, *, name: str) -> None:
        self.model = model
        self.processor = processor
        self.name = name

    @classmethod
    def load(cls, source: str, *, device: DevicePlan) -> Sam2Segmenter:
        """Load a SAM 2.1 Transformers checkpoint from a Hub id or a local folder."""
        folder = resolve_model_dir(source, flag="--segmenter")
        try:
            model_type = AutoConfig.from_pretrained(folder, local_files_only=True).model_type
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read the segmenter config in {folder}: {exc}") from exc
        if model_type != "sam2":
            raise ModelError(
                f"{source} is a {model_type!r} model: --segmenter takes a SAM 2.1 Transformers checkpoint "
                "(e.g. facebook/sam2.1-hiera-small) or a SAM v1 checkpoint as sam1-vit-b:PATH.pth"
            )
        try:
            model = Sam2Model.from_pretrained(folder, dtype=device.dtype, local_files_only=True)
            processor = Sam2Processor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the segmenter from {folder}: {exc}") from exc
        model.to(device.device).eval()
        return cls(model, processor, name=source)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def encode(self, image: np.ndarray) -> Sam2Embedding:
        """Embed an (H, W, 3) uint8 RGB image."""
        return self.encode_batch([image])[0]

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[Sam2Embedding]:
        """Embed several (H, W, 3) uint8 RGB images in one forward pass (sizes may differ)."""
        inputs = self.processor(images=list(images), return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, dtype=self.model.dtype)
        with torch.inference_mode():
            features = self.model.get_image_embeddings(pixel_values)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return [
            Sam2Embedding([level[k : k + 1] for level in features], (int(image.shape[0]), int(image.shape[1])))
            for k, image in enumerate(images)
        ]

    def predict(self, embedding: Sam2Embedding, prompts: Sequence[InstancePrompt]) -> np.ndarray:
        """(N, H, W) bool masks, one per prompt (pixel coordinates of the encoded image)."""
        height, width = embedding.original_size
        masks = np.zeros((len(prompts), height, width), dtype=bool)
        for index, prompt in enumerate(prompts):
            masks[index] = self._one(embedding, prompt)
        return masks

    def _one(self, embedding: Sam2Embedding, prompt: InstancePrompt) -> np.ndarray:
        sizes = [list(embedding.original_size)]
        kwargs: dict[str, Any] = {}
        if prompt.box_xyxy is not None:
            kwargs["input_boxes"] = [[list(prompt.box_xyxy)]]
        if prompt.points_xy is not None:
            kwargs["input_points"] = [[[list(p) for p in prompt.points_xy]]]
            kwargs["input_labels"] = [[[1] * len(prompt.points_xy)]]
        inputs = self.processor(original_sizes=sizes, return_tensors="pt", **kwargs)
        tensors = {k: inputs[k].to(self.device) for k in ("input_boxes", "input_points", "input_labels") if k in inputs}
        if "input_boxes" in tensors:
            tensors["input_boxes"] = tensors["input_boxes"].to(self.model.dtype)
        if "input_points" in tensors:
            tensors["input_points"] = tensors["input_points"].to(self.model.dtype)
        with torch.inference_mode():
            output = self.model(image_embeddings=embedding.features, multimask_output=False, **tensors)
        masks = self.processor.post_process_masks(output.pred_masks.float().cpu(), inputs["original_sizes"])
        return masks[0][0, 0].numpy().astype(bool)
