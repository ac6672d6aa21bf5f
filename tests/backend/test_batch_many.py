"""Several rasters in one batch run (in this process): sources, CRSs, per-raster resume, bad inputs."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from test_batch import ThresholdSegmenter, engine, write_scene

from think2seg.batch.options import BatchOptions
from think2seg.batch.runner import run_batch
from think2seg.errors import InputError, OutputError
from think2seg.geo.areas import areas_m2
from think2seg.geo.reproject import Reprojection

from rasters import write_raster

GRID = {"tile_size_px": 256, "overlap_px": 32}
ZONE_34 = Affine(0.5, 0, 290000.0, 0, -0.5, 5262000.0)


def _segments(path, source=None):
    where = f"source = '{source}'" if source else None
    return pyogrio.read_dataframe(path, layer="segments", where=where)


def _shapes(frame) -> list[str]:
    return sorted(shapely.to_wkb(shapely.normalize(g), hex=True) for g in frame.geometry)


def test_every_row_names_its_raster_and_each_raster_matches_its_own_run(tmp_path):
    a, _ = write_scene(tmp_path / "a.tif", height=300, width=400)
    b, _ = write_scene(
        tmp_path / "b.tif", height=300, width=300, transform=Affine(0.5, 0, 600000.0, 0, -0.5, 5262000.0)
    )
    out = tmp_path / "both.gpkg"
    summary = run_batch([a, b], "segment", out, models=engine(), options=BatchOptions(**GRID))
    assert summary.rasters == 2 and summary.tiles_total == 4 + 4 and not summary.reprojected
    for layer in ("tiles", "tile_pieces", "prompt_boxes", "prompt_points", "segments"):
        sources = set(pyogrio.read_dataframe(out, layer=layer, read_geometry=False)["source"])
        assert sources == {str(a.resolve()), str(b.resolve())}, layer
    for raster in (a, b):
        alone = tmp_path / f"{raster.stem}.gpkg"
        run_batch(raster, "segment", alone, models=engine(), options=BatchOptions(**GRID))
        assert _shapes(_segments(out, str(raster.resolve()))) == _shapes(_segments(alone))


def test_adding_a_raster_and_resuming_runs_only_the_new_one(tmp_path):
    a, _ = write_scene(tmp_path / "a.tif", height=300, width=300)
    b, _ = write_scene(
        tmp_path / "b.tif", height=300, width=300, transform=Affine(0.5, 0, 600000.0, 0, -0.5, 5262000.0)
    )
    out = tmp_path / "run.gpkg"
    first = run_batch([a], "segment", out, models=engine(), options=BatchOptions(**GRID))
    a_polygons = _shapes(_segments(out, str(a.resolve())))
    counting = ThresholdSegmenter()
    second = run_batch([a, b], "segment", out, models=engine(counting), options=BatchOptions(**GRID, resume=True))
    assert second.tiles_before == first.tiles_total == 4 and second.counts == {"ok": 4}
    assert counting.encoded == 4  # b's tiles only
    assert _shapes(_segments(out, str(a.resolve()))) == a_polygons
    runs = pyogrio.read_dataframe(out, layer="runs", read_geometry=False)
    assert len(runs) == 2 and runs["run_id"].nunique() == 1
    # resuming with only b keeps a's results
    third = run_batch([b], "segment", out, models=engine(), options=BatchOptions(**GRID, resume=True))
    assert third.tiles_before == 4 and third.processed == 0
    assert _shapes(_segments(out, str(a.resolve()))) == a_polygons


def test_a_raster_with_changed_parameters_is_refused_by_name(tmp_path):
    a, _ = write_scene(tmp_path / "a.tif", height=300, width=300)
    out = tmp_path / "run.gpkg"
    run_batch(
        [a], "segment", out, models=engine(), options=BatchOptions(**GRID, bounds=(512000, 5261900, 512100, 5262000))
    )
    with pytest.raises(InputError, match=r"a\.tif: region"):
        run_batch([a], "segment", out, models=engine(), options=BatchOptions(**GRID, resume=True))


def test_a_raster_in_another_crs_cannot_join_a_run_without_target_crs(tmp_path):
    a, _ = write_scene(tmp_path / "a.tif", height=300, width=300)
    c = write_raster(tmp_path / "c.tif", np.full((3, 300, 300), 90, np.uint8), crs="EPSG:32634", transform=ZONE_34)
    out = tmp_path / "run.gpkg"
    run_batch([a], "segment", out, models=engine(), options=BatchOptions(**GRID))
    before = out.read_bytes()
    with pytest.raises(InputError, match="c.tif is in EPSG:32634 but .* holds rasters in EPSG:32633"):
        run_batch([c], "segment", out, models=engine(), options=BatchOptions(**GRID, resume=True))
    assert out.read_bytes() == before
    with pytest.raises(InputError, match="--target-crs EPSG:32633"):  # both at once: said before anything opens
        run_batch([a, c], "segment", out, models=engine(), options=BatchOptions(**GRID, resume=True))


def test_target_crs_reprojects_the_output_and_measures_areas_in_the_source_crs(tmp_path):
    c, _ = write_scene(tmp_path / "c.tif", height=300, width=300, transform=ZONE_34)
    with rasterio.open(c, "r+") as dataset:
        dataset.crs = CRS.from_epsg(32634)
    own = tmp_path / "own.gpkg"
    run_batch(c, "segment", own, models=engine(), options=BatchOptions(**GRID))
    out = tmp_path / "reprojected.gpkg"
    summary = run_batch(c, "segment", out, models=engine(), options=BatchOptions(**GRID, target_crs="EPSG:32633"))
    assert summary.reprojected and summary.output_crs == "EPSG:32633"
    mine, theirs = _segments(own), _segments(out)
    assert pyogrio.read_info(out, layer="segments")["crs"] == "EPSG:32633"
    assert np.allclose(sorted(theirs["area_m2"]), sorted(mine["area_m2"]))  # measured before reprojecting
    moved = Reprojection(CRS.from_epsg(32634), CRS.from_epsg(32633))(mine.geometry.to_numpy())
    assert _shapes(theirs) == sorted(
        shapely.to_wkb(shapely.normalize(g), hex=True) for g in shapely.orient_polygons(moved, exterior_cw=False)
    )
    assert not np.allclose(areas_m2(list(theirs.geometry), CRS.from_epsg(32633)), theirs["area_m2"], rtol=1e-9)
    runs = pyogrio.read_dataframe(out, layer="runs", read_geometry=False)
    assert runs["raster_crs"][0] == "EPSG:32634" and runs["output_crs"][0] == "EPSG:32633"
    assert json.loads(runs["params"][0])["target_crs"] == "EPSG:32633"
    for layer in ("tiles", "prompt_boxes", "prompt_points"):
        assert pyogrio.read_info(out, layer=layer)["crs"] == "EPSG:32633"


def test_a_raster_the_aoi_misses_is_skipped_by_name(tmp_path):
    a, _ = write_scene(tmp_path / "a.tif", height=300, width=300)
    far, _ = write_scene(
        tmp_path / "far.tif", height=300, width=300, transform=Affine(0.5, 0, 700000.0, 0, -0.5, 5262000.0)
    )
    bounds = (512000, 5261900, 512100, 5262000)
    summary = run_batch(
        [a, far], "segment", tmp_path / "o.gpkg", models=engine(), options=BatchOptions(**GRID, bounds=bounds)
    )
    assert (
        summary.rasters == 1 and len(summary.skipped_rasters) == 1 and summary.skipped_rasters[0].startswith("far.tif:")
    )


def test_an_old_single_raster_file_is_not_resumed(tmp_path):
    a, _ = write_scene(tmp_path / "a.tif", height=300, width=300)
    out = tmp_path / "run.gpkg"
    run_batch(a, "segment", out, models=engine(), options=BatchOptions(**GRID))
    with closing(sqlite3.connect(out)) as connection, connection:
        params = json.loads(connection.execute("SELECT params FROM runs").fetchone()[0])
        del params["layout"]
        connection.execute("UPDATE runs SET params = ?", (json.dumps(params),))
    with pytest.raises(OutputError, match="one raster per file"):
        run_batch(a, "segment", out, models=engine(), options=BatchOptions(**GRID, resume=True))


# --- bad inputs through the CLI: one line, exit status 1, nothing written ------------------------


def _cli(tmp_path, capsys, *arguments: str) -> tuple[int, str]:
    from think2seg.cli import main

    out = tmp_path / "out.gpkg"
    status = main(["batch", *arguments, "segment", "-o", str(out), "--lvlm", str(tmp_path / "no-model")])
    err = capsys.readouterr().err.strip().splitlines()
    assert not out.exists(), "nothing may be written"
    assert len(err) == 1, err
    return status, err[0]


def test_cli_bad_inputs_are_one_line_and_write_nothing(tmp_path, capsys):
    a, _ = write_scene(tmp_path / "a.tif", height=300, width=300)
    status, message = _cli(tmp_path, capsys, str(tmp_path / "nothing-*.tif"))
    assert status == 1 and "no raster matches" in message
    broken = tmp_path / "broken.tif"
    broken.write_text("not a raster")
    listed = tmp_path / "list.txt"
    listed.write_text(f"{a}\n{broken}\n")
    status, message = _cli(tmp_path, capsys, "--from-list", str(listed))
    assert status == 1 and "broken.tif" in message
    bare = write_raster(tmp_path / "bare.tif", np.full((3, 64, 64), 90, np.uint8), crs=None)
    status, message = _cli(tmp_path, capsys, str(a), str(bare))
    assert status == 1 and "bare.tif" in message and "CRS" in message
    c = write_raster(tmp_path / "c.tif", np.full((3, 64, 64), 90, np.uint8), crs="EPSG:32634", transform=ZONE_34)
    status, message = _cli(tmp_path, capsys, str(a), str(c))
    assert status == 1 and "--target-crs EPSG:32633" in message and "c.tif" in message


# --- how workers are placed (no Ray needed) --------------------------------------------------------


def test_workers_share_the_cpus_or_take_one_gpu_each():
    from think2seg.batch.options import ModelSpec
    from think2seg.batch.workers import actor_options
    from think2seg.errors import DeviceError

    cpu_only = {"CPU": 2.0}
    assert actor_options(cpu_only, ModelSpec(device="auto"), 2) == ({"num_cpus": 0.99}, "cpu")
    assert actor_options(cpu_only, ModelSpec(device="auto"), 8)[0]["num_cpus"] * 8 <= 2.0  # all fit at once
    gpus = {"CPU": 16.0, "GPU": 4.0}
    assert actor_options(gpus, ModelSpec(device="cuda:1"), 4) == ({"num_gpus": 1, "num_cpus": 1.0}, "cuda")
    assert actor_options(gpus, ModelSpec(device="cpu"), 4) == ({"num_cpus": 3.96}, "cpu")
    with pytest.raises(InputError, match="pass --workers 4"):
        actor_options(gpus, ModelSpec(), 5)
    with pytest.raises(DeviceError, match="no GPU"):
        actor_options(cpu_only, ModelSpec(device="cuda"), 1)


def test_workers_without_ray_or_with_a_loaded_engine_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    import builtins

    a, _ = write_scene(tmp_path / "a.tif", height=300, width=300)
    out = tmp_path / "o.gpkg"
    with pytest.raises(InputError, match="ModelSpec"):
        run_batch(a, "segment", out, models=engine(), options=BatchOptions(**GRID, workers=2))
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from think2seg.batch.options import ModelSpec

    with pytest.raises(InputError, match=r"think2seg\[ray\]"):
        run_batch(a, "segment", out, models=ModelSpec(), options=BatchOptions(**GRID, workers=2))
    assert not out.exists()
