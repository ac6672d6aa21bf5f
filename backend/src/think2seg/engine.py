"""The engine: one question about one raster window becomes georeferenced polygons.

    tile ──840 view──▶ prompter ──parse──▶ prompts ──scale──▶ segmenter ──union──▶ mask ──▶ polygons

Load the models once (:meth:`Engine.load`), or pass any objects that follow the
:class:`~think2seg.models.base.Prompter` and :class:`~think2seg.models.base.Segmenter` protocols.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
from affine import Affine
from PIL import Image
from rasterio.crs import CRS

from think2seg.classes import ClassQuestions
from think2seg.errors import InputError
from think2seg.geo.arrays import tile_from_array
from think2seg.geo.read import read_tile
from think2seg.geo.vectorize import polygons_frame
from think2seg.inference import (
    Inference,
    Segmented,
    VectorArgs,
    check_vector_options,
    scored_mask,
)
from think2seg.instances import answer_instances, instance_masks, union_of
from think2seg.models.base import Generation, Prompter, Segmenter, encode_many, generate_many
from think2seg.models.device import plan_device
from think2seg.models.qwen import MAX_NEW_TOKENS
from think2seg.models.registry import check_segmenter, load_prompter, load_segmenter
from think2seg.models.weights import DEFAULT_LVLM, DEFAULT_SEGMENTER
from think2seg.options import MAX_SIDE_PX, MIN_AREA_M2, MIN_SCORE, SIMPLIFY_PX
from think2seg.result import InstanceResult, ResultStatus, SegmentationResult
from think2seg.think2seg_rs.answer import AnswerMode, InstancePrompt, ParsedAnswer
from think2seg.think2seg_rs.prompt import VIEW_SIZE_PX, make_view, validate_question
from think2seg.tile import Tile
from think2seg.timing import StageTimer

TextCallback = Callable[[str], None]


@dataclass(frozen=True, eq=False)
class TileAnswer:
    """The prompter's answer for one tile: what it generated, the parsed answer, and the answer's
    instances scaled from the 840 view to the tile's pixels."""

    tile: Tile
    generation: Generation
    parsed: ParsedAnswer
    instances: tuple[InstanceResult, ...]


