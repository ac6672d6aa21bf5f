"""The benchmark metrics, exactly as the paper defines them.

Per sample: intersection I and union U of the predicted and true masks. The sample's IoU is I/U;
an empty prediction on an empty target scores 1, a parse failure scores 0 (whatever the target), and
so does a sample that failed (its image could not be read, or the models raised on it).
gIoU is the mean of the per-sample IoUs; cIoU is the sum of intersections over the sum of unions;
Precision@t is the share of samples with IoU >= t.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class SampleScore:
    sample_id: str
    intersection: int
    union: int
    parse_failed: bool
    new_tokens: int = 0
    seconds: float = 0.0
    class_name: str = ""
    failed: bool = False
    """The sample could not be read or predicted (an error, kept in the cache): IoU 0."""

    @property
    def iou(self) -> float:
        if self.parse_failed or self.failed:
            return 0.0
        if self.union == 0:
            return 1.0
        return self.intersection / self.union


def score(
    sample_id: str,
    predicted: np.ndarray,
    target: np.ndarray,
    *,
    parse_failed: bool,
    new_tokens: int = 0,
    seconds: float = 0.0,
    class_name: str = "",
    failed: bool = False,
) -> SampleScore:
    """Score one sample; the masks must have the same shape."""
    if predicted.shape != target.shape:
        raise ValueError(f"{sample_id}: prediction {predicted.shape} and target {target.shape} differ in shape")
    predicted = np.zeros_like(target, dtype=bool) if parse_failed else predicted.astype(bool)
    target = target.astype(bool)
    intersection = int(np.count_nonzero(predicted & target))
    union = int(np.count_nonzero(predicted | target))
    return SampleScore(
        sample_id,
        intersection,
        union,
        parse_failed,
        new_tokens=new_tokens,
        seconds=seconds,
        class_name=class_name,
        failed=failed,
    )


def summarize(scores: Sequence[SampleScore]) -> dict:
    """gIoU, cIoU, Precision@0.5-0.9, parse-failure rate, tokens and time, overall and per class."""
    summary = _metrics(scores)
    classes = defaultdict(list)
    for item in scores:
        if item.class_name:
            classes[item.class_name].append(item)
    summary["per_class"] = {name: _metrics(items) for name, items in sorted(classes.items())}
    return summary


def _metrics(scores: Sequence[SampleScore]) -> dict:
    count = len(scores)
    if not count:
        return {"samples": 0}
    ious = np.array([s.iou for s in scores])
    unions = sum(s.union for s in scores)
    return {
        "samples": count,
        "giou": float(ious.mean()),
        "ciou": float(sum(s.intersection for s in scores) / unions) if unions else 1.0,
        "precision": {f"{t:.1f}": float(np.mean(ious >= t)) for t in THRESHOLDS},
        "parse_failure_rate": sum(s.parse_failed for s in scores) / count,
        "failed": sum(s.failed for s in scores),
        "mean_new_tokens": float(np.mean([s.new_tokens for s in scores])),
        "seconds_per_sample": float(np.mean([s.seconds for s in scores])),
    }
