"""Run an evaluation: predict every sample (cached, resumable), score, report.

The cache beside the report (``REPORT.cache/``) holds the run's parameters, one JSON line per
sample and each predicted mask as a PNG, appended and flushed as samples finish; ``resume``
continues from it, so an interrupted run loses at most the batch in progress. A resumed run must
have the same parameters, and each cached sample the same image, mask and question; otherwise it
is refused rather than mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from think2seg._version import __version__
from think2seg.batching import AUTO, BatchSize, BatchSizer, check_batch_size
from think2seg.errors import InputError, OutputExistsError
from think2seg.eval.datasets import Sample
from think2seg.eval.metrics import SampleScore, score, summarize
from think2seg.eval.predict import Loaded, Prediction, Predictor, load
from think2seg.eval.report import notes
from think2seg.eval.visualize import save_worst
from think2seg.output.atomic import atomic_output, check_output_path


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


CACHE_FORMAT = 2  # 2: unique sample ids; each record names its image and mask


def cache_folder(report_path: Path) -> Path:
    """Where the per-sample predictions of the run writing ``report_path`` are cached."""
    report_path = Path(report_path).expanduser().absolute()
    return report_path.with_name(report_path.name + ".cache")


def check_outputs(report_path: Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Refuse, before any work, a run that would clobber or cannot continue an earlier one.

    Returns the report's absolute path.
    """
    report_path = check_output_path(report_path, overwrite=True, suffixes=(".json",))
    cache = cache_folder(report_path)
    if overwrite:
        return report_path
    if not resume and report_path.exists():
        raise OutputExistsError(
            f"{report_path} exists: pass --resume to continue its run or --overwrite to start again"
        )
    if not resume and cache.exists():
        raise OutputExistsError(f"{cache} holds an earlier run: pass --resume to continue it or --overwrite")
    if resume and cache.exists() and not (cache / "params.json").is_file():
        raise InputError(f"{cache} has no params.json, so it cannot be resumed: pass --overwrite to start again")
    return report_path


def evaluate(
    samples: Sequence[Sample],
    predictor: Predictor,
    report_path: Path,
    params: EvalParams,
    *,
    batch_size: BatchSize = 1,
    resume: bool = False,
    overwrite: bool = False,
    visualize: int = 0,
    progress: bool = False,
) -> dict:
    """Predict and score ``samples``; write the JSON report; return it.

    ``batch_size`` ``auto`` sizes batches on the predictor's ``engine`` (1 without one); a batch
    that runs out of GPU memory is split, and the size stays halved.
    """
    if visualize < 0:
        raise InputError(f"visualize must be 0 or more, not {visualize}")
    report_path = check_outputs(report_path, resume=resume, overwrite=overwrite)
    cache = _Cache(cache_folder(report_path), params, resume=resume, overwrite=overwrite)
    cache.check(samples)
    todo = [s for s in samples if s.sample_id not in cache.scores]
    with tqdm(total=len(samples), initial=len(samples) - len(todo), unit="sample", disable=not progress) as bar:
        sizer = _sizer(batch_size, predictor)
        while todo:
            batch = [load(sample) for sample in todo[: sizer.size]]
            todo = todo[len(batch) :]
            for item, prediction in zip(batch, sizer.run(batch, predictor.predict)):
                cache.add(item, prediction)
                bar.update(1)
    scores = [cache.scores[s.sample_id] for s in samples]
    report = {
        **asdict(params),
        "samples": len(samples),
        "think2seg_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "metrics": summarize(scores),
        "worst": [s.sample_id for s in sorted(scores, key=lambda s: (s.iou, s.sample_id))[: max(visualize, 10)]],
    }
    report["notes"] = notes(report)
    if visualize:
        folder = report_path.with_name(report_path.stem + "_worst")
        report["visualized"] = save_worst(samples, scores, cache, folder, visualize)
    with atomic_output(report_path, overwrite=True) as temporary:
        temporary.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _sizer(batch_size: BatchSize, predictor: Predictor) -> BatchSizer:
    engine = getattr(predictor, "engine", None)
    if check_batch_size(batch_size) == AUTO and engine is None:
        return BatchSizer(1, requested=AUTO)
    return BatchSizer.plan(batch_size, engine)


class _Cache:
    """Per-sample results on disk: params.json, predictions.jsonl and masks/<id>.png."""

    def __init__(self, folder: Path, params: EvalParams, *, resume: bool, overwrite: bool) -> None:
        self.folder, self.params = folder, params
        self.scores: dict[str, SampleScore] = {}
        self.records: dict[str, dict] = {}
        if folder.exists() and overwrite:
            shutil.rmtree(folder)
        if folder.exists() and resume:
            self._load()
        elif folder.exists():
            raise OutputExistsError(f"{folder} holds an earlier run: pass --resume to continue it or --overwrite")
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        stored = {**asdict(params), "cache_format": CACHE_FORMAT}
        (folder / "params.json").write_text(json.dumps(stored, indent=2), encoding="utf-8")

    def _load(self) -> None:
        path = self.folder / "params.json"
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path} cannot be read ({exc}), so the run cannot be resumed: use --overwrite") from exc
        if not isinstance(stored, dict) or stored.get("cache_format") != CACHE_FORMAT:
            raise InputError(
                f"the cached run in {self.folder} was written by another think2seg version, which named samples "
                "differently: use --overwrite to start again"
            )
        changed = [f"{k}: {stored.get(k)!r} -> {v!r}" for k, v in asdict(self.params).items() if stored.get(k) != v]
        if changed:
            raise InputError(
                f"the cached run in {self.folder} used other parameters ({'; '.join(changed)}): use --overwrite"
            )
        lines = (
            (self.folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
            if (self.folder / "predictions.jsonl").exists()
            else []
        )
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut off by an interruption: that sample is redone
            self._remember(record)

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

    def _remember(self, record: dict) -> None:
        self.records[record["sample_id"]] = record
        fields = ("sample_id", "intersection", "union", "parse_failed", "new_tokens", "seconds", "class_name")
        self.scores[record["sample_id"]] = SampleScore(**{k: record[k] for k in fields})

    def add(self, item: Loaded, prediction: Prediction) -> None:
        sample = item.sample
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
        record = {
            **asdict(result),
            "question": sample.question,
            "image": str(sample.image),
            "mask": sample.mask_source,
            "status": prediction.status,
            "raw_answer": prediction.raw_answer,
            "prompts": [[p.box_xyxy, p.points_xy] for p in prediction.prompts],
        }
        with (self.folder / "predictions.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._remember(record)

    def mask_path(self, sample_id: str) -> Path:
        """A file name per id: the id made safe, plus a hash of it, as ``a/b`` and ``a_b`` both give ``a_b``."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sample_id)[-80:]
        digest = hashlib.blake2s(sample_id.encode("utf-8"), digest_size=4).hexdigest()
        return self.folder / "masks" / f"{safe}-{digest}.png"
