"""An answer's instances and their masks: the steps between the LVLM and SAM.

The prompter's text is parsed and its 840-view prompts scaled to the tile's pixels
(:func:`answer_instances`); SAM is called once per instance (:func:`instance_masks`, with its
predicted-IoU score); the answer's mask is their union. Inference (:mod:`think2seg.engine`) and
training's reward (:mod:`think2seg.train.reward`) share these, so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from think2seg.models.base import Segmenter, predict_scored
from think2seg.result import InstanceResult
from think2seg.think2seg_rs.answer import AnswerMode, ParsedAnswer, numeric_prompts, parse_answer
from think2seg.think2seg_rs.prompt import VIEW_SIZE_PX
from think2seg.tile import Tile


def union_of(masks: np.ndarray | None, tile: Tile) -> np.ndarray:
    """The union (H, W bool) of instance masks (N, H, W); empty for None or none."""
    if masks is None or not len(masks):
        return np.zeros((tile.height, tile.width), dtype=bool)
    return np.logical_or.reduce(masks, axis=0)


def answer_instances(
    text: str, tile: Tile, *, mode: AnswerMode = "product"
) -> tuple[ParsedAnswer, tuple[InstanceResult, ...]]:
    """Parse the prompter's whole output ``text`` (``mode``'s rules, values made numeric) and scale
    its 840-view prompts to ``tile``'s pixels by (W/840, H/840): the step between the LVLM and SAM
    that inference and training's reward share."""
    parsed = numeric_prompts(parse_answer(text, mode=mode))
    sx, sy = tile.width / VIEW_SIZE_PX, tile.height / VIEW_SIZE_PX
    instances = tuple(
        InstanceResult(index=i, view=p, pixel=p.scaled(sx, sy), transform=tile.transform)
        for i, p in enumerate(parsed.instances)
    )
    return parsed, instances


def union_mask(segmenter: Segmenter, embedding: Any, instances: Sequence[InstanceResult], tile: Tile) -> np.ndarray:
    """The answer's mask on ``tile`` (H, W bool): the union of one SAM call per instance (its pixel
    prompts) on ``embedding`` (``segmenter.encode`` of ``tile.pixels``), nodata pixels False.
    No instances: an empty mask, without a SAM call."""
    if not instances:
        return np.zeros((tile.height, tile.width), dtype=bool)
    return union_of(instance_masks(segmenter, embedding, instances, tile)[1], tile)


def instance_masks(
    segmenter: Segmenter, embedding: Any, instances: Sequence[InstanceResult], tile: Tile
) -> tuple[tuple[InstanceResult, ...], np.ndarray]:
    """One SAM call per instance on ``embedding``: the instances with their predicted-IoU ``score``
    and their (N, H, W) bool masks on ``tile``, nodata pixels False."""
    masks, scores = predict_scored(segmenter, embedding, [i.pixel for i in instances])
    scored = tuple(replace(instance, score=float(score)) for instance, score in zip(instances, scores))
    return scored, np.asarray(masks, dtype=bool) & tile.valid
