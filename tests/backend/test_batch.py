"""Batch runs: tiling, ownership and stitching, AOI, resume, faults."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from affine import Affine
from rasterio.windows import Window
from shapely.geometry import box
from shapely.ops import unary_union

from think2seg.batch.grid import TileGrid
from think2seg.batch.options import BatchOptions
from think2seg.batch.runner import run_batch
from think2seg.cli.batch import format_batch_summary
from think2seg.engine import Engine
from think2seg.errors import InputError, OutputError, OutputExistsError
from think2seg.geo.vectorize import mask_to_polygons

from conftest import FixedPrompter, tiny_model_flags
from rasters import UTM_TRANSFORM, write_raster

WHOLE_VIEW = '<think>Everything.</think> <answer>[{"bbox_2d": [0, 0, 840, 840], "positive_points": [[10, 10], [20, 20]]}]</answer>'
PIXEL = 0.5  # metres, UTM_TRANSFORM


class ThresholdSegmenter:
    """Masks the pixels whose red value is over 128, whatever the prompts: a known mask per raster."""

    name = "threshold"

    def __init__(self, fail_when_mean_over: float | None = None) -> None:
        self.encoded = 0
        self.fail_when_mean_over = fail_when_mean_over

    def encode(self, image: np.ndarray) -> np.ndarray:
        self.encoded += 1
        if self.fail_when_mean_over is not None and image[..., 1].mean() > self.fail_when_mean_over:
            raise RuntimeError("CUDA out of memory (simulated)")
        return image

    def predict(self, image: np.ndarray, prompts) -> np.ndarray:
        return np.repeat((image[..., 0] > 128)[None], len(prompts), axis=0)


def scene_mask(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    mask = ((xx - 300) ** 2 / 260**2 + (yy - 300) ** 2 / 250**2) < 1  # spans 3x3 tiles of 256
    mask &= ((xx - 300) ** 2 + (yy - 300) ** 2) >= 50**2  # with a hole
    mask[500:520, 700:760] = True  # a bar across the seam at x ~ 736
    mask[100:110, 700:710] = True  # small interior blob
    mask[223:224, 222:223] = True  # single pixels touching only diagonally across a seam
    mask[224:225, 223:224] = True
    return mask


def write_scene(
    path: Path,
    height: int = 600,
    width: int = 900,
    nodata_cols: int = 0,
    transform: Affine = UTM_TRANSFORM,
    noise: bool = False,
) -> tuple[Path, np.ndarray]:
    """The scene; ``noise`` adds random pixels around a seam corner (many small pieces, ragged seams)."""
    mask = scene_mask(height, width)
    if noise:
        mask[215:265, 645:695] = np.random.default_rng(0).random((50, 50)) < 0.5  # seams at row 240, col 674
    red = np.where(mask, 200, 40).astype(np.uint8)
    green = np.full((height, width), 90, np.uint8)
    green[:, width // 2 :] = 30  # the east half is darker (used to make some tiles fail)
    data = np.stack([red, green, np.full((height, width), 60, np.uint8)])
    if nodata_cols:
        data[:, :, :nodata_cols] = 0
        mask[:, :nodata_cols] = False
    return write_raster(path, data, nodata=0 if nodata_cols else None, transform=transform), mask


def engine(segmenter: ThresholdSegmenter | None = None, answer: str = WHOLE_VIEW) -> Engine:
    return Engine(FixedPrompter(answer), segmenter or ThresholdSegmenter())


def segments(path: Path):
    return pyogrio.read_dataframe(path, layer="segments")


def tiles(path: Path):
    return pyogrio.read_dataframe(path, layer="tiles").sort_values("tile_id")


OPTIONS_KW = {"tile_size_px": 256, "overlap_px": 32}
OPTIONS = BatchOptions(**OPTIONS_KW)


# --- the grid -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [(900, 600, 256, 32), (1000, 1000, 300, 0), (257, 100, 256, 64), (64, 64, 256, 32)],
)
def test_cores_partition_the_region_and_tiles_are_full_size(width, height, tile, overlap):
    region = Window(5, 7, width, height)
    grid = TileGrid(region, tile, overlap)
    cells = list(grid)
    assert len(cells) == len(grid) == grid.rows * grid.cols
    cores = [
        box(c.core.col_off, c.core.row_off, c.core.col_off + c.core.width, c.core.row_off + c.core.height)
        for c in cells
    ]
    assert sum(c.area for c in cores) == width * height
    assert unary_union(cores).equals(box(5, 7, 5 + width, 7 + height))
    for cell in cells:
        assert cell.window.width == min(tile, width) and cell.window.height == min(tile, height)
        assert (
            region.col_off <= cell.window.col_off and cell.window.col_off + cell.window.width <= region.col_off + width
        )
        core, window = cell.core, cell.window
        assert window.col_off <= core.col_off and core.col_off + core.width <= window.col_off + window.width
    last = cells[-1].window
    assert last.col_off + last.width == 5 + width and last.row_off + last.height == 7 + height


def test_interior_cores_drop_half_the_overlap_on_each_side():
    cells = {(c.row, c.col): c for c in TileGrid(Window(0, 0, 1000, 1000), 256, 32)}
    middle = cells[(1, 1)]
    assert (middle.window.col_off, middle.core.col_off) == (224, 240)
    assert middle.core.width == 224


@pytest.mark.parametrize(("tile", "overlap"), [(32, 0), (256, 200), (256, -1)])
def test_bad_grid_options_refused(tile, overlap):
    with pytest.raises(InputError):
        TileGrid(Window(0, 0, 100, 100), tile, overlap)


# --- stitching ------------------------------------------------------------------------------------


ROTATED = UTM_TRANSFORM @ Affine.rotation(30)
"""A rotated geotransform with UTM_TRANSFORM's pixel area: seam edges are not axis-parallel."""


