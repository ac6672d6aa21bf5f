"""SAM 2.1 through Transformers (``Sam2Model`` + ``Sam2Processor``), the default segmenter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import AutoConfig, Sam2Model, Sam2Processor

from think2seg.errors import ModelError
from think2seg.models.device import DevicePlan
from think2seg.models.weights import resolve_model_dir
from think2seg.think2seg_rs.answer import InstancePrompt

ACTIVATIONS_PER_TOKEN = 16
"""Token-width tensors alive at once in a Hiera block (q, k, v, attention, 4x MLP, residuals)."""


@dataclass(frozen=True)
class Sam2Embedding:
    """Image embeddings of one image and its (H, W) size."""

    features: list[torch.Tensor]
    original_size: tuple[int, int]


class Sam2Segmenter:
    """SAM 2.1 prompted per instance with its box and two points (labels 1), one mask out per instance."""

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
        model.to(device.device).eval()  # type: ignore[arg-type]  # transformers types to() as the unbound Module.to
        return cls(model, processor, name=source)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def memory_per_image(self) -> int:
        """Bytes one more image in an encoding batch needs, about: the first Hiera stage's
        activations (its tokens times its width, times the tensors alive in a block)."""
        backbone = self.model.config.vision_config.backbone_config
        size = backbone.image_size if isinstance(backbone.image_size, int) else backbone.image_size[0]
        tokens = (size // backbone.patch_stride[0]) ** 2
        return tokens * backbone.embed_dim_per_stage[0] * self.model.dtype.itemsize * ACTIVATIONS_PER_TOKEN

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
        return self._predict(embedding, prompts, lambda logits: logits > 0.0, bool)[0]

    def predict_scored(
        self, embedding: Sam2Embedding, prompts: Sequence[InstancePrompt]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) bool masks and (N,) float32 scores: SAM's predicted IoU of each mask (its own
        estimate of the mask's quality, 0-1), from the same decoder call as the mask."""
        return self._predict(embedding, prompts, lambda logits: logits > 0.0, bool)

    def predict_logits(self, embedding: Sam2Embedding, prompts: Sequence[InstancePrompt]) -> np.ndarray:
        """(N, H, W) float32 mask logits at the image's size, one per prompt.

        Each instance is decoded exactly as by its own call (box and points, labels 1,
        ``multimask_output=False``), but instances with the same prompt shape share one decoder call:
        SAM decodes the entries of its point batch independently, so no padding point is needed.
        """
        return self._predict(embedding, prompts, lambda logits: logits, np.float32)[0]

    def _predict(
        self,
        embedding: Sam2Embedding,
        prompts: Sequence[InstancePrompt],
        finish: Callable[[torch.Tensor], torch.Tensor],
        dtype: npt.DTypeLike,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode, upsample to the image's size and ``finish`` (e.g. threshold) on the model's device;
        the masks and the (N,) predicted IoU scores."""
        height, width = embedding.original_size
        out = np.zeros((len(prompts), height, width), dtype=dtype)
        scores = np.zeros(len(prompts), dtype=np.float32)
        for indices in _groups_by_shape(prompts):
            logits, iou = self._decode(embedding, [prompts[k] for k in indices])
            out[indices] = finish(logits).cpu().numpy()
            scores[indices] = iou.float().cpu().numpy()
        return out, scores

    def _decode(self, embedding: Sam2Embedding, prompts: list[InstancePrompt]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, H, W) float32 logits at the image's size and (N,) predicted IoUs, on the model's device."""
        kwargs: dict[str, Any] = {}
        # one group of _groups_by_shape: all the prompts have a box or none has; all have as many points
        boxes = [p.box_xyxy for p in prompts if p.box_xyxy is not None]
        points = [p.points_xy for p in prompts if p.points_xy is not None]
        if boxes:
            kwargs["input_boxes"] = [[list(box) for box in boxes]]
        if points:
            kwargs["input_points"] = [[[list(point) for point in p] for p in points]]
            kwargs["input_labels"] = [[[1] * len(p) for p in points]]
        inputs = self.processor(original_sizes=[list(embedding.original_size)], return_tensors="pt", **kwargs)
        tensors = {k: inputs[k].to(self.device) for k in ("input_boxes", "input_points", "input_labels") if k in inputs}
        for key in ("input_boxes", "input_points"):
            if key in tensors:
                tensors[key] = tensors[key].to(self.model.dtype)
        with torch.inference_mode():
            output = self.model(image_embeddings=embedding.features, multimask_output=False, **tensors)
            masks = self.processor.post_process_masks(
                output.pred_masks.float(), inputs["original_sizes"], binarize=False
            )
        return masks[0][:, 0], output.iou_scores[0, :, 0]


def _groups_by_shape(prompts: Sequence[InstancePrompt]) -> list[list[int]]:
    """Indices of the prompts grouped by (has a box, number of points): each group is one decoder call."""
    groups: dict[tuple[bool, int], list[int]] = {}
    for index, prompt in enumerate(prompts):
        key = (prompt.box_xyxy is not None, len(prompt.points_xy) if prompt.points_xy is not None else 0)
        groups.setdefault(key, []).append(index)
    return list(groups.values())
