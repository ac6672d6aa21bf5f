"""What the models said about one tile before it is vectorized (:class:`Inference`), and the
vectorizing options every driver checks the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
from rasterio.crs import CRS

from think2seg.errors import InputError
from think2seg.geo.outline import check_outline
from think2seg.instances import union_of
from think2seg.options import MIN_AREA_M2, MIN_SCORE, SIMPLIFY_PX, check_min_area
from think2seg.result import InstanceResult, ResultStatus
from think2seg.tile import Tile

NO_DATA_MESSAGE = "the window holds only nodata pixels, so no model was run: choose bounds over valid data"


class VectorArgs(TypedDict):
    """The vectorizing options of :meth:`Engine.vectorize`, passed along as keywords."""

    simplify_px: float
    min_area_m2: float
    min_score: float
    outline: str


Segmented = tuple[tuple[InstanceResult, ...], np.ndarray | None]
"""A tile's instances (with scores) and their (N, H, W) masks; None where SAM was not called."""


@dataclass(frozen=True, eq=False)
class Inference:
    """The models' answer for one tile before vectorizing: status, union mask (H, W bool, nodata
    False), instance prompts (with their scores), each instance's own mask (N, H, W bool, nodata
    False; None where no SAM call was made), reasoning and the raw answer."""

    tile: Tile
    question: str
    status: ResultStatus
    mask: np.ndarray
    instances: tuple[InstanceResult, ...] = ()
    instance_masks: np.ndarray | None = None
    reasoning: str = ""
    raw_answer: str = ""
    message: str = ""
    new_tokens: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)
    used_lvlm: bool = True

    @classmethod
    def no_data(cls, tile: Tile, question: str, timings_s: dict[str, float] | None = None) -> Inference:
        mask = np.zeros((tile.height, tile.width), dtype=bool)
        return cls(tile, question, ResultStatus.NO_DATA, mask, message=NO_DATA_MESSAGE, timings_s=timings_s or {})


def scored_mask(inference: Inference, min_score: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The union mask of the instances scored at least ``min_score``, and the instance masks with
    the others emptied (so no polygon is credited to them). Refuses a minimum score when the
    segmenter gave no scores (NaN)."""
    masks = inference.instance_masks
    if min_score <= 0 or masks is None:
        return inference.mask, masks
    scores = np.array([i.score for i in inference.instances], dtype=np.float64)
    if np.isnan(scores).any():
        raise InputError(
            f"{MIN_SCORE.name} needs mask scores, and this segmenter predicts none: drop the minimum score"
        )
    kept = masks & (scores >= min_score)[:, None, None]
    return union_of(kept, inference.tile), kept


def check_vector_options(
    simplify_px: float,
    min_area_m2: float,
    crs: CRS | None,
    *,
    min_score: float = MIN_SCORE.default,
    outline: str = "pixel",
) -> None:
    """Refuse options out of their limits (:mod:`think2seg.options`), an unknown outline, and a
    minimum area in pixel coordinates."""
    check_outline(outline)
    SIMPLIFY_PX.check(simplify_px)
    MIN_AREA_M2.check(min_area_m2)
    MIN_SCORE.check(min_score)
    check_min_area(min_area_m2, crs)
