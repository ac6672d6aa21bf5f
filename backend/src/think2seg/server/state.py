"""The models of a server: loaded in the background at start, then shared through the worker."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from think2seg.batch.options import ModelSpec
from think2seg.runs.microbatch import BatchSizer
from think2seg.server.errors import RETRY_AFTER_S, ApiError
from think2seg.server.schemas import ModelStatus
from think2seg.server.serving import ServingEngine
from think2seg.server.settings import ServerSettings
from think2seg.server.worker import Group, ModelWorker
from think2seg.tile import Tile
from think2seg.timing import StageTimer

if TYPE_CHECKING:
    from think2seg.inference import Inference

log = logging.getLogger(__name__)


class ModelState:
    """``loading`` until the engine is ready (or ``error`` with the reason); owns the model worker."""

    def __init__(self, settings: ServerSettings, engine: ServingEngine | None = None) -> None:
        self.settings = settings
        self.worker = ModelWorker(max_waiting=settings.queue_size)
        self.questions = Group("question", self._infer_questions, self._group_sizer)
        self._sizer: BatchSizer | None = None
        self.engine: ServingEngine | None = engine
        self.status: ModelStatus = "ready" if engine is not None else "loading"
        self.message = "" if engine is not None else f"loading {settings.lvlm} and {settings.segmenter}"
        self._ready = threading.Event()
        if engine is not None:
            self._ready.set()

    @property
    def models(self) -> dict[str, str]:
        if self.engine is not None:
            return {"lvlm": self.engine.prompter.name, "segmenter": self.engine.segmenter.name}
        return {"lvlm": self.settings.lvlm, "segmenter": self.settings.segmenter}

    def start_loading(self) -> None:
        if self.engine is None:
            threading.Thread(target=self._load, name="think2seg-model-loader", daemon=True).start()

    def _load(self) -> None:
        spec = ModelSpec(
            self.settings.lvlm,
            self.settings.segmenter,
            self.settings.device,
            self.settings.max_new_tokens,
            self.settings.compile,
        )
        try:
            # Load on the worker thread, where the models will run.
            self.engine = self.worker.submit(spec.load, priority=0).result()
            self.status, self.message = "ready", ""
            log.info("models ready: %s and %s", spec.lvlm, spec.segmenter)
        except Exception as exc:  # reported by /v1/health and every model route
            self.status, self.message = "error", f"{type(exc).__name__}: {exc}"
            log.error("loading the models failed: %s", self.message)
        finally:
            self._ready.set()

    def require_engine(self) -> ServingEngine:
        """The engine, or a 503 saying why there is none yet."""
        if self.status == "loading":
            raise ApiError(
                503,
                "loading",
                f"the models are still loading ({self.message}): retry shortly",
                retry_after_s=RETRY_AFTER_S,
            )
        if self.status == "error" or self.engine is None:
            raise ApiError(503, "model_unavailable", f"the models could not be loaded: {self.message}")
        return self.engine

    def _infer_questions(self, items: list[tuple[Tile, str, StageTimer]]) -> list[Inference]:
        """Several waiting questions (each with its tile and timer) as one model batch."""
        tiles, questions, timers = zip(*items)
        return self.require_engine().infer_batch(list(tiles), list(questions), timers=list(timers))

    def _group_sizer(self) -> BatchSizer:
        """How many waiting questions share a batch (planned once, on the worker, when first needed;
        halved for good after an out-of-memory error)."""
        if self._sizer is None:
            self._sizer = BatchSizer.plan(self.settings.batch_size, self.require_engine())
        return self._sizer

    def wait_engine(self) -> ServingEngine:
        """Block until loading ends; the engine or the 503 of :meth:`require_engine`."""
        self._ready.wait()
        return self.require_engine()
