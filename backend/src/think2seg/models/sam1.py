"""SAM v1 through the ``segment-anything`` package: ``--segmenter sam1-vit-b:PATH.pth``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from think2seg.errors import ModelError, WeightsUnavailableError
from think2seg.models.device import DevicePlan
from think2seg.think2seg_rs.answer import InstancePrompt

SAM1_VARIANTS = {"sam1-vit-b": "vit_b", "sam1-vit-l": "vit_l", "sam1-vit-h": "vit_h"}


@dataclass(frozen=True)
class Sam1Embedding:
    """What ``SamPredictor.set_image`` computes for one image."""

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class Sam1Segmenter:
    """One ``SamPredictor.predict`` call per instance: its box and two points, one mask out."""

    def __init__(self, predictor: Any, *, name: str) -> None:
        self.predictor = predictor
        self.name = name

    @staticmethod
    def checkpoint_path(variant: str, checkpoint: str) -> Path:
        """``checkpoint`` as a path; refused when there is no such file."""
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"the SAM v1 checkpoint {path} does not exist: download sam_{SAM1_VARIANTS[variant]}_*.pth from "
                "https://github.com/facebookresearch/segment-anything#model-checkpoints and pass its path"
            )
        return path

    @classmethod
    def load(cls, variant: str, checkpoint: str, *, device: DevicePlan) -> Sam1Segmenter:
        """Build ``variant`` (``sam1-vit-b``/``-l``/``-h``) from a local ``.pth`` checkpoint."""
        try:
            from segment_anything import SamPredictor, sam_model_registry
        except ImportError as exc:
            raise ModelError(
                "SAM v1 needs the segment-anything package: pip install 'think2seg[sam1]' "
                "(or pip install segment-anything)"
            ) from exc
        path = cls.checkpoint_path(variant, checkpoint)
        try:
            model = sam_model_registry[SAM1_VARIANTS[variant]](checkpoint=str(path))
        except (RuntimeError, OSError, KeyError, ValueError) as exc:
            raise ModelError(f"cannot load {path} as a {variant} checkpoint: {exc}") from exc
        model.to(device.device).eval()
        return cls(SamPredictor(model), name=f"{variant}:{path.name}")

    def encode(self, image: np.ndarray) -> Sam1Embedding:
        """Embed an (H, W, 3) uint8 RGB image."""
        with torch.inference_mode():
            self.predictor.set_image(image, image_format="RGB")
        return Sam1Embedding(
            self.predictor.features, tuple(self.predictor.original_size), tuple(self.predictor.input_size)
        )

    def predict(self, embedding: Sam1Embedding, prompts: Sequence[InstancePrompt]) -> np.ndarray:
        """(N, H, W) bool masks, one per prompt (pixel coordinates of the encoded image)."""
        return self.predict_scored(embedding, prompts)[0]

    def predict_scored(
        self, embedding: Sam1Embedding, prompts: Sequence[InstancePrompt]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) bool masks and (N,) float32 scores: SAM's predicted IoU of each mask."""
        self._restore(embedding)
        height, width = embedding.original_size
        masks = np.zeros((len(prompts), height, width), dtype=bool)
        scores = np.zeros(len(prompts), dtype=np.float32)
        for index, prompt in enumerate(prompts):
            points = np.asarray(prompt.points_xy, dtype=np.float32) if prompt.points_xy else None
            labels = np.ones(len(points), dtype=np.int64) if points is not None else None
            box = np.asarray(prompt.box_xyxy, dtype=np.float32) if prompt.box_xyxy else None
            with torch.inference_mode():
                out, predicted_iou, _logits = self.predictor.predict(
                    point_coords=points, point_labels=labels, box=box, multimask_output=False
                )
            masks[index] = out[0].astype(bool)
            scores[index] = float(predicted_iou[0])
        return masks, scores

    def _restore(self, embedding: Sam1Embedding) -> None:
        """Put an earlier embedding back into the (stateful) predictor."""
        self.predictor.features = embedding.features
        self.predictor.original_size = embedding.original_size
        self.predictor.input_size = embedding.input_size
        self.predictor.is_image_set = True
