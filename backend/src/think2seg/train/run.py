"""``think2seg train`` as a library call: data → eval before → GRPO → RUN/lvlm → eval after → report.

    samples ──▶ greedy eval (base) ──▶ GRPOTrainer (mask-only reward, frozen SAM) ──▶ RUN/lvlm
                                                                                    └─▶ greedy eval (trained) ──▶ report.md

The validation scores are ``think2seg eval``'s (native protocol, greedy, cached and resumable under
``RUN/eval``). Every phase records its outcome in ``RUN/train.json``; ``resume`` continues from the
last checkpoint with the same parameters, the data cut once and the "before" scores kept.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from think2seg.engine import Engine
from think2seg.errors import Think2SegError
from think2seg.eval.datasets import Sample
from think2seg.eval.predict import EnginePredictor
from think2seg.eval.runner import EvalParams, cache_folder, evaluate
from think2seg.models.base import Segmenter
from think2seg.models.device import DevicePlan, plan_device
from think2seg.models.qwen import QwenPrompter
from think2seg.models.registry import check_segmenter, load_segmenter
from think2seg.models.weights import DEFAULT_LVLM, DEFAULT_SEGMENTER, resolve_model_dir
from think2seg.runs.policy import Continuation, Opened, open_run
from think2seg.train.grpo import TrainSettings, grpo_config, load_policy, lora_config, save_model, training_dataset
from think2seg.train.progress import TrainMonitor, graceful_interrupt
from think2seg.train.ranks import Ranks
from think2seg.train.report import write_report
from think2seg.train.reward import MaskReward
from think2seg.train.sources import DatasetData, RasterData, TrainingData, absolute, load_training_data
from think2seg.train.store import TrainStore

log = logging.getLogger(__name__)


class TrainingInterrupted(Think2SegError):
    """Ctrl-C during training: a checkpoint was saved; the message says how to continue."""


@dataclass(frozen=True)
class TrainRequest:
    """One training run into ``run_dir``."""

    run_dir: Path
    source: RasterData | DatasetData
    settings: TrainSettings
    lvlm: str = DEFAULT_LVLM
    segmenter: str = DEFAULT_SEGMENTER
    device: str = "auto"
    val_limit: int | None = None
    examples: int = 4
    resume: bool = False
    overwrite: bool = False
    progress: bool = False

    def params(self) -> dict[str, Any]:
        """What defines the run (a resumed run must match it); the device may change."""
        return {
            "lvlm": self.lvlm,
            "segmenter": self.segmenter,
            "data": absolute(self.source).to_json(),
            "settings": self.settings.to_json(),
            "val_limit": self.val_limit,
        }


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    lvlm_dir: Path
    report: Path
    record: dict[str, Any]


def train(request: TrainRequest, *, segmenter: Segmenter | None = None) -> TrainResult:
    """Run (or continue) a training run; see the module's docstring. ``segmenter`` replaces the
    one ``request`` names (any :class:`~think2seg.models.base.Segmenter`). Raises
    :class:`TrainingInterrupted` after Ctrl-C, once the checkpoint is saved."""
    run_dir = request.run_dir.expanduser().absolute()
    if segmenter is None:
        check_segmenter(request.segmenter)
    ranks = Ranks(request.device)
    plan = plan_device(ranks.device(request.device))
    base_dir = resolve_model_dir(request.lvlm, flag="--lvlm")
    store = TrainStore(run_dir, request.params())
    opened, data = _open(request, store, ranks, plan)
    segmenter = segmenter or load_segmenter(request.segmenter, device=plan)
    val = data.val[: request.val_limit] if request.val_limit else data.val
    if ranks.main:
        before = _validate(request, plan, segmenter, base_dir, val, "before", str(base_dir))
        store.update(status="evaluated the base model", before=before)
    monitor = _train(request, store, data, (plan, ranks), segmenter, base_dir, opened)
    lvlm_dir = run_dir / "lvlm"
    if not ranks.main:
        return TrainResult(run_dir, lvlm_dir, run_dir / "report.md", {})
    _forget_eval(run_dir, "after")
    after = _validate(request, plan, segmenter, lvlm_dir, val, "after", str(lvlm_dir))
    record = store.update(status="done", after=after, curve=monitor.curve)
    report = write_report(run_dir, record, val, examples=request.examples)
    return TrainResult(run_dir, lvlm_dir, report, record)


def _open(request: TrainRequest, store: TrainStore, ranks: Ranks, plan: DevicePlan) -> tuple[Opened, TrainingData]:
    """The main process applies the run policy and cuts the data; the others then read it."""
    source = absolute(request.source)
    if ranks.main:
        opened = open_run(store, store.params, Continuation(resume=request.resume, overwrite=request.overwrite))
        data = load_training_data(source, store.where, progress=request.progress)
        store.update(status="data ready", data=data.info, device=plan.label, processes=ranks.count)
    ranks.wait()
    if not ranks.main:
        opened = Opened.CONTINUED if request.resume else Opened.NEW  # the main process has decided
        data = load_training_data(source, store.where)
    return opened, data


def _train(
    request: TrainRequest,
    store: TrainStore,
    data: TrainingData,
    where: tuple[DevicePlan, Ranks],
    segmenter: Segmenter,
    base_dir: Path,
    opened: Opened,
) -> TrainMonitor:
    from transformers import PrinterCallback
    from trl.trainer.grpo_trainer import GRPOTrainer

    settings = request.settings
    plan, ranks = where
    monitor = TrainMonitor(progress=request.progress and ranks.main)
    checkpoint = store.last_checkpoint() if opened is Opened.CONTINUED else None
    monitor.curve = _curve_until(store, checkpoint)
    monitor.session_start = len(monitor.curve)
    model, processor = load_policy(base_dir, settings, plan)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[MaskReward(data.train, segmenter, on_terms=monitor.record_terms)],
        args=grpo_config(settings, store.where / "checkpoints", plan),
        train_dataset=training_dataset(data.train),
        processing_class=processor,
        peft_config=lora_config(settings),
        callbacks=[monitor],
    )
    trainer.remove_callback(PrinterCallback)  # our bar shows the reward; no dict printed per step
    if ranks.main:
        store.update(status="training", resumed_from=str(checkpoint) if checkpoint else None)
    with graceful_interrupt(monitor):
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if ranks.main:
        store.update(curve=monitor.curve, steps=trainer.state.global_step, step_seconds=_step_seconds(monitor))
    if monitor.interrupted:
        if ranks.main:
            store.update(status="interrupted")
        raise TrainingInterrupted(
            f"interrupted at step {trainer.state.global_step}; the checkpoint is in {store.where / 'checkpoints'}. "
            "Continue with the same command and --resume"
        )
    if ranks.main:
        save_model(trainer, processor, store.where, settings)
        store.update(status="trained")
    ranks.wait()
    del trainer, model
    return monitor


def _validate(
    request: TrainRequest,
    plan: DevicePlan,
    segmenter: Segmenter,
    lvlm_dir: Path,
    samples: list[Sample],
    name: str,
    model_name: str,
) -> dict[str, Any] | None:
    """Greedy validation scores of ``lvlm_dir`` (None without validation samples)."""
    if not samples:
        return None
    prompter = QwenPrompter.load(str(lvlm_dir), device=plan, max_new_tokens=request.settings.max_completion_length)
    report_path = request.run_dir.expanduser().absolute() / "eval" / f"{name}.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    params = EvalParams("train-val", str(samples[0].image.parent), "val", "native", 0, len(samples), model_name)
    report = evaluate(
        samples,
        EnginePredictor(Engine(prompter, segmenter), "native"),
        report_path,
        params,
        resume=True,
        progress=request.progress,
    )
    del prompter
    return {"report": str(report_path), "metrics": report["metrics"]}


def _forget_eval(run_dir: Path, name: str) -> None:
    """Drop an evaluation of a model that was just replaced (its cached answers are stale)."""
    report = run_dir / "eval" / f"{name}.json"
    shutil.rmtree(cache_folder(report), ignore_errors=True)
    report.unlink(missing_ok=True)


def _curve_until(store: TrainStore, checkpoint: Path | None) -> list[dict[str, float]]:
    """The recorded curve up to the checkpoint a resumed run starts from."""
    if checkpoint is None:
        return []
    step = int(checkpoint.name.split("-")[-1])
    record = store.read() or {}
    return [p for p in record.get("curve", []) if p.get("step", 0) <= step]


def _step_seconds(monitor: TrainMonitor) -> float | None:
    """Mean seconds per optimizer step over this call's steps."""
    curve = monitor.curve[monitor.session_start :]
    if len(curve) < 2:
        return None
    steps = curve[-1]["step"] - curve[0]["step"]
    return (curve[-1]["seconds"] - curve[0]["seconds"]) / steps if steps > 0 else None
