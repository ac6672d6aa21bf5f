"""The engine: one question about one raster window becomes georeferenced polygons.

    tile ──840 view──▶ prompter ──parse──▶ prompts ──scale──▶ segmenter ──union──▶ mask ──▶ polygons

Load the models once (:meth:`Engine.load`), or pass any objects that follow the
:class:`~think2seg.models.base.Prompter` and :class:`~think2seg.models.base.Segmenter` protocols.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from think2seg.answer import InstancePrompt, parse_answer
from think2seg.errors import InputError
from think2seg.geo.arrays import tile_from_array
from think2seg.geo.read import DEFAULT_MAX_SIDE_PX, read_tile
from think2seg.geo.vectorize import check_min_area, polygons_frame
from think2seg.models.base import Prompter, Segmenter
from think2seg.models.device import plan_device
from think2seg.models.qwen import MAX_NEW_TOKENS
from think2seg.models.registry import load_prompter, load_segmenter
from think2seg.models.weights import DEFAULT_LVLM, DEFAULT_SEGMENTER
from think2seg.prompt import VIEW_SIZE_PX, make_view, validate_question
from think2seg.result import InstanceResult, ResultStatus, SegmentationResult
from think2seg.tile import Tile
from think2seg.timing import StageTimer

TextCallback = Callable[[str], None]


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
    ) -> Engine:
        """Load both models (Hub ids are downloaded into the cache on first use)."""
        plan = plan_device(device)
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
        max_side_px: int = DEFAULT_MAX_SIDE_PX,
        pixel_coords: bool = False,
        simplify_px: float = 0.0,
        min_area_m2: float = 0.0,
        on_text: TextCallback | None = None,
    ) -> SegmentationResult:
        """Segment a window of a raster file: ``bounds`` (minx, miny, maxx, maxy, raster CRS) or all of it."""
        return self._read_and_segment(
            lambda: read_tile(path, bounds=bounds, max_side_px=max_side_px, pixel_coords=pixel_coords),
            question,
            simplify_px=simplify_px,
            min_area_m2=min_area_m2,
            on_text=on_text,
        )

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
        simplify_px: float = 0.0,
        min_area_m2: float = 0.0,
        on_text: TextCallback | None = None,
    ) -> SegmentationResult:
        """Segment an in-memory (H, W[, C]) image whose pixel corners map to ``crs`` through ``transform``."""
        return self._read_and_segment(
            lambda: tile_from_array(
                array, transform=transform, crs=crs, valid=valid, nodata=nodata, pixel_coords=pixel_coords
            ),
            question,
            simplify_px=simplify_px,
            min_area_m2=min_area_m2,
            on_text=on_text,
        )

    def _read_and_segment(self, read: Callable[[], Tile], question: str, **options: Any) -> SegmentationResult:
        question = validate_question(question)  # before reading: a bad question costs nothing
        timer = StageTimer()
        with timer.stage("read"):
            tile = read()
        return self.segment_tile(tile, question, timer=timer, **options)

    def segment_tile(
        self,
        tile: Tile,
        question: str,
        *,
        simplify_px: float = 0.0,
        min_area_m2: float = 0.0,
        on_text: TextCallback | None = None,
        timer: StageTimer | None = None,
    ) -> SegmentationResult:
        """Run the models on a prepared tile. An all-nodata tile returns ``no_data`` without a model call."""
        question = validate_question(question)
        _check_vector_options(simplify_px, min_area_m2)
        check_min_area(min_area_m2, tile.crs)
        timer = timer or StageTimer()
        if not tile.has_data:
            return self._result(tile, question, timer, status=ResultStatus.NO_DATA, message=NO_DATA_MESSAGE)
        with timer.stage("prepare"):
            view = make_view(tile.pixels)
        generation = self.prompter.generate(view, question, on_text=on_text)
        timer.merge(
            {"prepare": generation.prepare_s, "lvlm_prefill": generation.prefill_s, "lvlm_decode": generation.decode_s}
        )
        with timer.stage("parse"):
            parsed = parse_answer(generation.text)
        instances = _instances(parsed.instances, tile)
        mask = self._mask(tile, instances, timer)
        with timer.stage("vectorize"):
            polygons = polygons_frame(
                mask,
                transform=tile.transform,
                crs=tile.crs,
                valid=tile.valid,
                simplify_px=simplify_px,
                min_area_m2=min_area_m2,
            )
        return self._result(
            tile,
            question,
            timer,
            status=ResultStatus.from_answer(parsed.status),
            message=parsed.message,
            mask=mask,
            polygons=polygons,
            instances=instances,
            reasoning=parsed.reasoning,
            raw_answer=parsed.raw_text,
            new_tokens=generation.new_tokens,
        )

    def _mask(self, tile: Tile, instances: tuple[InstanceResult, ...], timer: StageTimer) -> np.ndarray:
        if not instances:
            return np.zeros((tile.height, tile.width), dtype=bool)
        with timer.stage("sam_encode"):
            embedding = self.segmenter.encode(tile.pixels)
        with timer.stage("sam_decode"):
            masks = self.segmenter.predict(embedding, [i.pixel for i in instances])
        return np.logical_or.reduce(masks, axis=0) & tile.valid

    def _result(self, tile: Tile, question: str, timer: StageTimer, **fields: object) -> SegmentationResult:
        fields.setdefault("mask", np.zeros((tile.height, tile.width), dtype=bool))
        fields.setdefault("polygons", polygons_frame(fields["mask"], transform=tile.transform, crs=tile.crs))
        fields.setdefault("instances", ())
        return SegmentationResult(
            run_id=uuid.uuid4().hex,
            question=question,
            tile=tile,
            model=self.prompter.name,
            segmenter=self.segmenter.name,
            created_at=datetime.now(timezone.utc),
            timings_s=dict(timer.seconds),
            **fields,  # type: ignore[arg-type]
        )


NO_DATA_MESSAGE = "the window holds only nodata pixels, so no model was run: choose bounds over valid data"


def _instances(prompts: Sequence[InstancePrompt], tile: Tile) -> tuple[InstanceResult, ...]:
    """Scale 840-view prompts to tile pixels by (W/840, H/840)."""
    sx, sy = tile.width / VIEW_SIZE_PX, tile.height / VIEW_SIZE_PX
    return tuple(
        InstanceResult(index=i, view=p, pixel=p.scaled(sx, sy), transform=tile.transform)
        for i, p in enumerate(prompts)
    )


def _check_vector_options(simplify_px: float, min_area_m2: float) -> None:
    for name, value in (("simplify_px", simplify_px), ("min_area_m2", min_area_m2)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"{name} must be a number >= 0, got {value!r}")
