"""The `think2seg segment` command with the tiny models, and every bad input of the issue."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
from affine import Affine

from think2seg.cli import main
from think2seg.testing.tiny_lvlm import question_for

from rasters import scene, write_raster

pytestmark = pytest.mark.slow


@pytest.fixture
def run_cli(tiny_lvlm_dir, tiny_sam2_dir, capsys):
    """Run the CLI in-process with the tiny models; returns (exit code, stdout, stderr)."""

    def run(*args: str, models: bool = True):
        extra = ["--lvlm", str(tiny_lvlm_dir), "--segmenter", str(tiny_sam2_dir), "--device", "cpu"] if models else []
        code = main([*map(str, args), *extra])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def raster(tmp_path) -> Path:
    return write_raster(tmp_path / "scene.tif", scene(120, 160))


def assert_refused(code: int, err: str, match: str, folder: Path, before: set[Path]) -> None:
    lines = err.strip().splitlines()
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("think2seg: error: "), err
    assert match in lines[0]
    assert set(folder.iterdir()) == before, "a failed run must leave no output behind"


def test_segment_writes_gpkg_and_prints_summary(run_cli, raster, tmp_path):
    out = tmp_path / "out.gpkg"
    code, stdout, _ = run_cli("segment", raster, question_for("ponds"), "-o", out)
    assert code == 0
    assert "status     ok" in stdout and "instances  2" in stdout and "reasoning  Two ponds" in stdout
    assert "EPSG:32633" in stdout and "sam_encode" in stdout and str(out) in stdout
    assert len(pyogrio.read_dataframe(out, layer="prompt_boxes")) == 2


def test_json_goes_to_stdout_alone(run_cli, raster):
    code, stdout, _ = run_cli("segment", raster, question_for("river"), "--json")
    collection = json.loads(stdout)
    assert code == 0 and collection["type"] == "FeatureCollection"
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert collection["status"] == "ok" and len(collection["prompts"]["features"]) == 3


def test_unparseable_and_empty_answers_exit_zero_with_status(run_cli, raster, tmp_path):
    code, stdout, _ = run_cli("segment", raster, question_for("garbled"), "-o", tmp_path / "g.gpkg")
    assert code == 0 and "status     unparseable" in stdout and "answer     <think>Unsure." in stdout
    assert len(pyogrio.read_dataframe(tmp_path / "g.gpkg", layer="segments")) == 0
    code, stdout, _ = run_cli("segment", raster, question_for("airport"), "-o", tmp_path / "a.gpkg")
    assert code == 0 and "status     no_target" in stdout


def test_existing_output_not_overwritten_without_flag(run_cli, raster, tmp_path):
    out = tmp_path / "out.gpkg"
    out.write_bytes(b"keep me")
    before = set(tmp_path.iterdir())
    code, _, err = run_cli("segment", raster, question_for("river"), "-o", out)
    assert_refused(code, err, "--overwrite", tmp_path, before)
    assert out.read_bytes() == b"keep me"
    code, _, _ = run_cli("segment", raster, question_for("river"), "-o", out, "--overwrite")
    assert code == 0 and pyogrio.list_layers(out)[0][0] == "segments"


@pytest.mark.parametrize("question, match", [("", "empty"), ("x" * 5000, "limit is 1000")])
def test_bad_question(run_cli, raster, tmp_path, question, match):
    before = set(tmp_path.iterdir())
    code, _, err = run_cli("segment", raster, question, "-o", tmp_path / "out.gpkg")
    assert_refused(code, err, match, tmp_path, before)


def test_corrupt_file(run_cli, tmp_path):
    path = write_raster(tmp_path / "broken.tif", scene(256, 256))
    path.write_bytes(path.read_bytes()[:400])
    before = set(tmp_path.iterdir())
    code, _, err = run_cli("segment", path, "segment the river", "-o", tmp_path / "out.gpkg")
    assert_refused(code, err, "damaged", tmp_path, before)


def test_not_a_raster(run_cli, tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b\n1,2\n")
    before = set(tmp_path.iterdir())
    code, _, err = run_cli("segment", path, "segment the river", "-o", tmp_path / "out.gpkg")
    assert_refused(code, err, "not a raster", tmp_path, before)


def test_raster_without_crs_refused_then_accepted_in_pixel_coordinates(run_cli, tmp_path):
    path = write_raster(tmp_path / "nocrs.tif", scene(40, 50), crs=None, transform=Affine.identity())
    before = set(tmp_path.iterdir())
    code, _, err = run_cli("segment", path, question_for("river"), "-o", tmp_path / "out.gpkg")
    assert_refused(code, err, "--pixel-coords", tmp_path, before)
    code, stdout, _ = run_cli("segment", path, question_for("river"), "-o", tmp_path / "out.gpkg", "--pixel-coords")
    assert code == 0 and "pixel coordinates" in stdout
    boxes = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="prompt_boxes")
    assert boxes.crs is None
    assert boxes.total_bounds == pytest.approx([210 * 50 / 840, 180 * 40 / 840, 630 * 50 / 840, 660 * 40 / 840])


def test_bounds_outside_raster(run_cli, raster, tmp_path):
    before = set(tmp_path.iterdir())
    code, _, err = run_cli(
        "segment", raster, "segment the river", "-o", tmp_path / "out.gpkg", "--bounds", "0", "0", "10", "10"
    )
    assert_refused(code, err, "outside", tmp_path, before)


def test_all_nodata_window(run_cli, tmp_path):
    path = write_raster(tmp_path / "empty.tif", np.zeros((3, 30, 30), np.uint8), nodata=0)
    before = set(tmp_path.iterdir())
    code, _, err = run_cli("segment", path, "segment the river", "-o", tmp_path / "out.gpkg")
    assert_refused(code, err, "nodata", tmp_path, before)


@pytest.mark.parametrize("size", [1, 20])
def test_tiny_rasters_are_segmented(run_cli, tmp_path, size):
    path = write_raster(tmp_path / "small.tif", scene(size, size))
    code, stdout, _ = run_cli("segment", path, question_for("river"), "-o", tmp_path / "out.gpkg")
    assert code == 0 and f"window     {size} x {size} px" in stdout


def test_16bit_four_band_raster(run_cli, tmp_path):
    data = np.random.default_rng(3).integers(0, 4000, (4, 64, 64)).astype(np.uint16)
    path = write_raster(tmp_path / "rgbn.tif", data, nodata=0)
    code, stdout, _ = run_cli("segment", path, question_for("ponds"), "-o", tmp_path / "out.gpkg")
    assert code == 0 and "status     ok" in stdout


def test_single_band_float_with_nan(run_cli, tmp_path):
    data = np.random.default_rng(4).random((1, 48, 48)).astype(np.float32)
    data[0, :10] = np.nan
    path = write_raster(tmp_path / "dem.tif", data)
    mask_out = tmp_path / "mask.tif"
    code, _, _ = run_cli("segment", path, question_for("river"), "-o", tmp_path / "out.gpkg", "--mask-out", mask_out)
    import rasterio

    with rasterio.open(mask_out) as src:
        assert (src.read(1)[:10] == src.nodata).all()
    assert code == 0


def test_unwritable_output(run_cli, raster, tmp_path, monkeypatch):
    before = set(tmp_path.iterdir())
    code, _, err = run_cli("segment", raster, "segment the river", "-o", tmp_path / "missing" / "out.gpkg")
    assert_refused(code, err, "does not exist", tmp_path, before)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == tmp_path else real_access(path, mode))
    code, _, err = run_cli("segment", raster, "segment the river", "-o", tmp_path / "out.gpkg")
    assert_refused(code, err, "permission denied", tmp_path, before)


def test_nothing_to_write_refused(run_cli, raster, tmp_path):
    before = set(tmp_path.iterdir())
    code, _, err = run_cli("segment", raster, "segment the river")
    assert_refused(code, err, "nothing to write", tmp_path, before)


def test_console_script_exit_codes(raster, tmp_path, tiny_lvlm_dir, tiny_sam2_dir):
    command = [sys.executable, "-m", "think2seg", "segment", str(raster), "", "-o", str(tmp_path / "o.gpkg")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert (
        done.stderr.strip() == 'think2seg: error: the question is empty: ask what to segment, e.g. "segment the river"'
    )
    done = subprocess.run([sys.executable, "-m", "think2seg", "segment"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "usage:" in done.stderr
