"""Outlines and output formats through the engine, the batch run and the CLI."""

from __future__ import annotations

import typing

import numpy as np
import pyogrio
import pytest
import shapely
from test_batch import OPTIONS_KW, ThresholdSegmenter, segments

from think2seg.batch.options import BatchOptions
from think2seg.batch.runner import run_batch
from think2seg.cli import main
from think2seg.engine import Engine
from think2seg.errors import InputError
from think2seg.geo.outline import OUTLINES
from think2seg.geo.vectorize import mask_to_polygons
from think2seg.server.schemas import Outline

from conftest import FixedPrompter, tiny_model_flags
from rasters import UTM_TRANSFORM, write_raster

WHOLE = '<answer>[{"bbox_2d": [0, 0, 840, 840], "positive_points": [[10, 10], [20, 20]]}]</answer>'


def building_raster(tmp_path, size=300):
    """A rotated, noisy building (red > 128) on a dark ground: pixel outlines are staircases."""
    yy, xx = np.mgrid[0:size, 0:size]
    u = (xx - size / 2) * np.cos(0.5) + (yy - size / 2) * np.sin(0.5)
    v = -(xx - size / 2) * np.sin(0.5) + (yy - size / 2) * np.cos(0.5)
    mask = (np.abs(u) < 80) & (np.abs(v) < 45)
    red = np.where(mask, 200, 40).astype(np.uint8)
    data = np.stack([red, np.full_like(red, 90), np.full_like(red, 60)])
    return write_raster(tmp_path / "building.tif", data), mask


def test_the_schema_lists_exactly_the_outlines():
    assert typing.get_args(Outline) == OUTLINES


@pytest.mark.parametrize("outline", ["simplify", "smooth", "regularize"])
def test_segment_and_batch_clean_outlines_the_same_way(tmp_path, outline):
    raster, mask = building_raster(tmp_path)
    engine = Engine(FixedPrompter(WHOLE), ThresholdSegmenter())
    result = engine.segment_raster(raster, "segment the building", outline=outline)
    (polygon,) = result.polygons.geometry
    (pixel,) = mask_to_polygons(mask, transform=UTM_TRANSFORM)
    xy = np.asarray(polygon.exterior.coords)
    steps = np.diff(xy, axis=0)
    axis_parallel = np.mean((np.abs(steps[:, 0]) < 1e-9) | (np.abs(steps[:, 1]) < 1e-9))
    assert polygon.is_valid and axis_parallel < 0.1  # the staircase (all edges axis-parallel) is gone
    if outline != "smooth":  # smoothing adds vertices to round corners
        assert len(xy) < len(pixel.exterior.coords) / 4
    assert abs(polygon.area - pixel.area) <= 0.1 * pixel.area
    if outline == "regularize":  # four right-angled corners
        assert len(polygon.exterior.coords) == 5
    options = BatchOptions(**OPTIONS_KW, outline=outline)
    run_batch(raster, "segment the building", tmp_path / f"{outline}.gpkg", models=engine, options=options)
    (stitched,) = segments(tmp_path / f"{outline}.gpkg").geometry
    assert stitched.is_valid and shapely.hausdorff_distance(stitched, polygon) < 3 * 0.5 * 2  # a few pixels


def test_an_unknown_outline_is_refused_everywhere(tmp_path):
    raster, _ = building_raster(tmp_path, size=64)
    engine = Engine(FixedPrompter(WHOLE), ThresholdSegmenter())
    with pytest.raises(InputError, match="outline must be one of pixel, simplify, smooth, regularize"):
        engine.segment_raster(raster, "q", outline="wobbly")
    with pytest.raises(InputError, match="outline must be one of"):
        BatchOptions(outline="wobbly")


@pytest.mark.slow
def test_batch_exports_its_segments_when_the_run_ends(tmp_path, tiny_lvlm_dir, tiny_sam2_dir, capsys):
    raster, _ = building_raster(tmp_path, size=96)
    out, export = tmp_path / "run.gpkg", tmp_path / "segments.shp"
    args = ["batch", str(raster), "segment the river", "-o", str(out), "--export", str(export), "--quiet"]
    code = main([*args, "--tile-size-px", "64", "--overlap-px", "8", *tiny_model_flags(tiny_lvlm_dir, tiny_sam2_dir)])
    stdout = capsys.readouterr().out
    assert code == 0 and f"exported   {export}" in stdout
    assert len(pyogrio.read_dataframe(export)) == len(segments(out))
    assert pyogrio.read_info(export)["driver"] == "ESRI Shapefile"
    code = main([*args, *tiny_model_flags(tiny_lvlm_dir, tiny_sam2_dir)])  # the export exists: refused first
    assert code == 1 and "already exists" in capsys.readouterr().err
