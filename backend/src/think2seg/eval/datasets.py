"""Readers for the public benchmark layouts and a plain folder layout. Each yields :class:`Sample`s.

- ``earthreason``: ``{root}/{split}/images/<stem>.<ext>``, ``{split}/labels/<stem>.png`` and
  ``{split}/QAs/<stem>.json`` with ``questions`` (a list) and ``answer``; one question per image is
  drawn with ``random.Random(seed)`` over the samples in sorted order.
- ``rrsisd``: ``{root}/rrsisd/refs(unc).p`` (refs with ``split``, ``image_id``, ``ann_id`` and
  ``sentences``), ``{root}/rrsisd/instances.json`` (COCO images, annotations, categories) and the
  images in ``{root}/images/rrsisd/JPEGImages/``; the question is the first sentence plus ".".
- ``refsegrs``: ``{root}/output_phrase_{split}.txt`` (lines ``<index> <expression>``), images in
  ``{root}/images/<index>.tif`` and masks in ``{root}/masks/<index>.tif``.
- ``folder``: ``{root}/samples.json``, a list of ``{"image", "mask", "question"}`` (paths relative
  to the root; an optional ``"class"``) for users' own data.

Sample ids are unique and stable, since the cache keys predictions by them: the QA file's stem
(EarthReason), the ``ref_id`` (RRSIS-D), ``<index>-<line>`` (RefSegRS), and the image's path
relative to the root (folder), with ``#1``, ``#2``... when one image has several questions.

Masks are binary: every pixel above 0 is target. A missing or malformed file is an
:class:`~think2seg.errors.InputError` that names it; so is a mask whose size differs from its
image's, found from the files' headers before any model loads.
"""

from __future__ import annotations

import json
import os
import pickle  # nosec B403 - RRSIS-D ships its references as a pickle; read only from the user's dataset folder
import random
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from think2seg.errors import InputError

DATASETS = ("earthreason", "rrsisd", "refsegrs", "folder")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    """One image, its question and a way to load its ground-truth mask (H, W bool)."""

    sample_id: str
    image: Path
    question: str
    load_mask: Callable[[], np.ndarray]
    class_name: str = ""
    mask_source: str = ""  # the mask's file, or where the dataset keeps its annotation
    mask_size: tuple[int, int] | None = None  # (width, height), where the dataset states it


def load_samples(dataset: str, root: Path, split: str, *, seed: int = 0, limit: int | None = None) -> list[Sample]:
    """The first ``limit`` samples of ``split`` in a dataset laid out under ``root``, in a stable order.

    Their images exist and their masks have their images' sizes (checked from the file headers).
    """
    readers = {"earthreason": _earthreason, "rrsisd": _rrsisd, "refsegrs": _refsegrs, "folder": _folder}
    if dataset not in readers:
        raise InputError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    root = Path(root).absolute()
    if not root.is_dir():
        raise InputError(f"the dataset folder {root} does not exist")
    samples = readers[dataset](root, split, seed)
    if not samples:
        raise InputError(f"no {split} samples found for {dataset} under {root}: check --root and --split")
    repeated = [name for name, count in Counter(s.sample_id for s in samples).items() if count > 1]
    if repeated:
        raise InputError(f"{dataset} under {root}: more than one sample has the id {repeated[0]!r}")
    samples = samples[:limit]
    check_sizes(samples)
    return samples


def check_sizes(samples: Sequence[Sample]) -> None:
    """Every image exists and every mask has its image's size; reads headers only."""
    sizes: dict[Path, tuple[int, int]] = {}
    for sample in samples:
        image = _header_size(sample.image, "image", sample.sample_id, sizes)
        if sample.mask_size is None and not sample.mask_source:
            continue
        mask = sample.mask_size or _header_size(Path(sample.mask_source), "mask", sample.sample_id, sizes)
        if mask != image:
            raise InputError(
                f"the mask {sample.mask_source} is {mask[0]}x{mask[1]} px but its image {sample.image} is "
                f"{image[0]}x{image[1]} px: pair each image with its own mask, or resize the mask to the image "
                "(nearest neighbour)"
            )