@pytest.mark.parametrize("transform", [UTM_TRANSFORM, ROTATED], ids=["north-up", "rotated"])
def test_stitched_polygons_equal_a_single_pass_over_the_whole_raster(tmp_path, transform):
    raster, mask = write_scene(tmp_path / "scene.tif", transform=transform, noise=True)
    summary = run_batch(raster, "segment the field", tmp_path / "out.gpkg", models=engine(), options=OPTIONS)
    result = segments(tmp_path / "out.gpkg")
    reference = mask_to_polygons(mask, transform=transform)
    assert summary.tiles_total == 12 and summary.counts == {"ok": 12}
    assert len(result) == len(reference) == summary.polygons
    stitched = unary_union(list(result.geometry))
    assert stitched.symmetric_difference(unary_union(reference)).area < len(reference) * PIXEL**2
    assert sum(g.area for g in result.geometry) == pytest.approx(mask.sum() * PIXEL**2)  # nothing counted twice
    assert result.geometry.is_valid.all()
    ellipse = result.loc[result.geometry.area.idxmax()]
    assert ellipse["tiles"] == 9 and len(ellipse.geometry.interiors) == 1
    assert result["area_m2"].sum() == pytest.approx(mask.sum() * PIXEL**2)


SKEWED = Affine.translation(512000.0, 5262000.0) @ Affine.rotation(30) @ Affine.scale(0.5, -1.5)
"""Rotated, with pixels three times as tall as wide: a tolerance in pixels is no one map distance."""


def _wkts(geometries) -> list[str]:
    return sorted(shapely.to_wkt(shapely.normalize(g), rounding_precision=6) for g in geometries)


@pytest.mark.parametrize(("height", "width"), [(600, 900), (200, 240)], ids=["12 tiles", "one tile"])
def test_simplify_px_is_in_pixels_as_in_segment_whatever_the_transform(tmp_path, height, width):
    """--simplify-px simplifies the pixel polygons and then georeferences them, as ``segment`` does."""
    raster, mask = write_scene(tmp_path / "scene.tif", height=height, width=width, transform=SKEWED, noise=height > 300)
    options = BatchOptions(**OPTIONS_KW, simplify_px=2.0)
    run_batch(raster, "segment", tmp_path / "out.gpkg", models=engine(), options=options)
    result = segments(tmp_path / "out.gpkg")
    expected = mask_to_polygons(mask, transform=SKEWED, simplify_px=2.0)
    # simplifying the map-coordinate polygons by the pixel size (what batch did before) is another result
    in_map_units = shapely.simplify(
        np.array(mask_to_polygons(mask, transform=SKEWED)), 2.0 * abs(SKEWED.determinant) ** 0.5, preserve_topology=True
    )
    assert _wkts(in_map_units) != _wkts(expected)
    assert len(result) == len(expected) and result.geometry.is_valid.all()
    # Exactly the same polygons, across seams too: the outlines are cleaned in a canonical form
    # (ring starts, collinear seam vertices and input order do not matter), all of a raster's at once.
    assert _wkts(result.geometry) == _wkts(expected)


