"""`think2seg eval`: dataset layouts, metrics by hand, an oracle, resume, the tiny models end to end."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from think2seg.cli import main
from think2seg.errors import InputError
from think2seg.eval.datasets import load_samples
from think2seg.eval.metrics import score, summarize
from think2seg.eval.predict import Loaded, Prediction, resize_mask
from think2seg.eval.runner import EvalParams, evaluate
from think2seg.testing.tiny_lvlm import question_for

from conftest import tiny_model_flags


def png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def image(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def square_mask(height: int = 48, width: int = 64, box=(10, 8, 30, 28)) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = 255
    return mask


def earthreason(root: Path, count: int = 3) -> Path:
    for index in range(count):
        stem = f"img{index}"
        png(root / "test" / "images" / f"{stem}.png", image(seed=index))
        png(root / "test" / "labels" / f"{stem}.png", square_mask() if index else np.zeros((48, 64), np.uint8))
        qa = {
            "questions": [question_for("ponds"), question_for("river"), question_for("airport")],
            "answer": "...",
            "class": f"c{index % 2}",
        }
        (root / "test" / "QAs").mkdir(parents=True, exist_ok=True)
        (root / "test" / "QAs" / f"{stem}.json").write_text(json.dumps(qa))
    return root


def folder_dataset(root: Path) -> Path:
    entries = []
    for index, trigger in enumerate(["ponds", "river", "airport", "garbled"]):
        png(root / "images" / f"s{index}.png", image(seed=index))
        png(root / "masks" / f"s{index}.png", square_mask() if trigger != "airport" else np.zeros((48, 64), np.uint8))
        entries.append(
            {"image": f"images/s{index}.png", "mask": f"masks/s{index}.png", "question": question_for(trigger)}
        )
    (root / "samples.json").write_text(json.dumps(entries))
    return root


# --- layouts ---------------------------------------------------------------------------------------


def test_earthreason_draws_one_question_per_image_with_the_seed(tmp_path):
    root = earthreason(tmp_path)
    first = [s.question for s in load_samples("earthreason", root, "test", seed=0)]
    assert first == [s.question for s in load_samples("earthreason", root, "test", seed=0)]
    draws = {tuple(s.question for s in load_samples("earthreason", root, "test", seed=seed)) for seed in range(8)}
    assert len(draws) > 1
    samples = load_samples("earthreason", root, "test")
    assert [s.sample_id for s in samples] == ["img0", "img1", "img2"] and samples[1].class_name == "c1"
    assert samples[1].load_mask().sum() == 400 and not samples[0].load_mask().any()


def test_rrsisd_reads_refs_and_coco_masks(tmp_path):
    png(tmp_path / "images" / "rrsisd" / "JPEGImages" / "p1.jpg", image())
    (tmp_path / "rrsisd").mkdir()
    refs = [
        {
            "ref_id": 5,
            "split": "test",
            "image_id": 1,
            "ann_id": 11,
            "sentences": [{"sent": "the storage tank on the left"}, {"sent": "other"}],
        },
        {"ref_id": 6, "split": "test", "image_id": 1, "ann_id": 12, "sentences": [{"sent": "the bridge."}]},
        {"ref_id": 7, "split": "train", "image_id": 1, "ann_id": 11, "sentences": [{"sent": "ignored"}]},
    ]
    (tmp_path / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps(refs))
    polygon = [[10.0, 8.0, 30.0, 8.0, 30.0, 28.0, 10.0, 28.0]]
    rle = {"size": [48, 64], "counts": [48 * 5, 48, 48 * 58]}  # column-major: column 5 filled
    coco = {
        "images": [{"id": 1, "file_name": "p1.jpg", "height": 48, "width": 64}],
        "annotations": [
            {"id": 11, "segmentation": polygon, "category_id": 3},
            {"id": 12, "segmentation": rle, "category_id": 4},
        ],
        "categories": [{"id": 3, "name": "storage tank"}, {"id": 4, "name": "bridge"}],
    }
    (tmp_path / "rrsisd" / "instances.json").write_text(json.dumps(coco))
    tank, bridge = load_samples("rrsisd", tmp_path, "test")
    assert tank.question == "the storage tank on the left." and bridge.question == "the bridge."
    assert tank.class_name == "storage tank" and 380 <= tank.load_mask().sum() <= 441
    assert bridge.load_mask()[:, 5].all() and bridge.load_mask().sum() == 48


def test_refsegrs_and_folder_layouts(tmp_path):
    root = tmp_path / "refsegrs"
    png(root / "images" / "0.tif", image())
    png(root / "masks" / "0.tif", square_mask())
    (root / "output_phrase_test.txt").write_text("0 vehicle in the parking lot\n\n")
    (sample,) = load_samples("refsegrs", root, "test")
    assert sample.question == "vehicle in the parking lot" and sample.load_mask().sum() == 400
    assert len(load_samples("folder", folder_dataset(tmp_path / "mine"), "any")) == 4


@pytest.mark.parametrize(
    ("dataset", "make", "match"),
    [
        ("earthreason", lambda r: None, "QAs is missing"),
        (
            "earthreason",
            lambda r: (r / "test" / "QAs").mkdir(parents=True) or (r / "test" / "QAs" / "a.json").write_text("{oops"),
            "a.json is not valid JSON",
        ),
        (
            "earthreason",
            lambda r: (
                (r / "test" / "QAs").mkdir(parents=True)
                or (r / "test" / "QAs" / "a.json").write_text('{"questions": []}')
            ),
            "no list of questions",
        ),
        ("refsegrs", lambda r: None, "output_phrase_test.txt is missing"),
        ("rrsisd", lambda r: None, r"refs\(unc\)\.p is missing"),
        (
            "folder",
            lambda r: (r / "samples.json").write_text('[{"image": "x.png", "mask": "m.png", "question": "q"}]'),
            "x.png, which does not exist",
        ),
    ],
)
def test_missing_and_malformed_files_are_named(tmp_path, dataset, make, match):
    make(tmp_path)
    with pytest.raises(InputError, match=match):
        load_samples(dataset, tmp_path, "test")


# --- metrics -----------------------------------------------------------------------------------------


def test_metrics_by_hand_with_parse_failures_and_empty_targets():
    target = np.zeros((10, 10), bool)
    target[:4, :5] = True  # 20 px
    half = np.zeros((10, 10), bool)
    half[:4, :] = True  # 40 px: I = 20, U = 40
    empty = np.zeros((10, 10), bool)
    scores = [
        score("exact", target, target, parse_failed=False, class_name="a"),  # IoU 1
        score("half", half, target, parse_failed=False, class_name="a"),  # IoU 0.5
        score("both-empty", empty, empty, parse_failed=False, class_name="b"),  # IoU 1
        score("failed", target, target, parse_failed=True, class_name="b"),  # IoU 0: I = 0, U = 20
        score("missed", empty, target, parse_failed=False, class_name="b"),  # IoU 0: I = 0, U = 20
    ]
    assert [s.iou for s in scores] == [1.0, 0.5, 1.0, 0.0, 0.0]
    summary = summarize(scores)
    assert summary["giou"] == pytest.approx(2.5 / 5)
    assert summary["ciou"] == pytest.approx((20 + 20) / (20 + 40 + 0 + 20 + 20))
    assert summary["precision"] == {"0.5": 0.6, "0.6": 0.4, "0.7": 0.4, "0.8": 0.4, "0.9": 0.4}
    assert summary["parse_failure_rate"] == 0.2
    assert summary["per_class"]["a"]["giou"] == 0.75 and summary["per_class"]["b"]["giou"] == pytest.approx(1 / 3)


class Oracle:
    """Predicts the ground truth itself (at the image's resolution)."""

    name = "oracle"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def predict(self, batch: list[Loaded]) -> list[Prediction]:
        self.seen += [item.sample.sample_id for item in batch]
        return [
            Prediction(mask=item.target, target=item.target, image=item.image, parse_failed=False) for item in batch
        ]


class SmallGpuOracle(Oracle):
    """An oracle that runs out of GPU memory with more than two samples at once."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def predict(self, batch: list[Loaded]) -> list[Prediction]:
        self.sizes.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return super().predict(batch)


def test_an_out_of_memory_batch_is_split_and_auto_is_one_without_an_engine(tmp_path):
    samples = load_samples("earthreason", earthreason(tmp_path / "er", count=7), "test")
    params = EvalParams("earthreason", "er", "test", "native", 0, None, "oracle")
    small = SmallGpuOracle()
    report = evaluate(samples, small, tmp_path / "a.json", params, batch_size=5)
    assert sorted(small.seen) == sorted(s.sample_id for s in samples) and len(small.seen) == 7
    assert small.sizes[:2] == [5, 2] and max(small.sizes[2:]) == 2 and report["metrics"]["giou"] == 1.0
    auto = SmallGpuOracle()
    evaluate(samples, auto, tmp_path / "b.json", params, batch_size="auto")
    assert auto.sizes == [1] * 7


def test_oracle_scores_exactly_one_and_resume_skips_done_samples(tmp_path):
    samples = load_samples("earthreason", earthreason(tmp_path / "er", count=5), "test")
    params = EvalParams("earthreason", "er", "test", "native", 0, None, "oracle")
    oracle = Oracle()
    report = evaluate(samples, oracle, tmp_path / "report.json", params, batch_size=2, visualize=2)
    metrics = report["metrics"]
    assert metrics["giou"] == 1.0 and metrics["ciou"] == 1.0 and set(metrics["precision"].values()) == {1.0}
    assert json.loads((tmp_path / "report.json").read_text())["metrics"]["giou"] == 1.0
    assert sorted(p.name for p in (tmp_path / "report_worst").iterdir()) == sorted(report["visualized"])
    cache = tmp_path / "report.json.cache" / "predictions.jsonl"
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:3]) + '\n{"sample_id": "img3", "intersec')  # cut off mid-line
    again = Oracle()
    with pytest.raises(OSError, match="--resume"):
        evaluate(samples, again, tmp_path / "report.json", params)
    report = evaluate(samples, again, tmp_path / "report.json", params, resume=True)
    assert again.seen == ["img3", "img4"] and report["metrics"]["giou"] == 1.0
    with pytest.raises(InputError, match="protocol"):
        evaluate(
            samples,
            again,
            tmp_path / "report.json",
            EvalParams("earthreason", "er", "test", "paper", 0, None, "oracle"),
            resume=True,
        )


def test_paper_protocol_resizes_ground_truth_with_nearest_neighbour():
    mask = np.zeros((48, 64), bool)
    mask[:24, :32] = True
    resized = resize_mask(mask)
    assert resized.shape == (840, 840) and resized.sum() == 420 * 420


# --- the tiny models ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["paper", "native"])
def test_tiny_models_run_the_whole_path(tmp_path, tiny_lvlm_dir, tiny_sam2_dir, capsys, protocol):
    root = folder_dataset(tmp_path / "data")
    report_path = tmp_path / f"{protocol}.json"
    args = [
        "eval",
        "--dataset",
        "folder",
        "--root",
        str(root),
        "--protocol",
        protocol,
        "--batch-size",
        "2",
        "-o",
        str(report_path),
    ]
    args += [
        "--visualize",
        "2",
        "--quiet",
        *tiny_model_flags(tiny_lvlm_dir, tiny_sam2_dir),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| gIoU | cIoU |" in out and f"protocol {protocol}" in out
    report = json.loads(report_path.read_text())
    metrics = report["metrics"]
    assert metrics["samples"] == 4 and metrics["parse_failure_rate"] == 0.25  # "garbled" is unparseable
    records = [
        json.loads(line)
        for line in (tmp_path / f"{protocol}.json.cache" / "predictions.jsonl").read_text().splitlines()
    ]
    by_question = {r["question"]: r for r in records}
    assert by_question[question_for("airport")]["status"] == "no_target"
    assert by_question[question_for("airport")]["union"] == 0  # empty prediction, empty target: IoU 1
    assert (
        by_question[question_for("ponds")]["new_tokens"] > 10
        and len(by_question[question_for("ponds")]["prompts"]) == 2
    )
    assert sorted(r["sample_id"] for r in records) == [f"images/s{i}.png" for i in range(4)]
    (mask_file,) = (tmp_path / f"{protocol}.json.cache" / "masks").glob("images_s0.png-*.png")
    assert Image.open(mask_file).size == ((840, 840) if protocol == "paper" else (64, 48))
    assert len(list((tmp_path / f"{protocol}_worst").glob("*.png"))) == 2