def _header_size(path: Path, kind: str, sample_id: str, sizes: dict[Path, tuple[int, int]]) -> tuple[int, int]:
    if path not in sizes:
        if not path.is_file():
            raise InputError(f"the {kind} {path} (sample {sample_id}) is missing")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as opened:  # the header only: no pixels decoded
                    sizes[path] = opened.size
        except (OSError, ValueError, Image.DecompressionBombError):
            sizes[path] = _gdal_size(path, kind)
    return sizes[path]


def _gdal_size(path: Path, kind: str) -> tuple[int, int]:
    """(width, height) of a file Pillow cannot open (multi-band or float GeoTIFFs and the like)."""
    import rasterio

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. NotGeoreferencedWarning
            with rasterio.open(path) as dataset:
                return dataset.width, dataset.height
    except rasterio.errors.RasterioError as exc:
        raise InputError(f"cannot read the {kind} {path}: {exc}") from exc


def mask_from_file(path: Path) -> np.ndarray:
    """A binary mask (pixels above 0) from a PNG/TIF/... file."""
    try:
        with Image.open(path) as image:
            data = np.asarray(image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read the mask {path}: {exc}") from exc
    if data.ndim == 3:
        data = data[..., :3].max(axis=-1)
    return data > 0


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path} is missing") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc


def _image_for(folder: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise InputError(f"no image for {stem!r} in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")


def _earthreason(root: Path, split: str, seed: int) -> list[Sample]:
    base = root / split
    qa_folder, labels, images = base / "QAs", base / "labels", base / "images"
    if not qa_folder.is_dir():
        raise InputError(f"{qa_folder} is missing: EarthReason has {split}/images, {split}/labels and {split}/QAs")
    rng = random.Random(seed)
    samples: list[Sample] = []
    for qa_path in sorted(qa_folder.glob("*.json")):
        record = _json(qa_path)
        questions = record.get("questions") if isinstance(record, dict) else None
        if (
            not isinstance(record, dict)
            or not isinstance(questions, list)
            or not questions
            or not all(isinstance(q, str) for q in questions)
        ):
            raise InputError(f"{qa_path} has no list of questions under 'questions'")
        question = rng.choice(questions)
        mask = labels / f"{qa_path.stem}.png"
        if not mask.is_file():
            raise InputError(f"the label {mask} is missing for {qa_path.name}")
        image = _image_for(images, qa_path.stem)
        samples.append(_file_sample(qa_path.stem, image, question, mask, str(record.get("class", ""))))
    return samples


def _rrsisd(root: Path, split: str, seed: int) -> list[Sample]:
    refs_path, instances_path = root / "rrsisd" / "refs(unc).p", root / "rrsisd" / "instances.json"
    images = root / "images" / "rrsisd" / "JPEGImages"
    try:
        with refs_path.open("rb") as handle:
            refs = pickle.load(handle)  # nosec B301 - the dataset's own reference file
    except FileNotFoundError as exc:
        raise InputError(f"{refs_path} is missing: RRSIS-D has rrsisd/refs(unc).p and rrsisd/instances.json") from exc
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise InputError(f"{refs_path} cannot be read: {exc}") from exc
    coco: Any = _json(instances_path)  # any JSON: a wrong shape is a KeyError or TypeError below
    try:
        image_files = {img["id"]: (img["file_name"], img["height"], img["width"]) for img in coco["images"]}
        annotations = {ann["id"]: ann for ann in coco["annotations"]}
        categories = {cat["id"]: cat["name"] for cat in coco.get("categories", [])}
    except (KeyError, TypeError) as exc:
        raise InputError(f"{instances_path} is not a COCO instances file: missing {exc}") from exc
    samples: list[Sample] = []
    for ref in refs:
        if ref.get("split") != split:
            continue
        try:
            file_name, height, width = image_files[ref["image_id"]]
            annotation = annotations[ref["ann_id"]]
            sentence = ref["sentences"][0]["sent"].strip()
        except (KeyError, IndexError, TypeError) as exc:
            raise InputError(f"{refs_path}: reference {ref.get('ref_id')} is malformed ({exc})") from exc
        question = sentence if sentence.endswith(".") else sentence + "."
        samples.append(
            Sample(
                str(ref.get("ref_id", len(samples))),
                images / file_name,
                question,
                _coco_loader(annotation["segmentation"], height, width),
                categories.get(annotation.get("category_id"), ""),
                mask_source=f"{instances_path} (annotation {ref['ann_id']})",
                mask_size=(width, height),
            )
        )
    return sorted(samples, key=lambda s: s.sample_id)


def _refsegrs(root: Path, split: str, seed: int) -> list[Sample]:
    phrases = root / f"output_phrase_{split}.txt"
    if not phrases.is_file():
        raise InputError(f"{phrases} is missing: RefSegRS has output_phrase_{{split}}.txt, images/ and masks/")
    samples = []
    for number, line in enumerate(phrases.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        index, _, expression = line.strip().partition(" ")
        if not expression:
            raise InputError(f"{phrases}:{number} is not '<index> <expression>'")
        mask = root / "masks" / f"{index}.tif"
        if not mask.is_file():
            raise InputError(f"the mask {mask} is missing ({phrases.name} line {number})")
        image = _image_for(root / "images", index)
        samples.append(_file_sample(f"{index}-{number}", image, expression, mask))
    return samples


def _folder(root: Path, split: str, seed: int) -> list[Sample]:
    listing = root / "samples.json"
    records = _json(listing)
    if not isinstance(records, list):
        raise InputError(f"{listing} must hold a list of {{'image', 'mask', 'question'}} objects")
    entries = []
    for number, record in enumerate(records):
        if not isinstance(record, dict) or not all(
            isinstance(record.get(k), str) for k in ("image", "mask", "question")
        ):
            raise InputError(f"{listing}: entry {number} needs text fields image, mask and question")
        image, mask = root / record["image"], root / record["mask"]
        for path in (image, mask):
            if not path.is_file():
                raise InputError(f"{listing}: entry {number} names {path}, which does not exist")
        entries.append((_relative(image, root), image, mask, record))
    questions = Counter(key for key, *_ in entries)
    asked: Counter[str] = Counter()
    samples = []
    for key, image, mask, record in entries:
        asked[key] += 1
        sample_id = f"{key}#{asked[key]}" if questions[key] > 1 else key
        class_name = str(record.get("class", ""))
        samples.append(_file_sample(sample_id, image, record["question"], mask, class_name))
    return samples


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form, so an image has one id however it is spelled."""
    try:
        return Path(os.path.relpath(os.path.normpath(path), root)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(os.path.normpath(path)).as_posix()


def _file_sample(sample_id: str, image: Path, question: str, mask: Path, class_name: str = "") -> Sample:
    """A sample whose mask is a file."""
    return Sample(sample_id, image, question, lambda: mask_from_file(mask), class_name, mask_source=str(mask))


def _coco_loader(segmentation: Any, height: int, width: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        try:
            from pycocotools import mask as coco_mask
        except ImportError as exc:
            raise InputError("RRSIS-D masks need pycocotools: pip install 'think2seg[eval]'") from exc

        if isinstance(segmentation, list):  # polygons
            rles = coco_mask.frPyObjects(segmentation, height, width)
            rle = coco_mask.merge(rles)
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            # the stubs (types-pycocotools) lack this form: an uncompressed RLE, its counts a list
            rle = coco_mask.frPyObjects(segmentation, height, width)  # type: ignore[call-overload]
        else:
            rle = segmentation
        return coco_mask.decode(rle).astype(bool)

    return load