def test_tile_pieces_are_stored_in_whole_pixel_coordinates(tmp_path):
    raster, mask = write_scene(tmp_path / "scene.tif", transform=SKEWED, noise=True)
    out = tmp_path / "out.gpkg"
    run_batch(raster, "segment", out, models=engine(), options=OPTIONS)
    pieces = pyogrio.read_dataframe(out, layer="tile_pieces")
    assert pyogrio.read_info(out, layer="tile_pieces")["crs"] is None
    assert (
        pyogrio.read_info(out, layer="tiles")["crs"] == pyogrio.read_info(out, layer="segments")["crs"] == "EPSG:32633"
    )
    xy = shapely.get_coordinates(pieces.geometry.to_numpy())
    assert len(xy) and (xy == np.round(xy)).all()  # pixel corners, exactly
    assert pieces.geometry.area.sum() == mask.sum()  # in pixels: each pixel in one piece
    cores = tiles(out).set_index("tile_id")
    for tile_id, group in pieces.groupby("tile_id"):
        core = cores.loc[tile_id]
        x0, y0 = core["core_col_off"], core["core_row_off"]
        assert group.geometry.within(box(x0, y0, x0 + core["core_width"], y0 + core["core_height"])).all()


def test_nodata_tiles_cost_no_model_call(tmp_path):
    raster, mask = write_scene(tmp_path / "scene.tif", nodata_cols=500)
    prompter, segmenter = FixedPrompter(WHOLE_VIEW), ThresholdSegmenter()
    summary = run_batch(raster, "segment", tmp_path / "out.gpkg", models=Engine(prompter, segmenter), options=OPTIONS)
    assert summary.counts["no_data"] == 6 and prompter.calls == 12 - 6  # two columns of tiles lie in the nodata strip
    assert sum(g.area for g in segments(tmp_path / "out.gpkg").geometry) == pytest.approx(mask.sum() * PIXEL**2)


def test_aoi_skips_tiles_and_clips_results(tmp_path):
    raster, mask = write_scene(tmp_path / "scene.tif")
    left, top = UTM_TRANSFORM @ (0, 0)
    aoi = box(left + 10, top - 200, left + 150, top - 20)  # pixels 20..300 x 40..400, in two tile columns
    gpd.GeoDataFrame(geometry=[aoi], crs="EPSG:32633").to_crs(4326).to_file(tmp_path / "aoi.geojson")
    options = BatchOptions(tile_size_px=256, overlap_px=32, aoi=tmp_path / "aoi.geojson")
    summary = run_batch(raster, "segment", tmp_path / "out.gpkg", models=engine(), options=options)
    result = segments(tmp_path / "out.gpkg")
    assert summary.tiles_total == 4 and summary.counts.get("ok") == 4  # the AOI's extent needs 2x2 tiles
    expected = unary_union(mask_to_polygons(mask, transform=UTM_TRANSFORM)).intersection(aoi)
    assert unary_union(list(result.geometry)).symmetric_difference(expected).area < 0.01
    assert result.geometry.within(aoi.buffer(0.01)).all()


