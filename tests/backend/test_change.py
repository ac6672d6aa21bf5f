"""Change between two dates: alignment, overlay, dates, tiled mode, refusals and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio import features
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject
from shapely.geometry import box, shape

from think2seg.batch.options import BatchOptions, ModelSpec
from think2seg.change.compare import ChangeFilter, compare
from think2seg.change.dates import acquired_date
from think2seg.change.run import ChangeOptions, run_change, work_folder
from think2seg.cli import main
from think2seg.engine import Engine
from think2seg.errors import BoundsError, ModelError, OutputExistsError, QuestionError, RasterNotFoundError
from think2seg.models.base import Generation
from think2seg.testing.tiny_lvlm import question_for

from conftest import FixedPrompter, tiny_model_flags
from rasters import UTM_TRANSFORM, write_raster

PIXEL_M = 0.5  # UTM_TRANSFORM's pixel side
SIZE_PX = 300
# (row0, row1, col0, col1) of the bright objects, in BEFORE's pixels
KEPT = (40, 100, 40, 110)  # on both dates: 60 x 70 px = 1050 m²
REMOVED = (180, 240, 60, 120)  # BEFORE only: 900 m²
ADDED = (150, 230, 190, 260)  # AFTER only: 1400 m²
LAYERS = ("appeared", "disappeared", "persisted", "before_segments", "after_segments")
# A bright blob cut by a seam gets one view box per tile; the padding keeps the box around its pixels.
VIEW_PAD_PX = 4


class BlobPrompter:
    """Finds the bright blobs of the 840 view and answers in the Think2Seg-RS format: one instance
    per blob, its box padded by a few view pixels and two points inside it."""

    name = "blob-prompter"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, view, question, *, on_text=None) -> Generation:
        self.calls += 1
        bright = np.asarray(view.convert("RGB")).mean(axis=2) > 128
        instances = []
        for geometry, _ in features.shapes(bright.astype(np.uint8), mask=bright, connectivity=8):
            blob = shape(geometry)
            x1, y1, x2, y2 = blob.bounds
            inside = blob.representative_point()
            padded = [max(0, x1 - VIEW_PAD_PX), max(0, y1 - VIEW_PAD_PX), min(840, x2 + VIEW_PAD_PX)]
            padded.append(min(840, y2 + VIEW_PAD_PX))
            point = [round(inside.x, 1), round(inside.y, 1)]
            instances.append({"bbox_2d": [round(v) for v in padded], "positive_points": [point, point]})
        text = f"<think>{len(instances)} bright blob(s).</think> <answer>```json{json.dumps(instances)}```</answer>"
        if on_text is not None:
            on_text(text)
        return Generation(text, new_tokens=len(text))


class BrightSegmenter:
    """Masks the bright pixels (mean over the bands > 128) inside each prompt's box."""

    name = "bright-segmenter"

    def encode(self, image: np.ndarray) -> np.ndarray:
        return image

    def predict(self, image: np.ndarray, prompts) -> np.ndarray:
        bright = image.mean(axis=2) > 128
        cols, rows = np.arange(bright.shape[1]) + 0.5, np.arange(bright.shape[0]) + 0.5
        masks = np.zeros((len(prompts), *bright.shape), dtype=bool)
        for k, prompt in enumerate(prompts):
            x1, y1, x2, y2 = prompt.box_xyxy
            masks[k] = bright & ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
        return masks


def blob_engine() -> Engine:
    return Engine(BlobPrompter(), BrightSegmenter())


def picture(*objects: tuple[int, int, int, int], size: int = SIZE_PX, seed: int = 0) -> np.ndarray:
    """(3, H, W) uint8: a dark noisy ground with bright rectangles."""
    data = 40 + np.random.default_rng(seed).integers(0, 8, (3, size, size))
    for row0, row1, col0, col1 in objects:
        data[:, row0:row1, col0:col1] = 220
    return data.astype(np.uint8)


