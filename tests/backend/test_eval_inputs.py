"""`think2seg eval` inputs: unique sample ids, sizes checked up front, the cache refusing what it cannot resume."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_eval import Oracle, earthreason, image, png, square_mask

import think2seg.cli.evaluate as evaluate_cli
from think2seg.cli import main
from think2seg.errors import InputError, OutputExistsError
from think2seg.eval.datasets import Sample, load_samples
from think2seg.eval.predict import Loaded, Prediction, load
from think2seg.eval.report import markdown
from think2seg.eval.runner import EvalParams, evaluate

PARAMS = EvalParams("folder", "data", "test", "native", 0, None, "oracle")


class YesOracle(Oracle):
    """Predicts the ground truth when the question is "yes", nothing otherwise."""

    def predict(self, batch: list[Loaded]) -> list[Prediction]:
        predictions = super().predict(batch)
        for item, prediction in zip(batch, predictions):
            if item.sample.question != "yes":
                prediction.mask = np.zeros_like(item.target)
        return predictions


class InterruptingOracle(Oracle):
    """Stops the run (as Ctrl-C would) on its second batch."""

    def predict(self, batch: list[Loaded]) -> list[Prediction]:
        if self.seen:
            raise KeyboardInterrupt
        return super().predict(batch)


def shared_images(root: Path) -> Path:
    """Two questions on a/x.png, and images named x.png in a/ and b/, and a_x.png beside a/."""
    for name in ("a/x.png", "b/x.png", "a_x.png"):
        png(root / name, image())
    png(root / "mask.png", square_mask())
    entries = [
        {"image": "a/x.png", "mask": "mask.png", "question": "yes"},
        {"image": "./a/x.png", "mask": "mask.png", "question": "no"},
        {"image": "b/x.png", "mask": "mask.png", "question": "yes"},
        {"image": "a_x.png", "mask": "mask.png", "question": "no"},
    ]
    (root / "samples.json").write_text(json.dumps(entries))
    return root


# --- sample ids ----------------------------------------------------------------------------------------


def test_folder_ids_are_unique_per_image_path_and_question(tmp_path):
    samples = load_samples("folder", shared_images(tmp_path / "data"), "test")
    assert [s.sample_id for s in samples] == ["a/x.png#1", "a/x.png#2", "b/x.png", "a_x.png"]
    report = evaluate(samples, YesOracle(), tmp_path / "r.json", PARAMS)
    assert report["metrics"]["giou"] == 0.5  # IoU 1, 0, 1, 0: no sample's score overwrote another's
    assert len(list((tmp_path / "r.json.cache" / "masks").iterdir())) == 4


def test_a_resumed_run_refuses_cached_samples_that_changed(tmp_path):
    root = shared_images(tmp_path / "data")
    evaluate(load_samples("folder", root, "test"), YesOracle(), tmp_path / "r.json", PARAMS)
    entries = json.loads((root / "samples.json").read_text())
    entries[0]["question"], entries[1]["question"] = "no", "yes"
    (root / "samples.json").write_text(json.dumps(entries))
    with pytest.raises(InputError, match=r"another question for sample a/x\.png#1"):
        evaluate(load_samples("folder", root, "test"), YesOracle(), tmp_path / "r.json", PARAMS, resume=True)


def test_a_cache_from_before_unique_ids_is_refused(tmp_path):
    samples = load_samples("folder", shared_images(tmp_path / "data"), "test")
    evaluate(samples, Oracle(), tmp_path / "r.json", PARAMS)
    params = tmp_path / "r.json.cache" / "params.json"
    old = json.loads(params.read_text())
    del old["cache_format"]
    params.write_text(json.dumps(old))
    with pytest.raises(InputError, match="named samples differently"):
        evaluate(samples, Oracle(), tmp_path / "r.json", PARAMS, resume=True)


# --- sizes and missing files, before any model loads ---------------------------------------------------


def test_folder_mask_of_another_size_is_named_up_front(tmp_path):
    png(tmp_path / "i.png", image())
    png(tmp_path / "m.png", np.zeros((32, 32), np.uint8))
    (tmp_path / "samples.json").write_text(json.dumps([{"image": "i.png", "mask": "m.png", "question": "q"}]))
    with pytest.raises(InputError, match=r"mask .*m\.png is 32x32 px but its image .*i\.png is 64x48 px"):
        load_samples("folder", tmp_path, "test")


def test_earthreason_label_of_another_size_is_named_up_front(tmp_path):
    root = earthreason(tmp_path, count=2)
    png(root / "test" / "labels" / "img1.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError, match=r"labels/img1\.png is 10x10 px but its image .*img1\.png is 64x48"):
        load_samples("earthreason", root, "test")
    assert len(load_samples("earthreason", root, "test", limit=1)) == 1  # only the samples used are checked


def rrsisd(root: Path, height: int = 48) -> Path:
    (root / "rrsisd").mkdir(parents=True)
    refs = [{"ref_id": 1, "split": "test", "image_id": 1, "ann_id": 11, "sentences": [{"sent": "a tank"}]}]
    (root / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps(refs))
    coco = {
        "images": [{"id": 1, "file_name": "p1.jpg", "height": height, "width": 64}],
        "annotations": [{"id": 11, "segmentation": [[1.0, 1.0, 9.0, 1.0, 9.0, 9.0]], "category_id": 1}],
    }
    (root / "rrsisd" / "instances.json").write_text(json.dumps(coco))
    return root


def test_rrsisd_missing_image_and_size_mismatch_are_named_up_front(tmp_path):
    root = rrsisd(tmp_path / "a")
    with pytest.raises(InputError, match=r"the image .*JPEGImages/p1\.jpg \(sample 1\) is missing"):
        load_samples("rrsisd", root, "test")
    png(root / "images" / "rrsisd" / "JPEGImages" / "p1.jpg", image())
    assert len(load_samples("rrsisd", root, "test")) == 1
    root = rrsisd(tmp_path / "b", height=40)
    png(root / "images" / "rrsisd" / "JPEGImages" / "p1.jpg", image())
    with pytest.raises(InputError, match=r"instances\.json \(annotation 11\) is 64x40 px but its image"):
        load_samples("rrsisd", root, "test")


def test_sizes_of_tiffs_pillow_cannot_read_come_from_gdal(tmp_path):
    (tmp_path / "images").mkdir()
    profile = {"driver": "GTiff", "width": 64, "height": 40, "count": 5, "dtype": "float32"}
    with (
        pytest.warns(rasterio.errors.NotGeoreferencedWarning),
        rasterio.open(tmp_path / "images" / "0.tif", "w", **profile) as out,
    ):
        out.write(np.zeros((5, 40, 64), np.float32))
    png(tmp_path / "masks" / "0.tif", square_mask())  # 64x48
    (tmp_path / "output_phrase_test.txt").write_text("0 a car\n")
    with pytest.raises(InputError, match=r"is 64x48 px but its image .*0\.tif is 64x40 px"):
        load_samples("refsegrs", tmp_path, "test")


def test_a_mask_that_decodes_to_another_size_is_an_input_error(tmp_path):
    path = png(tmp_path / "i.png", image())
    sample = Sample("s", path, "q", lambda: np.zeros((5, 5), bool), mask_source="annotation 3")
    with pytest.raises(InputError, match=r"mask annotation 3 is 5x5 px but its image .*i\.png is 64x48 px"):
        load(sample)


# --- refusing early, resuming, Ctrl-C ----------------------------------------------------------------------


def test_a_refused_run_leaves_no_cache_and_a_cache_without_params_is_refused(tmp_path):
    samples = load_samples("folder", shared_images(tmp_path / "data"), "test")
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="--resume"):
        evaluate(samples, Oracle(), tmp_path / "r.json", PARAMS)
    assert not (tmp_path / "r.json.cache").exists()
    (tmp_path / "r.json.cache").mkdir()
    with pytest.raises(InputError, match="no params.json"):
        evaluate(samples, Oracle(), tmp_path / "r.json", PARAMS, resume=True)
    with pytest.raises(InputError, match="visualize"):
        evaluate(samples, Oracle(), tmp_path / "r.json", PARAMS, overwrite=True, visualize=-1)


class FakeSpec:
    def load(self) -> None:
        return None


def cli(root: Path, report: Path, *extra: str) -> list[str]:
    return ["eval", "--dataset", "folder", "--root", str(root), "-o", str(report), "--batch-size", "2", *extra]


def test_cli_refuses_before_loading_models_and_keeps_the_cache_on_ctrl_c(tmp_path, monkeypatch, capsys):
    root = shared_images(tmp_path / "data")
    monkeypatch.setattr(evaluate_cli, "model_spec", lambda args: FakeSpec())
    monkeypatch.setattr(evaluate_cli, "EnginePredictor", lambda engine, protocol: InterruptingOracle())
    assert main(cli(root, tmp_path / "r.json", "--quiet")) == 130
    err = capsys.readouterr().err
    assert "kept in" in err and "r.json.cache" in err and "--resume" in err and "no output" not in err
    assert main(cli(root, tmp_path / "r.json", "--quiet")) == 1  # the cache exists: refused
    assert "--resume" in capsys.readouterr().err
    oracle = Oracle()
    monkeypatch.setattr(evaluate_cli, "EnginePredictor", lambda engine, protocol: oracle)
    assert main(cli(root, tmp_path / "r.json", "--quiet", "--resume")) == 0
    assert oracle.seen == ["b/x.png", "a_x.png"]  # the first batch of two was kept
    monkeypatch.setattr(evaluate_cli, "model_spec", lambda args: pytest.fail("models loaded"))
    assert main(cli(root, tmp_path / "r.json")) == 1  # the report exists: refused before loading
    with pytest.raises(SystemExit):
        main(cli(root, tmp_path / "r2.json", "--visualize", "-1"))
    assert ">= 0" in capsys.readouterr().err


def test_an_empty_per_class_breakdown_is_explained(tmp_path):
    root = earthreason(tmp_path / "er", count=2)
    for qa in (root / "test" / "QAs").iterdir():
        qa.write_text(json.dumps({k: v for k, v in json.loads(qa.read_text()).items() if k != "class"}))
    samples = load_samples("earthreason", root, "test")
    params = EvalParams("earthreason", "er", "test", "native", 0, None, "oracle")
    report = evaluate(samples, Oracle(), tmp_path / "r.json", params)
    assert report["metrics"]["per_class"] == {} and 'a "class" key in each QAs/*.json' in report["notes"][0]
    assert "Note: no per-class results" in markdown(report)
    with_classes = evaluate(
        load_samples("earthreason", earthreason(tmp_path / "c"), "test"), Oracle(), tmp_path / "c.json", params
    )
    assert with_classes["notes"] == []


# --- a bad sample fails alone, scored ------------------------------------------------------------------


class FailingOracle(Oracle):
    """Raises on every batch that holds sample ``bad`` (as a model bug on one input would)."""

    def __init__(self, bad: str) -> None:
        super().__init__()
        self.bad = bad

    def predict(self, batch: list[Loaded]) -> list[Prediction]:
        if any(item.sample.sample_id == self.bad for item in batch):
            raise ValueError("the model choked on this image")
        return super().predict(batch)


def test_a_failing_sample_is_a_scored_failure_and_retry_failed_redoes_only_it(tmp_path):
    samples = load_samples("folder", shared_images(tmp_path / "data"), "test")
    report = evaluate(samples, FailingOracle("b/x.png"), tmp_path / "r.json", PARAMS, batch_size=4)
    metrics = report["metrics"]
    assert metrics["failed"] == 1 and metrics["samples"] == 4 and metrics["giou"] == 0.75  # 1, 1, 0 (failed), 1
    assert metrics["ciou"] < 1.0  # the failed sample's target counts in the union
    assert report["failed"] == [{"sample_id": "b/x.png", "error": "ValueError: the model choked on this image"}]
    assert "1 sample(s) failed" in report["notes"][0] and "--retry-failed" in report["notes"][0]
    assert "Note: 1 sample(s) failed" in markdown(report)
    resumed = Oracle()
    assert evaluate(samples, resumed, tmp_path / "r.json", PARAMS, resume=True)["metrics"]["failed"] == 1
    assert resumed.seen == []  # a plain resume keeps the failure
    retried = Oracle()
    report = evaluate(samples, retried, tmp_path / "r.json", PARAMS, retry_failed=True)
    assert retried.seen == ["b/x.png"] and report["metrics"]["failed"] == 0 and report["metrics"]["giou"] == 1.0


def test_an_unreadable_image_fails_alone(tmp_path):
    root = shared_images(tmp_path / "data")
    samples = load_samples("folder", root, "test")
    (root / "b" / "x.png").write_bytes(b"not a png any more")  # broken after the up-front checks
    report = evaluate(samples, Oracle(), tmp_path / "r.json", PARAMS, batch_size=2)
    assert report["metrics"]["failed"] == 1 and report["failed"][0]["sample_id"] == "b/x.png"
    assert report["metrics"]["giou"] == 0.75
