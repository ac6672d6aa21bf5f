"""What a training run shows and keeps as it goes: the progress bar, the reward curve, Ctrl-C.

:class:`TrainMonitor` is a Transformers ``TrainerCallback``: a tqdm bar with the reward and steps/s,
one curve point per step (the reward and its three parts, KL, answer length, seconds), and a
Ctrl-C that ends the run cleanly: the step in progress finishes, a checkpoint is saved and the
run stops (a second Ctrl-C stops at once).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import numpy as np
from tqdm import tqdm
from transformers import TrainerCallback

from think2seg.train.reward import RewardTerms


class TrainMonitor(TrainerCallback):
    """Progress bar, reward curve and graceful interruption of one ``GRPOTrainer.train`` call."""

    def __init__(self, *, progress: bool) -> None:
        self.progress = progress
        self.curve: list[dict[str, float]] = []
        self.session_start = 0
        """Where this call's points start in ``curve`` (a resumed run keeps the earlier ones)."""
        self.interrupted = False
        self.stopped_at = 0
        self._terms: list[RewardTerms] = []
        self._bar: tqdm | None = None
        self._started = time.perf_counter()
        self._first_step: int | None = None

    def record_terms(self, terms: list[RewardTerms]) -> None:
        """The reward function's terms of one generation batch (called by :class:`MaskReward`)."""
        self._terms.extend(terms)

    def interrupt(self) -> None:
        self.interrupted = True

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = time.perf_counter()
        self._first_step = state.global_step
        if self.progress:
            self._bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step", desc="train")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not logs or "reward" not in logs:
            return
        point = {
            "step": float(state.global_step),
            "reward": float(logs["reward"]),
            "reward_std": float(logs.get("reward_std", 0.0)),
            "kl": float(logs.get("kl", 0.0)),
            "mean_length": float(logs.get("completions/mean_length", 0.0)),
            "seconds": round(time.perf_counter() - self._started, 3),
            **self._mean_terms(),
        }
        self.curve.append(point)
        if self._bar is not None:
            self._bar.set_postfix(reward=f"{point['reward']:.3f}", iou=f"{point.get('iou', 0.0):.3f}", refresh=False)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self._bar is not None:
            done = state.global_step - (self._first_step or 0)
            elapsed = time.perf_counter() - self._started
            self._bar.set_description(f"train {done / elapsed:.2f} steps/s" if elapsed > 0 else "train")
            self._bar.update(state.global_step - self._bar.n)
        if self.interrupted:
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _mean_terms(self) -> dict[str, float]:
        terms, self._terms = self._terms, []
        if not terms:
            return {}
        return {
            "iou": float(np.mean([t.iou for t in terms])),
            "json_valid": float(np.mean([t.json_valid for t in terms])),
            "format_valid": float(np.mean([t.format_valid for t in terms])),
        }


@contextmanager
def graceful_interrupt(monitor: TrainMonitor) -> Iterator[None]:
    """While training, the first Ctrl-C asks ``monitor`` to save and stop; the second raises
    ``KeyboardInterrupt``. Outside the main thread (where signals cannot be caught) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if monitor.interrupted:
            raise KeyboardInterrupt
        monitor.interrupt()

    previous = signal.signal(signal.SIGINT, on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