def footprint(rows_cols: tuple[int, int, int, int], transform: Affine = UTM_TRANSFORM):
    row0, row1, col0, col1 = rows_cols
    x0, y0 = transform @ (col0, row0)
    x1, y1 = transform @ (col1, row1)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def area_m2(rows_cols: tuple[int, int, int, int]) -> float:
    row0, row1, col0, col1 = rows_cols
    return (row1 - row0) * (col1 - col0) * PIXEL_M**2


@pytest.fixture
def dates(tmp_path: Path) -> tuple[Path, Path]:
    """BEFORE with KEPT and REMOVED, AFTER with KEPT and ADDED, on the same grid."""
    before = write_raster(tmp_path / "before.tif", picture(KEPT, REMOVED, seed=1))
    after = write_raster(tmp_path / "after.tif", picture(KEPT, ADDED, seed=2))
    return before, after


def layers(path: Path) -> dict:
    return {name: pyogrio.read_dataframe(path, layer=name) for name in LAYERS}


def runs(path: Path):
    return pyogrio.read_dataframe(path, layer="runs", read_geometry=False)


def test_same_grid_finds_what_appeared_disappeared_and_persisted(dates, tmp_path):
    before, after = dates
    out = tmp_path / "change.gpkg"
    summary = run_change(before, after, "every bright roof", out, models=blob_engine())
    found = layers(out)
    for name, rect in (("appeared", ADDED), ("disappeared", REMOVED), ("persisted", KEPT)):
        frame = found[name]
        assert len(frame) == 1, name
        assert frame.geometry[0].equals(footprint(rect)), name
        assert frame["area_m2"][0] == pytest.approx(area_m2(rect)), name
        assert summary.layers[name].polygons == 1 and summary.layers[name].area_m2 == pytest.approx(area_m2(rect))
        assert frame.crs.to_epsg() == 32633
        row = frame.iloc[0]
        assert (row["question"], row["model"], row["segmenter"]) == (
            "every bright roof",
            "blob-prompter",
            "bright-segmenter",
        )
        assert (row["before_source"], row["after_source"]) == (str(before), str(after))
    assert sorted(found["before_segments"]["area_m2"]) == pytest.approx(sorted([area_m2(KEPT), area_m2(REMOVED)]))
    assert sorted(found["after_segments"]["area_m2"]) == pytest.approx(sorted([area_m2(KEPT), area_m2(ADDED)]))
    # each piece names the polygons it was cut from, and carries their own columns
    after_segments = found["after_segments"].set_index("segment_id")
    appeared = found["appeared"].iloc[0]
    assert after_segments.loc[appeared["after_segment_id"]].geometry.equals(footprint(ADDED))
    assert "before_segment_id" not in found["appeared"].columns
    persisted = found["persisted"].columns
    assert {"before_segment_id", "after_segment_id", "before_instance", "after_score"} <= set(persisted)
    assert set(found["after_segments"]["source"]) == {str(after)}  # the raster given, not the VRT read
    table = runs(out)
    assert list(table["role"]) == ["before", "after"]
    assert all(text.startswith("<think>2 bright blob(s).</think>") for text in table["raw_answer"])
    assert list(table["reasoning"]) == ["2 bright blob(s)."] * 2
    assert set(table["resampling"]) == {"bilinear"} and set(table["after_on_same_grid"]) == {1}
    assert (table["grid_width"][0], table["grid_height"][0], table["grid_crs"][0]) == (SIZE_PX, SIZE_PX, "EPSG:32633")
    assert json.loads(table["grid_transform"][0]) == pytest.approx(list(UTM_TRANSFORM)[:6])
    assert set(table["min_change_m2"]) == {25.0} and set(table["tile_size_px"]) == {0}


