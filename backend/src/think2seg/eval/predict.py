"""Predictions for benchmark samples under the two protocols.

``paper``: the LVLM sees the 840x840 view, its answer is read with the reference parser's rules
(``parse_answer(..., mode="reference")``), SAM runs on that same view with the prompts as answered
(as floats; an answer whose values are not numbers scores as a parse failure), and scoring happens
at 840x840 (the ground truth resized with nearest neighbour), as published.
``native``: the product's path: the product parser, SAM on the image at its own resolution with the
prompts scaled by (W/840, H/840), and scoring at the image's resolution.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from affine import Affine
from PIL import Image

from think2seg.engine import Engine
from think2seg.errors import InputError
from think2seg.eval.datasets import Sample
from think2seg.geo.arrays import tile_from_array
from think2seg.geo.read import RasterSource
from think2seg.result import ResultStatus
from think2seg.think2seg_rs.answer import AnswerMode, InstancePrompt
from think2seg.think2seg_rs.prompt import VIEW_SIZE_PX, make_view
from think2seg.tile import Tile

PROTOCOLS = ("paper", "native")
ANSWER_MODES: dict[str, AnswerMode] = {"paper": "reference", "native": "product"}
"""The answer parser's rules under each protocol."""


@dataclass
class Loaded:
    """A sample with its image (H, W, 3 uint8) and ground truth (H, W bool) in memory."""

    sample: Sample
    image: np.ndarray
    target: np.ndarray
    valid: np.ndarray


@dataclass
class Prediction:
    """A predicted mask and the ground truth it is scored against, at the protocol's resolution."""

    mask: np.ndarray
    target: np.ndarray
    image: np.ndarray
    parse_failed: bool
    status: str = ""
    raw_answer: str = ""
    new_tokens: int = 0
    seconds: float = 0.0
    prompts: list[InstancePrompt] = field(default_factory=list)


class Predictor(Protocol):
    name: str

    def predict(self, batch: Sequence[Loaded]) -> list[Prediction]: ...


def load(sample: Sample) -> Loaded:
    """Read a sample's image (any GDAL format, georeference ignored) and its mask."""
    with RasterSource(sample.image, pixel_coords=True) as source:
        tile = source.read(source.full_window)
    target = sample.load_mask()
    if target.shape != tile.pixels.shape[:2]:
        (mask_h, mask_w), (image_h, image_w) = target.shape[:2], tile.pixels.shape[:2]
        raise InputError(
            f"the mask {sample.mask_source or 'of sample ' + sample.sample_id} is {mask_w}x{mask_h} px but its image "
            f"{sample.image} is {image_w}x{image_h} px: pair each image with its own mask, or resize the mask to the "
            "image (nearest neighbour)"
        )
    return Loaded(sample, tile.pixels, target, tile.valid)


def resize_mask(mask: np.ndarray, size: int = VIEW_SIZE_PX) -> np.ndarray:
    """A binary mask resized to size x size with nearest neighbour."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((size, size), Image.Resampling.NEAREST)) > 127


class EnginePredictor:
    """Runs an :class:`Engine` on whole images, batched, under ``paper`` or ``native``."""

    def __init__(self, engine: Engine, protocol: str) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}: use paper or native")
        self.engine, self.protocol = engine, protocol
        self.answer_mode = ANSWER_MODES[protocol]
        self.name = f"{engine.prompter.name} + {engine.segmenter.name}"

    def predict(self, batch: Sequence[Loaded]) -> list[Prediction]:
        tiles, targets, images = zip(*(self._tile(item) for item in batch))
        start = time.perf_counter()
        questions = [item.sample.question for item in batch]
        inferences = self.engine.infer_batch(list(tiles), questions, answer_mode=self.answer_mode)
        seconds = (time.perf_counter() - start) / len(batch)
        return [
            Prediction(
                mask=inference.mask,
                target=target,
                image=image,
                parse_failed=inference.status is ResultStatus.UNPARSEABLE,
                status=inference.status.value,
                raw_answer=inference.raw_answer,
                new_tokens=inference.new_tokens,
                seconds=seconds,
                prompts=[i.pixel for i in inference.instances],
            )
            for inference, target, image in zip(inferences, targets, images)
        ]

    def _tile(self, item: Loaded) -> tuple[Tile, np.ndarray, np.ndarray]:
        if self.protocol == "native":
            tile = tile_from_array(
                item.image, transform=Affine.identity(), crs=None, valid=item.valid, pixel_coords=True
            )
            return tile, item.target, item.image
        view = np.asarray(make_view(item.image))
        valid = resize_mask(item.valid)
        tile = tile_from_array(view, transform=Affine.identity(), crs=None, valid=valid, pixel_coords=True)
        return tile, resize_mask(item.target), view
