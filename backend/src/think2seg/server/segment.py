"""The work behind POST /v1/segment: infer on the model worker, vectorize here, build the reply."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np
from PIL import Image
from rasterio.crs import CRS

from think2seg.engine import Inference, check_vector_options
from think2seg.output.geojson import to_feature_collection
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


def submit(
    state: ModelState,
    tile: Tile,
    options: SegmentOptions,
    prompts_crs: CRS | None,
    timer: StageTimer,
    on_text: TextCallback | None = None,
) -> Future[Inference]:
    """Queue the model work for one request (429 when the queue is full)."""
    engine = state.require_engine()
    check_vector_options(options.simplify_px, options.min_area_m2, tile.crs)
    if options.prompts is not None:
        prompts = pixel_prompts(options.prompts, tile, prompts_crs)
        work = lambda: engine.infer_prompts(tile, prompts, label="explicit prompts", timer=timer)  # noqa: E731
    elif on_text is not None:  # streamed: alone, since text streams one answer at a time
        question = options.question or ""
        work = lambda: engine.infer(tile, question, on_text=on_text, timer=timer)  # noqa: E731
    else:  # may share a model batch with other waiting questions
        return _queue(lambda: state.worker.submit_grouped(state.questions, (tile, options.question or "", timer)))
    return _queue(lambda: state.worker.submit(work))


def _queue(submit: Callable[[], Future[Inference]]) -> Future[Inference]:
    try:
        return submit()
    except Busy as exc:
        raise ApiError(429, "busy", f"the server is busy ({exc}): retry shortly", retry_after_s=RETRY_AFTER_S) from exc


def reply(engine: ServingEngine, inference: Inference, options: SegmentOptions, timer: StageTimer) -> dict[str, Any]:
    """Vectorize an inference and build the JSON reply (see schemas.SegmentReply)."""
    result = engine.vectorize(inference, simplify_px=options.simplify_px, min_area_m2=options.min_area_m2, timer=timer)
    body = to_feature_collection(result)
    body["window"] = _window(result)
    body["mask"] = _mask(result) if options.include_mask else None
    body["api_version"] = API_VERSION
    return body


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
