"""The work behind POST /v1/segment: infer on the model worker, vectorize here, build the reply."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from rasterio.crs import CRS

from think2seg.geo.overlaps import overlap_totals
from think2seg.inference import Inference, check_vector_options
from think2seg.output.geojson import json_number, to_feature_collection
from think2seg.output.gpkg import class_overlaps_of
from think2seg.output.maskfile import MASK_NODATA
from think2seg.result import SegmentationResult
from think2seg.server.errors import RETRY_AFTER_S, ApiError
from think2seg.server.schemas import SegmentOptions
from think2seg.server.serving import ServingEngine
from think2seg.server.settings import API_VERSION
from think2seg.server.state import ModelState
from think2seg.server.tiles import pixel_prompts
from think2seg.server.worker import Busy
from think2seg.tile import Tile
from think2seg.timing import StageTimer

TextCallback = Callable[[str], None]
T = TypeVar("T")


def submit(
    state: ModelState,
    tile: Tile,
    options: SegmentOptions,
    prompts_crs: CRS | None,
    timer: StageTimer,
    on_text: TextCallback | None = None,
) -> Future[Any]:
    """Queue the model work for one request (429 when the queue is full): one inference, or one
    per class."""
    engine = state.require_engine()
    check_vector_options(
        options.simplify_px, options.min_area_m2, tile.crs, min_score=options.min_score, outline=options.outline
    )
    if options.classes is not None:  # every class in one model batch (one SAM encoding of the tile)
        questions = list(options.classes.values())
        timers = [StageTimer() for _ in questions]
        return _queue(
            lambda: state.worker.submit(lambda: engine.infer_batch([tile] * len(questions), questions, timers=timers))
        )
    work: Callable[[], Inference]
    if options.prompts is not None:
        prompts = pixel_prompts(options.prompts, tile, prompts_crs)
        work = lambda: engine.infer_prompts(tile, prompts, label="explicit prompts", timer=timer)  # noqa: E731
    elif on_text is not None:  # streamed: alone, since text streams one answer at a time
        question = options.question or ""
        work = lambda: engine.infer(tile, question, on_text=on_text, timer=timer)  # noqa: E731
    else:  # may share a model batch with other waiting questions
        return _queue(lambda: state.worker.submit_grouped(state.questions, (tile, options.question or "", timer)))
    return _queue(lambda: state.worker.submit(work))


def _queue(submit: Callable[[], Future[T]]) -> Future[T]:
    try:
        return submit()
    except Busy as exc:
        raise ApiError(429, "busy", f"the server is busy ({exc}): retry shortly", retry_after_s=RETRY_AFTER_S) from exc


def reply(
    engine: ServingEngine, inference: Inference | list[Inference], options: SegmentOptions, timer: StageTimer
) -> dict[str, Any]:
    """Vectorize the inference (one per class) and build the JSON reply (see schemas.SegmentReply)."""
    inferences = inference if isinstance(inference, list) else [inference]
    names = list(options.classes) if options.classes is not None else [""]
    results = [replace(_vectorize(engine, i, options, timer), class_name=n) for n, i in zip(names, inferences)]
    body = to_feature_collection(results[0]) if len(results) == 1 else _combined(results, timer)
    body["window"] = _window(results[0])
    body["mask"] = _mask(results[0]) if options.include_mask else None
    body["classes"] = [_class(r) for r in results]
    overlaps = class_overlaps_of(results)
    totals = overlap_totals(overlaps) if overlaps is not None else {}
    body["class_overlaps"] = [{"class_a": a, "class_b": b, "area_m2": json_number(m2)} for (a, b), m2 in totals.items()]
    body["api_version"] = API_VERSION
    return body


def _vectorize(
    engine: ServingEngine, inference: Inference, options: SegmentOptions, timer: StageTimer
) -> SegmentationResult:
    return engine.vectorize(
        inference,
        simplify_px=options.simplify_px,
        min_area_m2=options.min_area_m2,
        min_score=options.min_score,
        outline=options.outline,
        timer=timer,
    )


def _combined(results: list[SegmentationResult], timer: StageTimer) -> dict[str, Any]:
    """One collection of several classes' polygons and prompts; the per-class answers are in ``classes``."""
    bodies = [to_feature_collection(r) for r in results]
    body = bodies[0]
    body["features"] = [f for b in bodies for f in b["features"]]
    body["prompts"]["features"] = [f for b in bodies for f in b["prompts"]["features"]]
    ok = [r for r in results if r.status.value == "ok"]
    body.update(
        question="",
        status=(ok[0] if ok else results[0]).status.value,
        message=f"{len(results)} classes: each one's answer is under classes",
        reasoning="",
        raw_answer="",
        total_area_m2=json_number(sum(r.total_area_m2 for r in results)),
        timings_ms={k: round(v * 1000, 3) for k, v in timer.seconds.items()},
    )
    return body


def _class(result: SegmentationResult) -> dict[str, Any]:
    return {
        "name": result.class_name or result.question,
        "question": result.question,
        "status": result.status.value,
        "message": result.message,
        "reasoning": result.reasoning,
        "raw_answer": result.raw_answer,
        "polygons": len(result.polygons),
        "total_area_m2": json_number(result.total_area_m2),
    }


def _window(result: SegmentationResult) -> dict[str, Any]:
    tile = result.tile
    window = tile.window
    return {
        "col_off": int(window.col_off) if window is not None else 0,
        "row_off": int(window.row_off) if window is not None else 0,
        "width": int(window.width) if window is not None else tile.width,
        "height": int(window.height) if window is not None else tile.height,
        "tile_width": tile.width,
        "tile_height": tile.height,
        "scale": list(tile.scale_xy),
        "transform": list(tile.transform)[:6],
        "bounds": list(tile.bounds),
    }


def _mask(result: SegmentationResult) -> dict[str, Any]:
    tile = result.tile
    data = np.where(tile.valid, result.mask.astype(np.uint8), MASK_NODATA).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(data).save(buffer, format="PNG", optimize=True)
    return {
        "png_base64": base64.b64encode(buffer.getvalue()).decode("ascii"),
        "width": tile.width,
        "height": tile.height,
        "transform": list(tile.transform)[:6],
    }
