"""Per-instance and per-polygon scores (SAM's predicted IoU) and the minimum score, end to end."""

import json
import math

import geopandas as gpd
import numpy as np
import pyogrio
import pytest

from think2seg.engine import Engine
from think2seg.errors import InputError
from think2seg.geo.vectorize import pixel_polygons, polygon_owners
from think2seg.output.geojson import to_feature_collection
from think2seg.output.gpkg import write_gpkg

from conftest import BoxSegmenter, FixedPrompter, ScoredBoxSegmenter
from rasters import UTM_TRANSFORM

# Three instances on an 84x84 tile (840 view / 10): two separate boxes and one overlapping the first.
THREE = (
    '<answer>[{"bbox_2d": [0, 0, 300, 300], "positive_points": [[10, 10], [20, 20]]},'
    ' {"bbox_2d": [500, 500, 800, 800], "positive_points": [[600, 600], [700, 700]]},'
    ' {"bbox_2d": [200, 200, 360, 360], "positive_points": [[250, 250], [300, 300]]}]</answer>'
)


def segment(segmenter, *, answer=THREE, **options):
    engine = Engine(FixedPrompter(answer), segmenter)
    pixels = np.full((84, 84, 3), 120, np.uint8)
    return engine.segment_array(pixels, "segment the roofs", transform=UTM_TRANSFORM, crs=32633, **options)


def test_every_instance_and_polygon_carries_the_score_of_the_instance_that_made_it():
    result = segment(ScoredBoxSegmenter((0.9, 0.4, 0.7)))
    assert [i.score for i in result.instances] == pytest.approx([0.9, 0.4, 0.7])
    polygons = result.polygons.sort_values("area_m2", ascending=False)
    # instance 0 (30x30 px) and 2 (16x16, 10x10 of it inside 0) union into one polygon owned by 0
    assert polygons["instance"].tolist() == [0, 1]
    assert polygons["score"].tolist() == pytest.approx([0.9, 0.4])


def test_min_score_leaves_weak_instances_out_of_mask_and_polygons():
    result = segment(ScoredBoxSegmenter((0.9, 0.4, 0.7)), min_score=0.5)
    assert len(result.instances) == 3  # kept with their scores: the prompt layers show what was left out
    assert result.polygons["instance"].tolist() == [0]
    assert result.mask.sum() == 30 * 30 + 16 * 16 - 10 * 10  # instances 0 and 2 only
    everything = segment(ScoredBoxSegmenter((0.9, 0.4, 0.7)))
    assert everything.mask.sum() == result.mask.sum() + 30 * 30


def test_a_polygon_made_mostly_by_a_later_instance_is_credited_to_it():
    # instance 0 is a 10x10 px box inside the corner of instance 1's 40x40: one polygon, mostly 1's
    answer = (
        '<answer>[{"bbox_2d": [0, 0, 100, 100], "positive_points": [[10, 10], [20, 20]]},'
        ' {"bbox_2d": [50, 50, 450, 450], "positive_points": [[100, 100], [200, 200]]}]</answer>'
    )
    result = segment(ScoredBoxSegmenter((0.3, 0.8)), answer=answer)
    (instance,) = result.polygons["instance"]
    assert instance == 1 and result.polygons["score"].iloc[0] == pytest.approx(0.8)


def test_a_segmenter_without_scores_gives_unknown_scores_and_refuses_a_minimum():
    result = segment(BoxSegmenter())
    assert all(math.isnan(i.score) for i in result.instances)
    assert result.polygons["score"].isna().all() and sorted(result.polygons["instance"]) == [0, 1]
    with pytest.raises(InputError, match="predicts none"):
        segment(BoxSegmenter(), min_score=0.5)
    with pytest.raises(InputError, match="min_score must be a number from 0 to 1"):
        segment(ScoredBoxSegmenter(), min_score=1.5)


def test_scores_reach_the_geopackage_and_the_geojson(tmp_path):
    result = segment(ScoredBoxSegmenter((0.9, 0.4, 0.7)))
    write_gpkg(result, tmp_path / "out.gpkg")
    segments = gpd.read_file(tmp_path / "out.gpkg", layer="segments").sort_values("area_m2", ascending=False)
    assert segments["score"].tolist() == pytest.approx([0.9, 0.4]) and segments["instance"].tolist() == [0, 1]
    boxes = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="prompt_boxes")
    assert boxes["score"].tolist() == pytest.approx([0.9, 0.4, 0.7])
    points = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="prompt_points")
    assert points["score"].tolist() == pytest.approx([0.9, 0.9, 0.4, 0.4, 0.7, 0.7])
    collection = json.loads(json.dumps(to_feature_collection(segment(BoxSegmenter()))))  # NaN is not JSON
    assert {f["properties"]["score"] for f in collection["features"]} == {None}
    scored = to_feature_collection(result)
    assert sorted(f["properties"]["score"] for f in scored["features"]) == pytest.approx([0.4, 0.9])
    assert sorted(f["properties"]["score"] for f in scored["prompts"]["features"])[0] == pytest.approx(0.4)


def test_owners_follow_pixels_with_an_offset_grid():
    mask = np.zeros((20, 30), bool)
    mask[2:8, 3:9] = True
    mask[12:18, 20:28] = True
    instances = np.stack([mask & (np.arange(30) < 15)[None, :], mask & (np.arange(30) >= 15)[None, :]])
    origin = (100, 200)
    polygons = pixel_polygons(mask, origin_px=origin)
    owners = polygon_owners(polygons, instances, mask.shape, origin_px=origin)
    by_x = sorted(zip([p.bounds[0] for p in polygons], owners))
    assert [owner for _, owner in by_x] == [0, 1]
    assert polygon_owners(polygons, None, mask.shape).tolist() == [-1, -1]
