"""Exact georeferencing through the CLI with the tiny models, in three CRSs and at a window offset."""

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from rasterio import features
from shapely.geometry import box, shape
from shapely.ops import unary_union

from think2seg.cli import main
from think2seg.testing.tiny_lvlm import question_for
from think2seg.think2seg_rs.prompt import VIEW_SIZE_PX

from rasters import scene, write_raster

pytestmark = pytest.mark.slow

PONDS_840 = [(84, 84, 336, 294), (504, 546, 756, 756)]  # the boxes of TEST_ANSWERS["ponds"]

CASES = {
    "utm33": ("EPSG:32633", Affine(0.5, 0, 512000.0, 0, -0.5, 5262000.0)),
    "wgs84": ("EPSG:4326", Affine(4e-6, 0, 16.37, 0, -4e-6, 48.21)),
    "webmercator": ("EPSG:3857", Affine(0.3, 0, 1822400.0, 0, -0.3, 6141300.0)),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("offset", [False, True])
def test_boxes_segments_and_mask_agree_in_map_coordinates(tmp_path, tiny_lvlm_dir, tiny_sam2_dir, capsys, name, offset):
    crs, transform = CASES[name]
    height, width = 150, 210
    path = write_raster(tmp_path / f"{name}.tif", scene(height, width), crs=crs, transform=transform)
    col0, row0, cols, rows = (37, 21, 130, 97) if offset else (0, 0, width, height)
    window_transform = transform @ Affine.translation(col0, row0)
    left, top = window_transform @ (0, 0)
    right, bottom = window_transform @ (cols, rows)
    # Bounds a quarter pixel inside the window's edges still select exactly those pixels.
    qx, qy = transform.a / 4, -transform.e / 4
    out, mask_out = tmp_path / "out.gpkg", tmp_path / "mask.tif"
    args = ["segment", str(path), question_for("ponds"), "-o", str(out), "--mask-out", str(mask_out)]
    args += ["--bounds", str(left + qx), str(bottom + qy), str(right - qx), str(top - qy)] if offset else []
    args += ["--lvlm", str(tiny_lvlm_dir), "--segmenter", str(tiny_sam2_dir), "--device", "cpu"]
    assert main(args) == 0, capsys.readouterr().err

    pixel_size = abs(transform.a)
    boxes = pyogrio.read_dataframe(out, layer="prompt_boxes").sort_values("instance")
    assert boxes.crs.to_string() == crs
    for geometry, view_box in zip(boxes.geometry, PONDS_840):
        x1, y1, x2, y2 = view_box
        sx, sy = cols / VIEW_SIZE_PX, rows / VIEW_SIZE_PX
        corners = [window_transform @ (x * sx, y * sy) for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]
        got = np.asarray(geometry.exterior.coords)[:4]
        assert np.abs(got - np.asarray(corners)).max() < pixel_size / 2

    with rasterio.open(mask_out) as src:
        assert src.transform.almost_equals(window_transform) and src.crs.to_string() == crs
        assert (src.width, src.height) == (cols, rows)
        data = src.read(1)
        pieces = [shape(g) for g, v in features.shapes(data, mask=data == 1, transform=src.transform) if v == 1]
    segments = pyogrio.read_dataframe(out, layer="segments")
    assert len(segments) == len(pieces)
    assert segments.union_all().symmetric_difference(unary_union(pieces)).area <= 1e-6 * pixel_size**2
    footprint = box(left, bottom, right, top).buffer(pixel_size * 1e-6)
    for layer in ("segments", "prompt_boxes", "prompt_points"):
        frame = pyogrio.read_dataframe(out, layer=layer)
        assert frame.geometry.is_valid.all() and frame.geometry.within(footprint).all(), layer