def test_after_in_another_crs_gives_only_the_real_changes(dates, tmp_path):
    before, _ = dates
    after = _warped_to_wgs84(write_raster(tmp_path / "after_utm.tif", picture(KEPT, ADDED, seed=2)), tmp_path)
    out = tmp_path / "change.gpkg"
    summary = run_change(before, after, "every bright roof", out, models=blob_engine())
    found = layers(out)
    assert summary.crs == "EPSG:32633" and not summary.same_grid
    for name, rect in (("appeared", ADDED), ("disappeared", REMOVED), ("persisted", KEPT)):
        frame = found[name]
        assert len(frame) == 1, f"{name}: {list(frame['area_m2'])}"
        assert frame.crs.to_epsg() == 32633
        piece = frame.geometry[0]
        assert piece.symmetric_difference(footprint(rect)).area < 0.05 * area_m2(rect), name
        assert frame["area_m2"][0] == pytest.approx(area_m2(rect), rel=0.05), name
    table = runs(out)
    assert set(table["after_crs"]) == {"EPSG:4326"} and set(table["after_on_same_grid"]) == {0}


def _warped_to_wgs84(path: Path, folder: Path) -> Path:
    """The raster reprojected into EPSG:4326 (nearest), outside its footprint nodata 0."""
    with rasterio.open(path) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        data = np.zeros((src.count, height, width), dtype=np.uint8)
        reproject(
            src.read(),
            data,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=transform,
            dst_crs="EPSG:4326",
            resampling=Resampling.nearest,
            dst_nodata=0,
        )
    return write_raster(folder / "after_wgs84.tif", data, crs="EPSG:4326", transform=transform, nodata=0)


def test_only_the_common_extent_is_compared(tmp_path):
    """AFTER covers BEFORE's east half: REMOVED, in the west, is outside it and is not 'disappeared'."""
    before = write_raster(tmp_path / "before.tif", picture(KEPT, REMOVED, (40, 100, 200, 260), seed=1))
    east = UTM_TRANSFORM @ Affine.translation(150, 0)
    after_data = picture((40, 100, 50, 110), seed=2)  # BEFORE's (40, 100, 200, 260), shifted by 150 columns
    after = write_raster(tmp_path / "after.tif", after_data, transform=east)
    out = tmp_path / "change.gpkg"
    summary = run_change(before, after, "roofs", out, models=blob_engine())
    assert summary.grid_px == (150, SIZE_PX)
    found = layers(out)
    assert len(found["disappeared"]) == 0 and len(found["appeared"]) == 0
    assert found["persisted"].geometry[0].equals(footprint((40, 100, 200, 260)))
    assert runs(out)["grid_col_off"][0] == 150


def test_tiled_mode_gives_the_one_window_result(dates, tmp_path):
    before, after = dates
    one = tmp_path / "one.gpkg"
    tiled = tmp_path / "tiled.gpkg"
    run_change(before, after, "roofs", one, models=blob_engine())
    options = ChangeOptions(tiled=True, batch=BatchOptions(tile_size_px=128, overlap_px=32, batch_size=2))
    summary = run_change(before, after, "roofs", tiled, models=blob_engine(), options=options)
    assert summary.tiles == (9, 9)
    whole, pieces = layers(one), layers(tiled)
    for name in LAYERS:
        assert len(pieces[name]) == len(whole[name]), name
        assert pieces[name]["area_m2"].sum() == pytest.approx(whole[name]["area_m2"].sum()), name
        union = shapely.union_all(pieces[name].geometry.to_numpy())
        assert union.symmetric_difference(shapely.union_all(whole[name].geometry.to_numpy())).area < 1e-6, name
    assert "before_tiles" in pieces["persisted"].columns  # the batch runs' own columns flow through
    table = runs(tiled)
    assert list(table["role"]).count("before") == 9 and set(table["tile_size_px"]) == {128}
    assert not work_folder(tiled).exists()  # the batch runs' work is removed once the output is written


