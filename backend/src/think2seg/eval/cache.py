"""The evaluation cache beside the report (``REPORT.cache/``): one of the two run stores.

It holds the run's parameters (``params.json``), one JSON line per finished sample
(``predictions.jsonl``, appended and synced as samples finish) and each predicted mask as a PNG
(``masks/``). It follows the shared resume/overwrite/retry policy of :mod:`think2seg.runs.policy`;
a continued run must also find each cached sample with the same image, mask and question.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from think2seg.errors import InputError
from think2seg.eval.datasets import Sample
from think2seg.eval.metrics import SampleScore, score
from think2seg.eval.predict import Prediction
from think2seg.output.atomic import atomic_output
from think2seg.runs.policy import Continuation
from think2seg.runs.states import TileStatus

CACHE_FORMAT = 2  # 2: unique sample ids; each record names its image and mask
SCORE_FIELDS = ("sample_id", "intersection", "union", "parse_failed", "new_tokens", "seconds", "class_name")


@dataclass(frozen=True)
class EvalParams:
    """What defines the numbers; a resumed run must match it."""

    dataset: str
    root: str
    split: str
    protocol: str
    seed: int
    limit: int | None
    model: str


def cache_folder(report_path: Path) -> Path:
    """Where the per-sample predictions of the run writing ``report_path`` are cached."""
    report_path = Path(report_path).expanduser().absolute()
    return report_path.with_name(report_path.name + ".cache")


class EvalCache:
    """Per-sample results on disk; a :class:`~think2seg.runs.policy.RunStore` whose ``where`` is the report."""

    def __init__(self, report_path: Path, params: EvalParams | None = None) -> None:
        """``params`` may be left out to look at what is there (a new cache needs them)."""
        self.where, self.folder, self.params = report_path, cache_folder(report_path), params
        self.scores: dict[str, SampleScore] = {}
        self.records: dict[str, dict] = {}

    # The RunStore protocol.
    def exists(self) -> bool:
        return self.where.exists() or self.folder.exists()

    def stored_params(self, policy: Continuation) -> Mapping[str, Any] | None:
        if not self.folder.exists():
            return None  # only a report: nothing to continue, the run starts again
        path = self.folder / "params.json"
        if not path.is_file():
            raise InputError(policy.unreadable_message(self.folder, "has no params.json"))
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(policy.unreadable_message(self.folder, f"has an unreadable params.json ({exc})")) from exc
        if not isinstance(stored, dict) or stored.get("cache_format") != CACHE_FORMAT:
            why = "was written by another think2seg version, which named samples differently"
            raise InputError(policy.unreadable_message(self.folder, why))
        return stored

    def complete(self) -> bool:
        return (self.folder / "params.json").is_file()

    def remove(self) -> None:
        if self.folder.exists():
            shutil.rmtree(self.folder)

    def create(self) -> None:
        if self.params is None:
            raise ValueError("a new evaluation cache needs its EvalParams")
        (self.folder / "masks").mkdir(parents=True, exist_ok=True)
        stored = {**asdict(self.params), "cache_format": CACHE_FORMAT}
        (self.folder / "params.json").write_text(json.dumps(stored, indent=2), encoding="utf-8")

    def clean(self, *, retry_failed: bool) -> None:
        """Load the finished samples; lines cut off by an interruption, and with ``retry_failed``
        the failed samples, are dropped from the file and redone."""
        path = self.folder / "predictions.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut off by an interruption: that sample is redone
            if not (retry_failed and record.get("status") == TileStatus.FAILED.value):
                kept.append(record)
                self._remember(record)
        if len(kept) != len(lines):
            with atomic_output(path, overwrite=True) as temporary:
                temporary.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def check(self, samples: Sequence[Sample]) -> None:
        """Refuse cached predictions made for another image, mask or question under the same id."""
        for sample in samples:
            record = self.records.get(sample.sample_id)
            if record is None:
                continue
            for key, now in (("question", sample.question), ("image", str(sample.image)), ("mask", sample.mask_source)):
                if record.get(key) != now:
                    raise InputError(
                        f"the cached run in {self.folder} has another {key} for sample {sample.sample_id} "
                        f"({record.get(key)!r}, now {now!r}): the dataset changed; use --overwrite to start again"
                    )

    def add(self, sample: Sample, prediction: Prediction) -> None:
        result = score(
            sample.sample_id,
            prediction.mask,
            prediction.target,
            parse_failed=prediction.parse_failed,
            new_tokens=prediction.new_tokens,
            seconds=prediction.seconds,
            class_name=sample.class_name,
        )
        Image.fromarray(prediction.mask.astype(np.uint8) * 255).save(self.mask_path(sample.sample_id))
        self._append(
            sample,
            result,
            status=prediction.status,
            raw_answer=prediction.raw_answer,
            prompts=[[p.box_xyxy, p.points_xy] for p in prediction.prompts],
        )

    def add_failure(self, sample: Sample, message: str, target: np.ndarray | None, seconds: float = 0.0) -> None:
        """A sample that could not be read or predicted: IoU 0, its union the target's area when
        the mask could be read (so cIoU counts the missed target), with the error kept."""
        union = int(np.count_nonzero(target)) if target is not None else 0
        result = SampleScore(sample.sample_id, 0, union, False, 0, seconds, sample.class_name, failed=True)
        self._append(sample, result, status=TileStatus.FAILED.value, error=message, raw_answer="", prompts=[])

    def _append(self, sample: Sample, result: SampleScore, **fields: Any) -> None:
        record = {
            **asdict(result),
            "question": sample.question,
            "image": str(sample.image),
            "mask": sample.mask_source,
            **fields,
        }
        with (self.folder / "predictions.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._remember(record)

    def _remember(self, record: dict) -> None:
        self.records[record["sample_id"]] = record
        values = {k: record[k] for k in SCORE_FIELDS}
        self.scores[record["sample_id"]] = SampleScore(**values, failed=bool(record.get("failed", False)))

    def mask_path(self, sample_id: str) -> Path:
        """A file name per id: the id made safe, plus a hash of it, as ``a/b`` and ``a_b`` both give ``a_b``."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sample_id)[-80:]
        digest = hashlib.blake2s(sample_id.encode("utf-8"), digest_size=4).hexdigest()
        return self.folder / "masks" / f"{safe}-{digest}.png"
