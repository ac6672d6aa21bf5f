"""What the server needs of an engine: :class:`~think2seg.engine.Engine` is one; tests inject others."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from think2seg.models.base import Prompter, Segmenter

if TYPE_CHECKING:
    from think2seg.engine import TextCallback
    from think2seg.inference import Inference
    from think2seg.result import SegmentationResult
    from think2seg.think2seg_rs.answer import InstancePrompt
    from think2seg.tile import Tile
    from think2seg.timing import StageTimer


class ServingEngine(Protocol):
    """The models, answering single questions, batches of them, explicit prompts, and vectorizing."""

    prompter: Prompter
    segmenter: Segmenter

    def infer(
        self, tile: Tile, question: str, *, on_text: TextCallback | None = None, timer: StageTimer | None = None
    ) -> Inference: ...

    def infer_batch(
        self, tiles: Sequence[Tile], question: str | Sequence[str], *, timers: Sequence[StageTimer] | None = None
    ) -> list[Inference]: ...

    def infer_prompts(
        self, tile: Tile, prompts: Sequence[InstancePrompt], *, label: str = "", timer: StageTimer | None = None
    ) -> Inference: ...

    def vectorize(
        self,
        inference: Inference,
        *,
        simplify_px: float = 0.0,
        min_area_m2: float = 0.0,
        min_score: float = 0.0,
        outline: str = "pixel",
        timer: StageTimer | None = None,
    ) -> SegmentationResult: ...