def test_rasters_that_do_not_overlap_are_refused_before_any_model(tmp_path):
    before = write_raster(tmp_path / "before.tif", picture(KEPT))
    far = UTM_TRANSFORM @ Affine.translation(10_000, 0)
    after = write_raster(tmp_path / "after.tif", picture(KEPT), crs="EPSG:32634", transform=far)
    never = ModelSpec(lvlm=str(tmp_path / "no-model"))  # loading it would fail otherwise
    with pytest.raises(BoundsError) as caught:
        run_change(before, after, "roofs", tmp_path / "out.gpkg", models=never)
    message = str(caught.value)
    assert "do not overlap" in message and "EPSG:32633" in message and "EPSG:32634" in message
    assert "before.tif covers [512000.0, 5261850.0, 512150.0, 5262000.0]" in message
    with pytest.raises(RasterNotFoundError):
        run_change(before, tmp_path / "missing.tif", "roofs", tmp_path / "out.gpkg", models=never)
    with pytest.raises(QuestionError):
        run_change(before, before, "  ", tmp_path / "out.gpkg", models=never)
    assert not (tmp_path / "out.gpkg").exists()


def test_an_unreadable_answer_writes_nothing(dates, tmp_path):
    before, after = dates
    garbled = Engine(FixedPrompter("<think>Unsure.</think> <answer>I cannot tell.</answer>"), BrightSegmenter())
    with pytest.raises(ModelError, match="no usable answer for BEFORE 1 of 1 tile"):
        run_change(before, after, "roofs", tmp_path / "out.gpkg", models=garbled)
    assert list(tmp_path.iterdir()) == [before, after] or set(tmp_path.iterdir()) == {before, after}


def test_an_existing_output_needs_overwrite(dates, tmp_path):
    before, after = dates
    out = tmp_path / "out.gpkg"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        run_change(before, after, "roofs", out, models=blob_engine())
    run_change(
        before, after, "roofs", out, models=blob_engine(), options=ChangeOptions(batch=BatchOptions(overwrite=True))
    )
    assert len(layers(out)["persisted"]) == 1


def test_slivers_and_specks_are_dropped_and_real_changes_kept():
    """A square shifted by one pixel diagonally leaves 1-px L-shaped slivers; a new 8 x 8 px square is a
    real change; a band two pixels wide is too."""
    square = footprint((40, 100, 40, 110))
    moved = shapely.affinity.translate(square, PIXEL_M, -PIXEL_M)
    new = footprint((200, 208, 200, 208))  # 16 m²
    band = footprint((250, 252, 20, 120))  # 2 x 100 px, 50 m²

    before = gpd.GeoDataFrame({"area_m2": [square.area]}, geometry=[square], crs="EPSG:32633")
    after = gpd.GeoDataFrame({"area_m2": [0.0] * 3}, geometry=[moved, new, band], crs="EPSG:32633")
    area = box(*UTM_TRANSFORM @ (0, SIZE_PX), *UTM_TRANSFORM @ (SIZE_PX, 0))
    crs = rasterio.crs.CRS.from_epsg(32633)
    default = compare(before, after, footprint=area, filters=ChangeFilter(crs, PIXEL_M, min_change_m2=10))
    assert len(default.disappeared) == 0
    assert len(default.appeared) == 2
    assert default.appeared.geometry[0].equals(new) and default.appeared.geometry[1].equals(band)
    assert list(default.appeared["area_m2"]) == pytest.approx([16.0, 50.0])
    kept = compare(before, after, footprint=area, filters=ChangeFilter(crs, PIXEL_M, min_change_m2=0, sliver_px=0))
    assert len(kept.disappeared) == 1 and len(kept.appeared) == 3  # the slivers, once the filters are off
    assert kept.disappeared["area_m2"].sum() + kept.persisted["area_m2"].sum() == pytest.approx(square.area)
    specks = compare(before, after, footprint=area, filters=ChangeFilter(crs, PIXEL_M, min_change_m2=25))
    assert list(specks.appeared["area_m2"]) == pytest.approx([50.0])  # 16 m² is under 25 m²


