"""The paper's mask-only reward: ``2 × IoU + 1 × valid JSON + 1 × format`` per generated answer.

The IoU is that of the mask the frozen SAM makes from the answer's prompts, computed through the
same parse → scale → segment code as inference (:func:`~think2seg.instances.answer_instances`,
:func:`~think2seg.instances.union_mask`) on the sample's image at its own resolution, against the
sample's ground truth, with the benchmark's rules (:func:`~think2seg.eval.metrics.score`): an
unparseable answer scores 0, an empty answer on an empty target scores 1. SAM's image embedding is
computed once per sample and reused for every generation of its group.

:class:`MaskReward` is a plain callable (not an ``nn.Module``, which TRL would take for a reward
model) with TRL's reward-function signature: it receives the generations and the dataset's
``sample_id`` column.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine

from think2seg.eval.datasets import Sample
from think2seg.eval.metrics import score
from think2seg.eval.predict import Loaded, load
from think2seg.geo.arrays import tile_from_array
from think2seg.instances import answer_instances, union_mask
from think2seg.models.base import Segmenter
from think2seg.think2seg_rs.answer import AnswerStatus
from think2seg.think2seg_rs.rewards import format_valid, json_valid
from think2seg.tile import Tile

IOU_WEIGHT, JSON_WEIGHT, FORMAT_WEIGHT = 2.0, 1.0, 1.0
MAX_REWARD = IOU_WEIGHT + JSON_WEIGHT + FORMAT_WEIGHT
EMBEDDINGS_KEPT = 64
"""Samples whose SAM embedding stays in memory: a few generation batches' worth."""


@dataclass(frozen=True)
class RewardTerms:
    """One answer's reward and its parts: ``iou`` in [0, 1], the two answer checks."""

    iou: float
    json_valid: bool
    format_valid: bool

    @property
    def total(self) -> float:
        return IOU_WEIGHT * self.iou + JSON_WEIGHT * self.json_valid + FORMAT_WEIGHT * self.format_valid


@dataclass(frozen=True)
class Prepared:
    """A sample ready for scoring: its image as a tile (pixel coordinates), ground truth, embedding."""

    tile: Tile
    target: np.ndarray
    embedding: Any


def answer_reward(text: str, prepared: Prepared, segmenter: Segmenter) -> RewardTerms:
    """The reward terms of one generated answer ``text`` (the model's whole output) on a sample."""
    parsed, instances = answer_instances(text, prepared.tile)
    failed = parsed.status is AnswerStatus.UNPARSEABLE
    mask = union_mask(segmenter, prepared.embedding, instances, prepared.tile) if not failed else None
    if mask is None:
        mask = np.zeros_like(prepared.target, dtype=bool)
    iou = score("", mask, prepared.target, parse_failed=failed).iou
    return RewardTerms(iou=iou, json_valid=json_valid(text), format_valid=format_valid(text))


def loaded_tile(loaded: Loaded) -> Tile:
    """A loaded sample's image as a tile in pixel coordinates, as ``think2seg eval``'s native protocol
    makes it (nodata pixels black and invalid)."""
    return tile_from_array(loaded.image, transform=Affine.identity(), crs=None, valid=loaded.valid, pixel_coords=True)


def sample_tile(sample: Sample) -> Tile:
    """:func:`loaded_tile` of a sample read from its files."""
    return loaded_tile(load(sample))


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a conversational list of messages."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message.get("content", "")
        if isinstance(content, list):
            content = "".join(block.get("text", "") for block in content if isinstance(block, dict))
        parts.append(str(content))
    return "".join(parts)


class MaskReward:
    """TRL reward function over ``samples`` (by id) with a frozen ``segmenter``.

    ``on_terms`` receives each call's terms (for logging the parts of the reward). ``encodes``
    counts SAM encodings, so the reuse of embeddings can be checked.
    """

    __name__ = "mask_reward"  # TRL names the reward's log entries after its function's name

    def __init__(
        self,
        samples: Sequence[Sample],
        segmenter: Segmenter,
        *,
        on_terms: Callable[[list[RewardTerms]], None] | None = None,
        kept: int = EMBEDDINGS_KEPT,
    ) -> None:
        self.samples: Mapping[str, Sample] = {s.sample_id: s for s in samples}
        self.segmenter = segmenter
        self.on_terms = on_terms
        self.kept = kept
        self.encodes = 0
        self._prepared: OrderedDict[str, Prepared] = OrderedDict()

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        sample_ids = columns["sample_id"]
        terms = [
            answer_reward(completion_text(completion), self.prepared(str(sample_id)), self.segmenter)
            for completion, sample_id in zip(completions, sample_ids)
        ]
        if self.on_terms is not None:
            self.on_terms(terms)
        return [t.total for t in terms]

    def prepared(self, sample_id: str) -> Prepared:
        """The sample's tile, target and SAM embedding (computed on first use, then kept)."""
        found = self._prepared.get(sample_id)
        if found is not None:
            self._prepared.move_to_end(sample_id)
            return found
        loaded = load(self.samples[sample_id])
        tile = loaded_tile(loaded)
        self.encodes += 1
        prepared = Prepared(tile, loaded.target, self.segmenter.encode(tile.pixels))
        self._prepared[sample_id] = prepared
        while len(self._prepared) > self.kept:
            self._prepared.popitem(last=False)
        return prepared
