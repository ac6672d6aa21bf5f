import json
import os

import numpy as np
import pyogrio
import pytest
import rasterio

from think2seg.engine import Engine
from think2seg.errors import OutputError, OutputExistsError
from think2seg.output.atomic import check_output_path
from think2seg.output.geojson import to_feature_collection
from think2seg.output.gpkg import LAYERS, write_gpkg
from think2seg.output.maskfile import MASK_NODATA, write_mask_geotiff

from conftest import BoxSegmenter, FixedPrompter
from rasters import UTM_TRANSFORM, scene

TWO = (
    '<think>Two fields.</think> <answer>[{"bbox_2d": [0, 0, 420, 420], "positive_points": [[100, 100], [200, 200]]},'
    ' {"bbox_2d": [500, 500, 800, 800], "positive_points": [[600, 600], [700, 700]]}]</answer>'
)


@pytest.fixture
def result():
    valid = np.ones((84, 168), bool)
    valid[-4:] = False
    engine = Engine(FixedPrompter(TWO), BoxSegmenter())
    pixels = np.moveaxis(scene(84, 168), 0, -1)
    return engine.segment_array(pixels, "segment the fields", transform=UTM_TRANSFORM, crs=32633, valid=valid)


def test_gpkg_layers_attributes_and_crs(tmp_path, result):
    path = tmp_path / "out.gpkg"
    write_gpkg(result, path)
    assert [name for name, _ in pyogrio.list_layers(path)] == list(LAYERS)
    segments = pyogrio.read_dataframe(path, layer="segments")
    assert len(segments) == 2 and segments.crs.to_epsg() == 32633
    for column in ("question", "status", "model", "segmenter", "source", "area_m2", "created_at", "run_id"):
        assert column in segments.columns
    assert set(segments["question"]) == {"segment the fields"} and set(segments["status"]) == {"ok"}
    assert segments["area_m2"].sum() == pytest.approx(result.total_area_m2)
    boxes = pyogrio.read_dataframe(path, layer="prompt_boxes")
    assert boxes["instance"].tolist() == [0, 1] and boxes.crs.to_epsg() == 32633
    assert boxes.geometry.iloc[1].equals_exact(result.instances[1].box_map, 1e-6)
    assert set(boxes["reasoning"]) == {"Two fields."}
    points = pyogrio.read_dataframe(path, layer="prompt_points")
    assert len(points) == 4 and points["label"].tolist() == [1, 1, 1, 1]
    runs = pyogrio.read_dataframe(path, layer="runs")
    assert runs["reasoning"].iloc[0] == "Two fields." and runs["raw_answer"].iloc[0] == TWO
    assert runs["polygon_count"].iloc[0] == 2 and "sam_encode" in json.loads(runs["timings_s"].iloc[0])


def test_existing_output_kept_unless_overwrite(tmp_path, result):
    path = tmp_path / "out.gpkg"
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        write_gpkg(result, path)
    assert path.read_bytes() == b"precious"
    write_gpkg(result, path, overwrite=True)
    assert len(pyogrio.read_dataframe(path, layer="segments")) == 2


def test_failed_write_leaves_nothing_behind(tmp_path, result, monkeypatch):
    calls = []

    def failing(frame, path, layer, **kwargs):
        calls.append(layer)
        if layer == "prompt_points":
            raise OSError("disk full")
        original(frame, path, layer=layer, **kwargs)

    original = pyogrio.write_dataframe
    monkeypatch.setattr(pyogrio, "write_dataframe", failing)
    with pytest.raises(OutputError, match="disk full"):
        write_gpkg(result, tmp_path / "out.gpkg")
    assert calls == ["segments", "prompt_boxes", "prompt_points"]
    assert list(tmp_path.iterdir()) == []


def test_a_target_that_cannot_be_replaced_is_kept_and_explained(tmp_path, result, monkeypatch):
    """As on Windows when QGIS holds the old GeoPackage open."""
    path = tmp_path / "out.gpkg"
    path.write_bytes(b"open in QGIS")

    def locked(source, destination):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", locked)
    with pytest.raises(OutputError, match="close it in other programs"):
        write_gpkg(result, path, overwrite=True)
    assert path.read_bytes() == b"open in QGIS" and list(tmp_path.iterdir()) == [path]


def test_mask_geotiff_aligned_with_window(tmp_path, result):
    path = tmp_path / "mask.tif"
    write_mask_geotiff(result, path)
    with rasterio.open(path) as src:
        data = src.read(1)
        assert src.transform == result.tile.transform and src.crs.to_epsg() == 32633
        assert src.nodata == MASK_NODATA
    assert (data[-4:] == MASK_NODATA).all()
    assert np.array_equal(data[:-4] == 1, result.mask[:-4])


def test_geojson_names_its_crs_and_serializes(result):
    collection = to_feature_collection(result)
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert "UTM zone 33N" in collection["crs_wkt"]
    assert len(collection["features"]) == 2 and collection["status"] == "ok"
    kinds = [f["properties"]["kind"] for f in collection["prompts"]["features"]]
    assert kinds == ["box", "positive_point", "positive_point"] * 2
    json.dumps(collection, allow_nan=False)


def test_output_path_checks(tmp_path):
    with pytest.raises(OutputError, match=".gpkg"):
        check_output_path(tmp_path / "out.shp", overwrite=False, suffixes=(".gpkg",))
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "nope" / "out.gpkg", overwrite=False, suffixes=(".gpkg",))
    with pytest.raises(OutputError, match="folder"):
        check_output_path(tmp_path, overwrite=False, suffixes=(".gpkg",))