def test_dates_come_from_the_option_then_the_metadata(tmp_path):
    plain = write_raster(tmp_path / "plain.tif", picture())
    tagged = write_raster(tmp_path / "tagged.tif", picture())
    with rasterio.open(tagged, "r+") as dataset:
        dataset.update_tags(TIFFTAG_DATETIME="2019:05:04 10:11:12")
    assert acquired_date(tagged).value == "2019-05-04" and acquired_date(tagged).origin == "TIFFTAG_DATETIME"
    with rasterio.open(tagged, "r+") as dataset:
        dataset.update_tags(ns="IMAGERY", ACQUISITIONDATETIME="2019-05-01T09:00:00Z")
    assert acquired_date(tagged).value == "2019-05-01"  # the acquisition, not the file's own date
    assert acquired_date(tagged, given="2019-06-01").value == "2019-06-01"
    assert acquired_date(plain).value == ""


def test_cli_end_to_end_with_the_tiny_models(tmp_path, capsys, tiny_lvlm_dir, tiny_sam2_dir):
    before = write_raster(tmp_path / "before.tif", picture(KEPT, REMOVED, seed=1))
    with rasterio.open(before, "r+") as dataset:
        dataset.update_tags(TIFFTAG_DATETIME="2020:06:01 10:00:00")
    after = write_raster(tmp_path / "after.tif", picture(KEPT, ADDED, seed=2))
    out = tmp_path / "change.gpkg"
    args = ["change", str(before), str(after), question_for("river"), "-o", str(out), "--after-date", "2021-06-01"]
    args += ["--min-area-m2", "5"]  # the random tiny SAM leaves specks
    assert main([*args, *tiny_model_flags(tiny_lvlm_dir, tiny_sam2_dir)]) == 0
    printed = capsys.readouterr().out
    assert "BEFORE 2020-06-01, AFTER 2021-06-01" in printed and "appeared" in printed
    found = layers(out)
    assert all(found[name].crs.to_epsg() == 32633 for name in LAYERS)
    before_area = found["before_segments"]["area_m2"].sum()
    assert found["disappeared"]["area_m2"].sum() + found["persisted"]["area_m2"].sum() <= before_area + 1e-6
    table = runs(out)
    assert list(table["reasoning"]) == ["A river runs through the middle of the scene."] * 2
    assert list(table["date"]) == ["2020-06-01", "2021-06-01"]
    assert list(table["date_origin"]) == ["TIFFTAG_DATETIME", "option"]
    assert main([*args, "--lvlm", str(tmp_path / "no-model")]) == 1  # exists: refused before any model
    assert "already exists" in capsys.readouterr().err


class FailingSegmenter(BrightSegmenter):
    """Fails on every image (a broken model); its failures are recorded per tile by the batch runs."""

    def encode(self, image: np.ndarray) -> np.ndarray:
        raise RuntimeError("the segmenter broke")


def test_tiled_failures_write_nothing_and_retry_failed_finishes(dates, tmp_path):
    before, after = dates
    out = tmp_path / "change.gpkg"
    tiling = {"tile_size_px": 128, "overlap_px": 32}
    broken = Engine(BlobPrompter(), FailingSegmenter())
    with pytest.raises(ModelError, match="--retry-failed"):
        run_change(
            before, after, "roofs", out, models=broken, options=ChangeOptions(tiled=True, batch=BatchOptions(**tiling))
        )
    assert not out.exists() and (work_folder(out) / "before.gpkg").exists()
    retry = ChangeOptions(tiled=True, batch=BatchOptions(**tiling, retry_failed=True))
    summary = run_change(before, after, "roofs", out, models=blob_engine(), options=retry)
    assert {name: summary.layers[name].polygons for name in ("appeared", "disappeared", "persisted")} == {
        "appeared": 1,
        "disappeared": 1,
        "persisted": 1,
    }
    assert not work_folder(out).exists()
