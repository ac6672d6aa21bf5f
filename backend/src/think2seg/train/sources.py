"""Where a training run's samples come from: the analyst's rasters and polygons, or a dataset.

Either way the result is two lists of :class:`~think2seg.eval.datasets.Sample`, training and
validation, read by the same code as ``think2seg eval``: rasters and labels are first cut into a
``folder`` dataset under ``RUN/data`` (:mod:`think2seg.train.tiles`), which a resumed run reads
again instead of cutting anew.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from think2seg.classes import classes_from_questions, load_classes
from think2seg.errors import InputError
from think2seg.eval.datasets import DATASETS, Sample, load_samples
from think2seg.train.labels import read_labels
from think2seg.train.tiles import DataOptions, prepare_dataset

log = logging.getLogger(__name__)

DATA_FOLDER = "data"


@dataclass(frozen=True)
class RasterData:
    """Rasters and label polygons; the questions come from ``questions`` or ``classes_file``."""

    rasters: tuple[Path, ...]
    labels: Path
    questions: tuple[str, ...] = ()
    classes_file: Path | None = None
    class_field: str | None = None
    options: DataOptions = field(default_factory=DataOptions)

    def __post_init__(self) -> None:
        if not self.rasters:
            raise InputError("give at least one raster: --raster A.tif [B.tif ...]")
        if bool(self.questions) == (self.classes_file is not None):
            raise InputError('give either --question "TEXT" (one or more) or --classes FILE, not both and not neither')
        if self.class_field and self.classes_file is None:
            raise InputError("--class-field needs --classes FILE, which maps each class value to its question(s)")

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "rasters",
            "rasters": [str(p) for p in self.rasters],
            "labels": str(self.labels),
            "questions": list(self.questions),
            "classes_file": str(self.classes_file) if self.classes_file else None,
            "class_field": self.class_field,
            "options": asdict(self.options),
        }


@dataclass(frozen=True)
class DatasetData:
    """A dataset ``think2seg eval`` reads; ``folder`` datasets without ``val_root`` hold out
    ``val_fraction`` of their images (all questions of an image on one side)."""

    dataset: str
    root: Path
    train_split: str = "train"
    val_split: str = "val"
    val_root: Path | None = None
    val_fraction: float = 0.2
    limit: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise InputError(f"unknown dataset {self.dataset!r}: use one of {', '.join(DATASETS)}")
        if not 0 <= self.val_fraction < 1:
            raise InputError("--val-fraction must be at least 0 and below 1")

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        return {"kind": "dataset", **{k: str(v) if isinstance(v, Path) else v for k, v in values.items()}}


@dataclass(frozen=True)
class TrainingData:
    train: list[Sample]
    val: list[Sample]
    info: dict[str, Any]


def absolute(source: RasterData | DatasetData) -> RasterData | DatasetData:
    """``source`` with absolute paths, so a resumed run compares like with like."""
    if isinstance(source, RasterData):
        return RasterData(
            tuple(p.expanduser().absolute() for p in source.rasters),
            source.labels.expanduser().absolute(),
            source.questions,
            source.classes_file.expanduser().absolute() if source.classes_file else None,
            source.class_field,
            source.options,
        )
    val_root = source.val_root.expanduser().absolute() if source.val_root else None
    return DatasetData(
        source.dataset,
        source.root.expanduser().absolute(),
        source.train_split,
        source.val_split,
        val_root,
        source.val_fraction,
        source.limit,
        source.seed,
    )


def load_training_data(source: RasterData | DatasetData, run_dir: Path, *, progress: bool = False) -> TrainingData:
    """The training and validation samples; rasters are cut into ``RUN/data`` unless already there."""
    if isinstance(source, DatasetData):
        return _dataset_samples(source)
    data_dir = run_dir / DATA_FOLDER
    info_path = data_dir / "prepared.json"
    if not info_path.is_file():
        shutil.rmtree(data_dir, ignore_errors=True)  # what an interrupted cut left
        classes = load_classes(source.classes_file) if source.classes_file else classes_from_questions(source.questions)
        labels = read_labels(source.labels, class_field=source.class_field, classes=classes)
        prepared = prepare_dataset(source.rasters, labels, data_dir, source.options, progress=progress)
        for note in prepared.notes:
            log.info("%s", note)  # reprojected labels, dropped geometries: said as they happen
        info_path.write_text(json.dumps(prepared.to_json(), indent=2, default=str) + "\n", encoding="utf-8")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    train = load_samples("folder", data_dir / "train", "train")
    val_root = data_dir / "val"
    val = load_samples("folder", val_root, "val") if _has_samples(val_root) else []
    return TrainingData(train, val, info)


def _has_samples(root: Path) -> bool:
    listing = root / "samples.json"
    return listing.is_file() and bool(json.loads(listing.read_text(encoding="utf-8")))


def _dataset_samples(source: DatasetData) -> TrainingData:
    train = load_samples(source.dataset, source.root, source.train_split, seed=source.seed, limit=source.limit)
    if source.val_root is not None:
        val = load_samples(source.dataset, source.val_root, source.val_split, seed=source.seed, limit=source.limit)
    elif source.dataset == "folder":
        train, val = _hold_out(train, source.val_fraction, source.seed)
    else:
        val = load_samples(source.dataset, source.root, source.val_split, seed=source.seed, limit=source.limit)
    overlap = {str(s.image) for s in train} & {str(s.image) for s in val}
    if overlap:
        raise InputError(
            f"{len(overlap)} image(s) are in both the training and the validation samples (e.g. {sorted(overlap)[0]}): "
            "give a validation set of other images"
        )
    info = {"train_samples": len(train), "val_samples": len(val), "dataset": source.dataset}
    return TrainingData(train, val, info)


def _hold_out(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out about ``fraction`` of the images (with all their questions) for validation."""
    images = sorted({str(s.image) for s in samples})
    if fraction == 0:
        return list(samples), []
    if len(images) < 2:
        raise InputError("the folder dataset has one image: give --val-root DIR, or --val-fraction 0")
    count = min(len(images) - 1, max(1, round(fraction * len(images))))
    held = set(random.Random(seed).sample(images, count))
    return [s for s in samples if str(s.image) not in held], [s for s in samples if str(s.image) in held]
