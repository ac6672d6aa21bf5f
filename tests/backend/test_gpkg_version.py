"""Every GeoPackage the backend writes is version 1.2, which QGIS 3.22 (GDAL 3.6) opens without a warning."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import numpy as np
import pyogrio
import pytest

from think2seg.batch.options import BatchOptions
from think2seg.batch.runner import run_batch
from think2seg.cli import main
from think2seg.engine import Engine
from think2seg.errors import Cancelled
from think2seg.testing.tiny_lvlm import question_for

from conftest import BoxSegmenter, FixedPrompter, tiny_model_flags
from rasters import scene, write_raster

GPKG_APPLICATION_ID = 0x47504B47  # 'GPKG'
GPKG_1_2 = 10200
WHOLE_VIEW = (
    '<think>All.</think> <answer>[{"bbox_2d": [0, 0, 840, 840], "positive_points": [[10, 10], [20, 20]]}]</answer>'
)
BATCH_LAYERS = {"runs", "tiles", "tile_pieces", "prompt_boxes", "prompt_points", "segments"}


def gpkg_header(path: Path) -> tuple[int, int]:
    """(application_id, user_version) of a GeoPackage: its format and its version (10200 = 1.2.0)."""
    with closing(sqlite3.connect(path)) as connection:
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        user_version = connection.execute("PRAGMA user_version").fetchone()[0]
    return application_id, user_version


@pytest.fixture
def raster(tmp_path) -> Path:
    return write_raster(tmp_path / "scene.tif", scene(200, 260))


@pytest.mark.slow
def test_segment_output_is_geopackage_1_2(tmp_path, raster, tiny_lvlm_dir, tiny_sam2_dir):
    out = tmp_path / "out.gpkg"
    code = main(
        ["segment", str(raster), question_for("ponds"), "-o", str(out), *tiny_model_flags(tiny_lvlm_dir, tiny_sam2_dir)]
    )
    assert code == 0
    assert gpkg_header(out) == (GPKG_APPLICATION_ID, GPKG_1_2)
    assert len(pyogrio.read_dataframe(out, layer="prompt_boxes")) == 2


@pytest.mark.slow
def test_batch_output_is_geopackage_1_2_also_when_resumed(tmp_path, raster, tiny_lvlm_dir, tiny_sam2_dir):
    out = tmp_path / "out.gpkg"
    args = ["batch", str(raster), question_for("river"), "-o", str(out), "--tile-size-px", "128", "--overlap-px", "16"]
    flags = ["--quiet", *tiny_model_flags(tiny_lvlm_dir, tiny_sam2_dir)]
    assert main([*args, *flags]) == 0
    assert gpkg_header(out) == (GPKG_APPLICATION_ID, GPKG_1_2)
    assert {str(name) for name, _ in pyogrio.list_layers(out)} == BATCH_LAYERS
    tiles = len(pyogrio.read_dataframe(out, layer="tiles", read_geometry=False))
    assert main([*args, *flags, "--resume"]) == 0  # nothing left to do: segments written again
    assert gpkg_header(out) == (GPKG_APPLICATION_ID, GPKG_1_2)
    assert len(pyogrio.read_dataframe(out, layer="tiles", read_geometry=False)) == tiles


def test_a_stopped_batch_appended_to_on_resume_stays_1_2(tmp_path, raster):
    out, stop = tmp_path / "out.gpkg", threading.Event()
    options = BatchOptions(tile_size_px=64, overlap_px=0)
    engine = Engine(FixedPrompter(WHOLE_VIEW), BoxSegmenter())

    def progress(update) -> None:
        if update.done == 3:
            stop.set()

    with pytest.raises(Cancelled):
        run_batch(raster, "segment the fields", out, models=engine, options=options, on_progress=progress, stop=stop)
    assert gpkg_header(out) == (GPKG_APPLICATION_ID, GPKG_1_2)
    summary = run_batch(
        raster,
        "segment the fields",
        out,
        models=engine,
        options=BatchOptions(tile_size_px=64, overlap_px=0, resume=True),
    )
    assert summary.tiles_before == 3 and summary.tiles_total == 20
    assert gpkg_header(out) == (GPKG_APPLICATION_ID, GPKG_1_2)
    tiles = pyogrio.read_dataframe(out, layer="tiles", read_geometry=False)
    assert sorted(tiles["tile_id"]) == list(range(20))
    segments = pyogrio.read_dataframe(out, layer="segments")
    assert np.isclose(segments.geometry.area.sum(), 200 * 260 * 0.25)