def test_outside_aoi_tiles_recorded_without_reading(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif")
    left, top = UTM_TRANSFORM @ (0, 0)
    # An L-shaped AOI (a west strip and a north strip) over 3x3 tiles: only the first column and row meet it.
    aoi = box(left, top - 250, left + 20, top).union(box(left, top - 20, left + 250, top))
    gpd.GeoDataFrame(geometry=[aoi], crs="EPSG:32633").to_file(tmp_path / "aoi.gpkg")
    prompter = FixedPrompter(WHOLE_VIEW)
    options = BatchOptions(tile_size_px=256, overlap_px=32, aoi=tmp_path / "aoi.gpkg")
    summary = run_batch(
        raster, "segment", tmp_path / "out.gpkg", models=Engine(prompter, ThresholdSegmenter()), options=options
    )
    assert summary.counts == {"ok": 5, "outside_aoi": 4} and prompter.calls == 5
    statuses = tiles(tmp_path / "out.gpkg").set_index(["row", "col"])["status"]
    assert [statuses[(r, c)] == "ok" for r in range(3) for c in range(3)] == [
        r == 0 or c == 0 for r in range(3) for c in range(3)
    ]


# --- resume, refusals, faults ---------------------------------------------------------------------


def test_existing_output_refused_and_changed_parameters_refused(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif")
    out = tmp_path / "out.gpkg"
    run_batch(raster, "segment", out, models=engine(), options=OPTIONS)
    with pytest.raises(OutputExistsError, match="--resume"):
        run_batch(raster, "segment", out, models=engine(), options=OPTIONS)
    changed = BatchOptions(tile_size_px=256, overlap_px=64, resume=True)
    with pytest.raises(InputError, match="overlap_px: 32 -> 64"):
        run_batch(raster, "segment", out, models=engine(), options=changed)
    with pytest.raises(InputError, match="question"):
        run_batch(
            raster,
            "another question",
            out,
            models=engine(),
            options=BatchOptions(tile_size_px=256, overlap_px=32, resume=True),
        )
    foreign = tmp_path / "foreign.gpkg"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=32633).to_file(foreign)
    with pytest.raises(OSError, match="not a think2seg batch output"):
        run_batch(raster, "segment", foreign, models=engine(), options=BatchOptions(resume=True))
    summary = run_batch(
        raster, "segment", out, models=engine(), options=BatchOptions(tile_size_px=256, overlap_px=64, overwrite=True)
    )
    assert summary.tiles_before == 0


def test_an_output_with_map_coordinate_pieces_is_not_resumed(tmp_path, capsys):
    """Files from before tile pieces were stored in pixels lack the ``pieces`` parameter: refused, not mixed."""
    from think2seg.cli import main

    raster, _ = write_scene(tmp_path / "scene.tif", height=300, width=300)
    out = tmp_path / "out.gpkg"
    run_batch(raster, "segment", out, models=engine(), options=OPTIONS)
    with closing(sqlite3.connect(out)) as connection, connection:
        params = json.loads(connection.execute("SELECT params FROM runs").fetchone()[0])
        assert params.pop("pieces") == "pixel"
        connection.execute("UPDATE runs SET params = ?", (json.dumps(params),))
    message = f"{out} was written by an older think2seg (map-coordinate tile pieces), so it cannot be resumed: pass --overwrite"
    for flag in ("resume", "retry_failed"):
        with pytest.raises(OutputError) as refused:
            run_batch(raster, "segment", out, models=engine(), options=BatchOptions(**OPTIONS_KW, **{flag: True}))
        assert str(refused.value).startswith(message)
    args = ["batch", str(raster), "segment", "-o", str(out), "--tile-size-px", "256", "--overlap-px", "32"]
    assert main([*args, "--resume", "--lvlm", str(tmp_path / "no-model")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], "\n".join(err)
    summary = run_batch(raster, "segment", out, models=engine(), options=BatchOptions(**OPTIONS_KW, overwrite=True))
    assert summary.tiles_before == 0 and summary.counts == {"ok": 4}


def test_failed_tiles_recorded_and_only_they_retried(tmp_path):
    raster, mask = write_scene(tmp_path / "scene.tif")
    out = tmp_path / "out.gpkg"
    failing = ThresholdSegmenter(fail_when_mean_over=70)  # tiles mostly in the brighter west half
    summary = run_batch(
        raster,
        "segment",
        out,
        models=engine(failing),
        options=BatchOptions(tile_size_px=256, overlap_px=32, batch_size=4),
    )
    first = tiles(out)
    failed = first[first["status"] == "failed"]
    assert summary.failed == len(failed) > 0 and summary.counts["ok"] == 12 - len(failed)
    assert failed["message"].str.contains("out of memory").all()
    kept = dict(zip(first["tile_id"], first["attempt"]))
    resumed = run_batch(raster, "segment", out, models=engine(), options=BatchOptions(**OPTIONS_KW, resume=True))
    assert resumed.processed == 0 and resumed.previously_failed == len(failed)  # resume keeps them as they are
    text = format_batch_summary(resumed)
    assert f"failed     {len(failed)} in earlier runs" in text and "--retry-failed" in text
    healthy = ThresholdSegmenter()
    retry = BatchOptions(tile_size_px=256, overlap_px=32, retry_failed=True)
    summary = run_batch(raster, "segment", out, models=engine(healthy), options=retry)
    assert healthy.encoded == len(failed) and summary.tiles_before == 12 - len(failed)
    second = tiles(out)
    assert (second["status"] == "ok").all() and len(second) == 12
    for tile_id, attempt in zip(second["tile_id"], second["attempt"]):
        assert (attempt == kept[tile_id]) == (tile_id not in set(failed["tile_id"]))
    assert sum(g.area for g in segments(out).geometry) == pytest.approx(mask.sum() * PIXEL**2)


def test_a_tile_that_cannot_be_read_or_prepared_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    import think2seg.batch.tiles as batch_tiles
    from think2seg.errors import RasterError
    from think2seg.geo.read import RasterSource

    raster, _ = write_scene(tmp_path / "scene.tif")
    real_read, real_view, views = RasterSource.read, batch_tiles.make_view, []

    def flaky_read(self, window, **kwargs):
        if (window.col_off, window.row_off) == (0, 0):
            raise RasterError("cannot read block 0: TIFFReadEncodedTile failed")
        return real_read(self, window, **kwargs)

    def flaky_view(pixels):
        views.append(1)
        if len(views) == 2:
            raise ValueError("tile cannot be resized")
        return real_view(pixels)

    monkeypatch.setattr(RasterSource, "read", flaky_read)
    monkeypatch.setattr(batch_tiles, "make_view", flaky_view)
    summary = run_batch(raster, "segment", tmp_path / "out.gpkg", models=engine(), options=OPTIONS)
    recorded = tiles(tmp_path / "out.gpkg")
    failed = recorded[recorded["status"] == "failed"]["message"].tolist()
    assert len(recorded) == 12 and summary.counts["failed"] == 2 and summary.counts["ok"] == 10, (
        failed,
        summary.counts,
    )
    assert sorted(m.split(":")[0] for m in failed) == ["cannot prepare the tile's 840x840 view", "cannot read block 0"]


def test_unparseable_tiles_count_as_failed(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif", height=300, width=300)
    summary = run_batch(raster, "segment", tmp_path / "out.gpkg", models=engine(answer="no idea"), options=OPTIONS)
    assert summary.counts == {"unparseable": 4} and summary.failed == 4 and summary.polygons == 0
    assert set(tiles(tmp_path / "out.gpkg")["raw_answer"]) == {"no idea"}


class InterruptingSegmenter(ThresholdSegmenter):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def encode(self, image: np.ndarray) -> np.ndarray:
        if self.encoded == self.after:
            raise KeyboardInterrupt
        return super().encode(image)


def test_ctrl_c_keeps_finished_tiles_and_resume_completes(tmp_path):
    raster, mask = write_scene(tmp_path / "scene.tif")
    out = tmp_path / "out.gpkg"
    with pytest.raises(KeyboardInterrupt):
        run_batch(raster, "segment", out, models=engine(InterruptingSegmenter(after=5)), options=OPTIONS)
    assert len(tiles(out)) == 5
    segmenter = ThresholdSegmenter()
    summary = run_batch(
        raster,
        "segment",
        out,
        models=engine(segmenter),
        options=BatchOptions(tile_size_px=256, overlap_px=32, resume=True),
    )
    assert segmenter.encoded == 7 and summary.tiles_before == 5
    assert sum(g.area for g in segments(out).geometry) == pytest.approx(mask.sum() * PIXEL**2)


@pytest.mark.parametrize("batch_size, prefetch", [(3, 0), (5, 2)])
def test_batching_and_prefetch_change_nothing(tmp_path, batch_size, prefetch):
    raster, _ = write_scene(tmp_path / "scene.tif")
    run_batch(raster, "segment", tmp_path / "a.gpkg", models=engine(), options=OPTIONS)
    options = BatchOptions(tile_size_px=256, overlap_px=32, batch_size=batch_size, prefetch=prefetch)
    run_batch(raster, "segment", tmp_path / "b.gpkg", models=engine(), options=options)
    assert _normalized(tmp_path / "a.gpkg") == _normalized(tmp_path / "b.gpkg")


class SmallGpuEngine(Engine):
    """Runs out of GPU memory with more than ``fits`` tiles at once; records the tiles of each call."""

    def __init__(self, fits: int) -> None:
        super().__init__(FixedPrompter(WHOLE_VIEW), ThresholdSegmenter())
        self.fits, self.calls = fits, []

    def infer_batch(self, tiles, question, **kwargs):
        self.calls.append([(int(t.window.col_off), int(t.window.row_off)) for t in tiles])
        if len(tiles) > self.fits:
            raise RuntimeError("CUDA out of memory. Tried to allocate 9.00 GiB (simulated)")
        return super().infer_batch(tiles, question, **kwargs)


def test_out_of_memory_halves_the_batch_without_losing_or_repeating_tiles(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif")
    run_batch(raster, "segment", tmp_path / "a.gpkg", models=engine(), options=OPTIONS)
    small = SmallGpuEngine(fits=3)
    options = BatchOptions(tile_size_px=256, overlap_px=32, batch_size=8)
    summary = run_batch(raster, "segment", tmp_path / "b.gpkg", models=small, options=options)
    succeeded = [window for call in small.calls if len(call) <= 3 for window in call]
    assert len(succeeded) == len(set(succeeded)) == 12  # every tile inferred once
    assert [len(call) for call in small.calls[:3]] == [8, 4, 2]  # 8 -> 4 -> 2, then 2 at a time
    assert summary.batch_size == 2 and summary.oom_splits == 2 and summary.counts == {"ok": 12}
    assert max(len(call) for call in small.calls[3:]) == 2
    assert sorted(tiles(tmp_path / "b.gpkg")["tile_id"]) == list(range(12))
    assert _normalized(tmp_path / "a.gpkg") == _normalized(tmp_path / "b.gpkg")


def test_auto_batch_size_on_a_cpu_is_one(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif", height=300, width=300)
    options = BatchOptions(tile_size_px=256, overlap_px=32, batch_size="auto")
    summary = run_batch(raster, "segment", tmp_path / "out.gpkg", models=engine(), options=options)
    assert summary.batch_size == 1 and summary.counts == {"ok": 4}
    with pytest.raises(InputError, match="--batch-size"):
        BatchOptions(batch_size=0)


def _normalized(path: Path) -> list[str]:
    frame = segments(path)
    return sorted(shapely.to_wkt(shapely.normalize(g), rounding_precision=6) for g in frame.geometry)


# --- the real path with the tiny models -------------------------------------------------------------


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "think2seg", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def _committed_tiles(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as connection:
            return connection.execute("SELECT count(*) FROM tiles").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_tiny_models_full_path_with_batches(tmp_path, tiny_lvlm_dir, tiny_sam2_dir):
    raster = write_raster(tmp_path / "scene.tif", np.stack([scene_mask(400, 480).astype(np.uint8) * 200 + 20] * 3))
    common = [
        "--tile-size-px",
        "256",
        "--overlap-px",
        "32",
        "--quiet",
        *tiny_model_flags(tiny_lvlm_dir, tiny_sam2_dir),
    ]
    outs = []
    for batch_size in ("1", "4"):
        out = tmp_path / f"b{batch_size}.gpkg"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "think2seg",
                "batch",
                str(raster),
                "segment the river",
                "-o",
                str(out),
                "--batch-size",
                batch_size,
                *common,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        assert "segmented now 4 (ok 4)" in done.stdout
        outs.append(out)
    first, second = (tiles(o) for o in outs)
    assert first["raw_answer"].tolist() == second["raw_answer"].tolist()
    assert json.loads(pyogrio.read_dataframe(outs[0], layer="runs")["params"][0])["tile_size_px"] == 256
    result = segments(outs[0])
    assert len(result) > 0 and result.geometry.is_valid.all() and (result["tiles"] >= 1).all()
    footprint = box(*(UTM_TRANSFORM @ (0, 400)), *(UTM_TRANSFORM @ (480, 0)))
    assert result.geometry.within(footprint.buffer(1e-6)).all()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--aoi", "missing.geojson"], "AOI file"),
        (["--overlap-px", "600", "--tile-size-px", "1000"], "half the tile size"),
        (["--bounds", "0", "0", "10", "10"], "outside"),
        (["--min-area-m2", "5", "--pixel-coords"], "minimum area"),
    ],
)
def test_cli_refuses_bad_batch_input_with_one_line(tmp_path, capsys, extra, match):
    from think2seg.cli import main

    raster, _ = write_scene(tmp_path / "scene.tif", height=200, width=200)
    args = [
        "batch",
        str(raster),
        "segment",
        "-o",
        str(tmp_path / "out.gpkg"),
        "--lvlm",
        str(tmp_path / "no-model"),
        *extra,
    ]
    assert main([a.replace("missing.geojson", str(tmp_path / "missing.geojson")) for a in args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("think2seg: error:") and match in err[0]
    assert not (tmp_path / "out.gpkg").exists()


def test_cli_refuses_to_overwrite_without_a_flag(tmp_path, capsys):
    from think2seg.cli import main

    raster, _ = write_scene(tmp_path / "scene.tif", height=200, width=200)
    (tmp_path / "out.gpkg").write_bytes(b"keep")
    assert main(["batch", str(raster), "segment", "-o", str(tmp_path / "out.gpkg")]) == 1
    assert "--resume" in capsys.readouterr().err and (tmp_path / "out.gpkg").read_bytes() == b"keep"


def test_models_that_fail_to_load_leave_no_output(tmp_path, capsys):
    from think2seg.cli import main

    raster, _ = write_scene(tmp_path / "scene.tif", height=200, width=200)
    out = tmp_path / "out.gpkg"
    assert main(["batch", str(raster), "segment", "-o", str(out), "--lvlm", str(tmp_path / "no-model")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_progress_reports_and_stop_leaves_a_resumable_run(tmp_path):
    import threading

    from think2seg.errors import Cancelled

    raster, mask = write_scene(tmp_path / "scene.tif")
    out, stop, seen = tmp_path / "out.gpkg", threading.Event(), []

    def progress(update) -> None:
        seen.append((update.done, update.total, update.eta_s))
        if update.done == 4:
            stop.set()

    with pytest.raises(Cancelled, match="stopped after 4 tiles"):
        run_batch(raster, "segment", out, models=engine(), options=OPTIONS, on_progress=progress, stop=stop)
    assert [s[:2] for s in seen] == [(1, 12), (2, 12), (3, 12), (4, 12)] and all(s[2] is not None for s in seen)
    assert len(tiles(out)) == 4
    summary = run_batch(
        raster, "segment", out, models=engine(), options=BatchOptions(tile_size_px=256, overlap_px=32, resume=True)
    )
    assert summary.tiles_before == 4 and sum(g.area for g in segments(out).geometry) == pytest.approx(
        mask.sum() * PIXEL**2
    )


def test_a_run_killed_while_its_file_was_set_up_resumes(tmp_path):
    """Killed between writing the runs layer and the others: --resume starts the (empty) run afresh."""
    raster, mask = write_scene(tmp_path / "scene.tif")
    out = tmp_path / "out.gpkg"
    run_batch(raster, "segment", out, models=engine(), options=OPTIONS)
    runs = pyogrio.read_dataframe(out, layer="runs")
    out.unlink()
    pyogrio.write_dataframe(runs, out, layer="runs", driver="GPKG")  # what such a kill leaves
    summary = run_batch(raster, "segment", out, models=engine(), options=BatchOptions(**OPTIONS_KW, resume=True))
    assert summary.tiles_before == 0 and summary.processed == 12 and len(tiles(out)) == 12
    assert sum(g.area for g in segments(out).geometry) == pytest.approx(mask.sum() * PIXEL**2)