class Engine:
    """Holds a prompter and a segmenter; segments rasters, arrays and tiles."""

    def __init__(self, prompter: Prompter, segmenter: Segmenter) -> None:
        self.prompter = prompter
        self.segmenter = segmenter

    @classmethod
    def load(
        cls,
        *,
        lvlm: str = DEFAULT_LVLM,
        segmenter: str = DEFAULT_SEGMENTER,
        device: str = "auto",
        max_new_tokens: int = MAX_NEW_TOKENS,
        compile: bool = False,
    ) -> Engine:
        """Load both models (Hub ids are downloaded into the cache on first use); ``compile``: see
        :class:`~think2seg.models.device.DevicePlan`."""
        plan = plan_device(device, compile=compile)
        check_segmenter(segmenter)  # a mistyped --segmenter fails before the LVLM's gigabytes load
        return cls(
            load_prompter(lvlm, device=plan, max_new_tokens=max_new_tokens),
            load_segmenter(segmenter, device=plan),
        )

    def segment_raster(
        self,
        path: str | os.PathLike[str],
        question: str,
        *,
        bounds: Sequence[float] | None = None,
        max_side_px: int = MAX_SIDE_PX.default,
        pixel_coords: bool = False,
        simplify_px: float = SIMPLIFY_PX.default,
        min_area_m2: float = MIN_AREA_M2.default,
        min_score: float = MIN_SCORE.default,
        outline: str = "pixel",
        on_text: TextCallback | None = None,
    ) -> SegmentationResult:
        """Segment a window of a raster file: ``bounds`` (minx, miny, maxx, maxy, raster CRS) or all of it."""
        MAX_SIDE_PX.check(max_side_px)

        def read() -> Tile:
            return read_tile(path, bounds=bounds, max_side_px=max_side_px, pixel_coords=pixel_coords)

        vector = VectorArgs(simplify_px=simplify_px, min_area_m2=min_area_m2, min_score=min_score, outline=outline)
        return self._read_and_segment(read, question, vector, on_text)

    def segment_array(
        self,
        array: np.ndarray,
        question: str,
        *,
        transform: Affine,
        crs: CRS | str | int | None,
        valid: np.ndarray | None = None,
        nodata: float | None = None,
        pixel_coords: bool = False,
        simplify_px: float = SIMPLIFY_PX.default,
        min_area_m2: float = MIN_AREA_M2.default,
        min_score: float = MIN_SCORE.default,
        outline: str = "pixel",
        on_text: TextCallback | None = None,
    ) -> SegmentationResult:
        """Segment an in-memory (H, W[, C]) image whose pixel corners map to ``crs`` through ``transform``."""

        def read() -> Tile:
            return tile_from_array(
                array, transform=transform, crs=crs, valid=valid, nodata=nodata, pixel_coords=pixel_coords
            )

        vector = VectorArgs(simplify_px=simplify_px, min_area_m2=min_area_m2, min_score=min_score, outline=outline)
        return self._read_and_segment(read, question, vector, on_text)

    def _read_and_segment(
        self,
        read: Callable[[], Tile],
        question: str,
        vector: VectorArgs,
        on_text: TextCallback | None,
    ) -> SegmentationResult:
        """Validate, read (timed), segment; ``vector`` holds the vectorizing options."""
        question = validate_question(question)  # before reading: a bad question costs nothing
        timer = StageTimer()
        with timer.stage("read"):
            tile = read()
        return self.segment_tile(tile, question, on_text=on_text, timer=timer, **vector)

    def segment_tile(
        self,
        tile: Tile,
        question: str,
        *,
        simplify_px: float = SIMPLIFY_PX.default,
        min_area_m2: float = MIN_AREA_M2.default,
        min_score: float = MIN_SCORE.default,
        outline: str = "pixel",
        on_text: TextCallback | None = None,
        timer: StageTimer | None = None,
    ) -> SegmentationResult:
        """Run the models on a prepared tile and vectorize the mask in the tile's CRS.

        An all-nodata tile returns ``no_data`` without a model call.
        """
        check_vector_options(simplify_px, min_area_m2, tile.crs, min_score=min_score, outline=outline)
        timer = timer or StageTimer()
        inference = self.infer(tile, question, on_text=on_text, timer=timer)
        vector = VectorArgs(simplify_px=simplify_px, min_area_m2=min_area_m2, min_score=min_score, outline=outline)
        return self.vectorize(inference, timer=timer, **vector)

    def segment_classes(
        self,
        tile: Tile,
        classes: Sequence[ClassQuestions],
        *,
        timer: StageTimer | None = None,
        **vector: Any,
    ) -> list[SegmentationResult]:
        """Every question of every class about one tile: one LVLM batch, one SAM encoding.

        Returns one result per (class, question), in the order given, each with its ``class_name``;
        ``vector`` takes :meth:`vectorize`'s options. Classes that overlap keep their own polygons:
        nothing is removed where two classes claim the same ground.
        """
        asked = [(c.name, q) for c in classes for q in c.questions]
        if not asked:
            raise InputError("give at least one class with a question")
        check_vector_options(
            vector.get("simplify_px", 0.0),
            vector.get("min_area_m2", 0.0),
            tile.crs,
            min_score=vector.get("min_score", 0.0),
            outline=vector.get("outline", "pixel"),
        )
        timer = timer or StageTimer()
        timers = [StageTimer() for _ in asked]
        inferences = self.infer_batch([tile] * len(asked), [q for _, q in asked], timers=timers)
        results = []
        for (name, _), inference, own in zip(asked, inferences, timers):
            own.merge(timer.seconds)  # the shared read, once in each class's timings
            result = self.vectorize(inference, timer=own, **vector)
            results.append(replace(result, class_name=name))
        return results

    def vectorize(
        self,
        inference: Inference,
        *,
        simplify_px: float = SIMPLIFY_PX.default,
        min_area_m2: float = MIN_AREA_M2.default,
        min_score: float = MIN_SCORE.default,
        outline: str = "pixel",
        timer: StageTimer | None = None,
    ) -> SegmentationResult:
        """Polygons of an inference's mask in its tile's CRS (no model work, any thread).

        Instances scored below ``min_score`` are left out of the mask (they stay in ``instances``,
        with their scores); each polygon carries the ``instance`` that produced it and its ``score``.
        """
        check_vector_options(simplify_px, min_area_m2, inference.tile.crs, min_score=min_score, outline=outline)
        timer = timer or StageTimer()
        tile = inference.tile
        mask, masks = scored_mask(inference, min_score)
        with timer.stage("vectorize"):
            polygons = polygons_frame(
                mask,
                transform=tile.transform,
                crs=tile.crs,
                valid=tile.valid,
                simplify_px=simplify_px,
                min_area_m2=min_area_m2,
                outline=outline,
                instance_masks=masks,
                scores=np.array([i.score for i in inference.instances], dtype=np.float64),
            )
        return SegmentationResult(
            run_id=uuid.uuid4().hex,
            question=inference.question,
            status=inference.status,
            tile=tile,
            mask=mask,
            polygons=polygons,
            instances=inference.instances,
            model=self.prompter.name if inference.used_lvlm else "",
            segmenter=self.segmenter.name,
            created_at=datetime.now(timezone.utc),
            reasoning=inference.reasoning,
            raw_answer=inference.raw_answer,
            message=inference.message,
            new_tokens=inference.new_tokens,
            timings_s={**inference.timings_s, **timer.seconds},
        )

    def infer_prompts(
        self, tile: Tile, prompts: Sequence[InstancePrompt], *, label: str = "", timer: StageTimer | None = None
    ) -> Inference:
        """SAM alone on explicit prompts in tile pixels (the LVLM is skipped), e.g. corrected boxes.

        ``label`` names the request in the result (its ``question``).
        """
        if not prompts:
            raise InputError("give at least one prompt (a box and/or two points)")
        timer = timer or StageTimer()
        if not tile.has_data:
            return Inference.no_data(tile, label)
        sx, sy = VIEW_SIZE_PX / tile.width, VIEW_SIZE_PX / tile.height
        instances = tuple(
            InstanceResult(index=i, view=p.scaled(sx, sy), pixel=p, transform=tile.transform)
            for i, p in enumerate(prompts)
        )
        ((instances, masks),) = self._masks([tile], [instances], [timer])
        return Inference(
            tile,
            label,
            ResultStatus.OK,
            union_of(masks, tile),
            instances,
            masks,
            timings_s=dict(timer.seconds),
            used_lvlm=False,
        )

    def infer(
        self,
        tile: Tile,
        question: str,
        *,
        on_text: TextCallback | None = None,
        view: Image.Image | None = None,
        timer: StageTimer | None = None,
    ) -> Inference:
        """The models' answer and mask for one tile (no vectorizing); see :meth:`infer_batch`."""
        timers = [timer] if timer is not None else None
        views = [view] if view is not None else None
        return self.infer_batch([tile], question, views=views, timers=timers, on_text=on_text)[0]

    def infer_batch(
        self,
        tiles: Sequence[Tile],
        question: str | Sequence[str],
        *,
        views: Sequence[Image.Image | None] | None = None,
        timers: Sequence[StageTimer] | None = None,
        on_text: TextCallback | None = None,
        answer_mode: AnswerMode = "product",
    ) -> list[Inference]:
        """Answer ``question`` (one for all, or one per tile) for several tiles at once: one LVLM
        batch, one SAM encoding batch.

        ``views`` may hold precomputed 840x840 views (None where not); ``timers`` one timer per
        tile, which receives that tile's share of batched stages. ``on_text`` needs a single tile.
        Tiles without data get ``no_data`` and cost no model call. ``answer_mode`` picks the
        answer parser's rules (:func:`~think2seg.think2seg_rs.answer.parse_answer`; ``reference`` for the
        paper's evaluation); SAM gets the prompts as floats either way.
        """
        questions = [question] * len(tiles) if isinstance(question, str) else list(question)
        if len(questions) != len(tiles):
            raise InputError(f"{len(tiles)} tiles but {len(questions)} questions")
        questions = [validate_question(q) for q in questions]
        if on_text is not None and len(tiles) != 1:
            raise InputError("streaming text (on_text) works for one tile at a time")
        timers = list(timers) if timers is not None else [StageTimer() for _ in tiles]
        views = list(views) if views is not None else [None] * len(tiles)
        live = [i for i, tile in enumerate(tiles) if tile.has_data]
        answers: dict[int, TileAnswer] = {}
        masks: dict[int, Segmented] = {}
        if live:
            found = self._answers(
                [tiles[i] for i in live],
                [questions[i] for i in live],
                [views[i] for i in live],
                [timers[i] for i in live],
                on_text,
                answer_mode,
            )
            answers = dict(zip(live, found))
            found_masks = self._masks([a.tile for a in found], [a.instances for a in found], [timers[i] for i in live])
            masks = dict(zip(live, found_masks))
        return [
            _inference(answers[i], questions[i], masks[i], timers[i])
            if i in answers
            else Inference.no_data(tile, questions[i], dict(timers[i].seconds))
            for i, tile in enumerate(tiles)
        ]

    def _answers(
        self,
        tiles: list[Tile],
        questions: list[str],
        views: list[Image.Image | None],
        timers: list[StageTimer],
        on_text: TextCallback | None,
        answer_mode: AnswerMode,
    ) -> list[TileAnswer]:
        ready: list[Image.Image] = []
        made: dict[int, Image.Image] = {}  # a tile asked several questions gets one view
        for tile, view, timer in zip(tiles, views, timers):
            with timer.stage("prepare"):
                if view is None and id(tile) not in made:
                    made[id(tile)] = make_view(tile.pixels)
                ready.append(view if view is not None else made[id(tile)])
        generations = generate_many(self.prompter, ready, questions, on_text=on_text)
        answers = []
        for tile, generation, timer in zip(tiles, generations, timers):
            timer.merge(
                {
                    "prepare": generation.prepare_s,
                    "lvlm_prefill": generation.prefill_s,
                    "lvlm_decode": generation.decode_s,
                }
            )
            with timer.stage("parse"):
                parsed, instances = answer_instances(generation.text, tile, mode=answer_mode)
            answers.append(TileAnswer(tile, generation, parsed, instances))
        return answers

    def _masks(
        self, tiles: list[Tile], instances: list[tuple[InstanceResult, ...]], timers: list[StageTimer]
    ) -> list[Segmented]:
        """Each tile's instances with their scores and masks; one batched SAM encoding for the
        tiles that have instances."""
        segmented: list[Segmented] = [(found, None) for found in instances]
        todo = [i for i, found in enumerate(instances) if found]
        if not todo:
            return segmented
        # One tile asked several questions (classes) is encoded once: SAM's embedding is the image's.
        unique = list({id(tiles[i]): tiles[i] for i in todo}.values())
        start = time.perf_counter()
        encoded = dict(zip(map(id, unique), encode_many(self.segmenter, [tile.pixels for tile in unique])))
        share = (time.perf_counter() - start) / len(todo)
        for index in todo:
            embedding = encoded[id(tiles[index])]
            timers[index].add("sam_encode", share)
            with timers[index].stage("sam_decode"):
                segmented[index] = instance_masks(self.segmenter, embedding, instances[index], tiles[index])
        return segmented


def _inference(answer: TileAnswer, question: str, segmented: Segmented, timer: StageTimer) -> Inference:
    instances, masks = segmented
    return Inference(
        tile=answer.tile,
        question=question,
        status=ResultStatus.from_answer(answer.parsed.status),
        mask=union_of(masks, answer.tile),
        instances=instances,
        instance_masks=masks,
        reasoning=answer.parsed.reasoning,
        raw_answer=answer.parsed.raw_text,
        message=answer.parsed.message,
        new_tokens=answer.generation.new_tokens,
        timings_s=dict(timer.seconds),
    )
