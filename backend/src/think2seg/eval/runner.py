"""Run an evaluation: predict every sample (cached, resumable), score, report.

Predictions are cached beside the report (:mod:`think2seg.eval.cache`) as samples finish, so an
interrupted run loses at most the batch in progress; ``resume`` continues from the cache, under the
shared run policy (:mod:`think2seg.runs.policy`). Samples go through the models with the shared
micro-batching (:func:`think2seg.runs.push.push`): a sample that cannot be read or predicted is
recorded as a scored failure (IoU 0, its error in the report), never the end of the evaluation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from think2seg._version import __version__
from think2seg.errors import InputError
from think2seg.eval.cache import EvalCache, EvalParams, cache_folder
from think2seg.eval.datasets import Sample
from think2seg.eval.metrics import SampleScore, summarize
from think2seg.eval.predict import Loaded, Predictor, load
from think2seg.eval.report import notes
from think2seg.eval.visualize import save_worst
from think2seg.output.atomic import atomic_output, check_output_path
from think2seg.runs.microbatch import AUTO, BatchSize, BatchSizer, check_batch_size
from think2seg.runs.policy import Continuation, open_run
from think2seg.runs.push import batches, describe, push

__all__ = ["EvalParams", "cache_folder", "check_outputs", "evaluate"]

LISTED_FAILURES = 50


def check_outputs(report_path: Path, policy: Continuation) -> Path:
    """Refuse, before any work, a run that would clobber an earlier one, or that cannot continue it.

    Returns the report's absolute path.
    """
    report_path = check_output_path(report_path, overwrite=True, suffixes=(".json",))
    cache = EvalCache(report_path)  # only to look at what is there
    exists = cache.exists()
    policy.check_start(report_path, exists=exists)
    if exists and policy.continues:
        cache.stored_params(policy)  # a cache that cannot be continued is refused now, not after loading
    return report_path


def evaluate(
    samples: Sequence[Sample],
    predictor: Predictor,
    report_path: Path,
    params: EvalParams,
    *,
    batch_size: BatchSize = AUTO,
    resume: bool = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    visualize: int = 0,
    progress: bool = False,
) -> dict:
    """Predict and score ``samples``; write the JSON report; return it.

    ``batch_size`` ``auto`` sizes batches on the predictor's ``engine`` (1 without one); a batch
    that runs out of GPU memory is split, and the size stays halved. ``retry_failed`` continues the
    cached run and redoes the samples that failed.
    """
    if visualize < 0:
        raise InputError(f"visualize must be 0 or more, not {visualize}")
    report_path = check_output_path(report_path, overwrite=True, suffixes=(".json",))
    cache = EvalCache(report_path, params)
    open_run(cache, asdict(params), Continuation(resume, retry_failed, overwrite))
    cache.check(samples)
    todo = [s for s in samples if s.sample_id not in cache.scores]
    with tqdm(total=len(samples), initial=len(samples) - len(todo), unit="sample", disable=not progress) as bar:
        sizer = _sizer(batch_size, predictor)
        for chunk in batches(todo, sizer):
            _predict(chunk, predictor, sizer, cache)
            bar.update(len(chunk))
    scores = [cache.scores[s.sample_id] for s in samples]
    report = _report(scores, cache, params, visualize)
    if visualize:
        folder = report_path.with_name(report_path.stem + "_worst")
        report["visualized"] = save_worst(samples, scores, cache, folder, visualize)
    with atomic_output(report_path, overwrite=True) as temporary:
        temporary.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _predict(chunk: list[Sample], predictor: Predictor, sizer: BatchSizer, cache: EvalCache) -> None:
    """Read and predict a chunk of samples; each is cached as it ends, failures as scored failures."""
    loaded: list[Loaded] = []
    for sample in chunk:
        start = time.perf_counter()
        try:
            loaded.append(load(sample))
        except Exception as exc:  # the sample fails alone, scored
            cache.add_failure(sample, describe(exc), _target_or_none(sample), time.perf_counter() - start)
    for outcome in push(loaded, predictor.predict, sizer):
        if outcome.result is None:
            cache.add_failure(outcome.item.sample, outcome.message, outcome.item.target, outcome.seconds)
        else:
            cache.add(outcome.item.sample, outcome.result)


def _target_or_none(sample: Sample) -> np.ndarray | None:
    try:
        return sample.load_mask()
    except Exception:  # the mask is what failed: no target area to count
        return None


def _report(scores: list[SampleScore], cache: EvalCache, params: EvalParams, visualize: int) -> dict:
    failed = [s.sample_id for s in scores if s.failed]
    report = {
        **asdict(params),
        "samples": len(scores),
        "think2seg_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "metrics": summarize(scores),
        "worst": [s.sample_id for s in sorted(scores, key=lambda s: (s.iou, s.sample_id))[: max(visualize, 10)]],
        "failed": [{"sample_id": i, "error": cache.records[i].get("error", "")} for i in failed[:LISTED_FAILURES]],
    }
    report["notes"] = notes(report)
    return report


def _sizer(batch_size: BatchSize, predictor: Predictor) -> BatchSizer:
    engine = getattr(predictor, "engine", None)
    if check_batch_size(batch_size) == AUTO and engine is None:
        return BatchSizer(1, requested=AUTO)
    return BatchSizer.plan(batch_size, engine)
