"""Batch runs on Ray model workers (local instance, CPU shares) with the tiny models.

The reference for every check is the single-process run of each raster: the same polygons,
compared geometry by geometry. One Ray instance serves the module's in-process runs.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from affine import Affine

from think2seg.batch.options import BatchOptions, ModelSpec
from think2seg.batch.runner import run_batch
from think2seg.errors import Cancelled, ModelError

from conftest import tiny_model_flags
from rasters import write_raster

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

QUESTION = "segment the river"  # the tiny model's shortest answer with an instance
GRID = {"tile_size_px": 160, "overlap_px": 32}  # 288 x 160 px rasters: 2 tiles each


def _raster(path: Path, crs: str, transform: Affine, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:160, 0:288]
    ponds = ((xx - 90 - 10 * seed) ** 2 + (yy - 100) ** 2 < 60**2) | (
        (xx - 210) ** 2 + (yy - 200 + 8 * seed) ** 2 < 50**2
    )
    red = np.where(ponds, 40, 180).astype(np.uint8) + rng.integers(0, 6, ponds.shape).astype(np.uint8)
    return write_raster(path, np.stack([red, red // 2 + 60, 255 - red]), crs=crs, transform=transform)


@pytest.fixture(scope="module")
def three_rasters(tmp_path_factory) -> list[Path]:
    """Two rasters in UTM 33N and one in UTM 34N."""
    folder = tmp_path_factory.mktemp("rasters")
    return [
        _raster(folder / "a.tif", "EPSG:32633", Affine(0.5, 0, 512000.0, 0, -0.5, 5262000.0), 0),
        _raster(folder / "b.tif", "EPSG:32633", Affine(0.5, 0, 513000.0, 0, -0.5, 5262000.0), 1),
        _raster(folder / "c.tif", "EPSG:32634", Affine(0.5, 0, 290000.0, 0, -0.5, 5262000.0), 2),
    ]


@pytest.fixture(scope="module")
def models(tiny_lvlm_dir, tiny_sam2_dir) -> ModelSpec:
    return ModelSpec(lvlm=str(tiny_lvlm_dir), segmenter=str(tiny_sam2_dir), device="cpu")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def single_runs(three_rasters, models, tmp_path_factory) -> dict[str, Path]:
    """source -> the output of the single-process run of that raster alone (in EPSG:32633)."""
    folder = tmp_path_factory.mktemp("reference")
    outputs = {}
    for raster in three_rasters:
        out = folder / f"{raster.stem}.gpkg"
        run_batch(raster, QUESTION, out, models=models, options=BatchOptions(**GRID, target_crs="EPSG:32633"))
        outputs[str(raster.resolve())] = out
    return outputs


@pytest.fixture(scope="module")
def reference(single_runs) -> dict[str, list[str]]:
    """source -> normalized polygons of the single-process run of that raster alone."""
    result = {source: _polygons(out, source) for source, out in single_runs.items()}
    assert all(result.values()), "every raster must have polygons to compare"
    return result


def _polygons(path: Path, source: str) -> list[str]:
    frame = pyogrio.read_dataframe(path, layer="segments", where=f"source = '{source}'")
    return sorted(shapely.to_wkb(shapely.normalize(g), hex=True) for g in frame.geometry)


def _workers_options(**given) -> BatchOptions:
    return BatchOptions(**GRID, target_crs="EPSG:32633", workers=2, **given)


def test_two_workers_over_three_rasters_give_the_single_process_polygons(
    local_ray, three_rasters, models, reference, tmp_path
):
    out = tmp_path / "workers.gpkg"
    summary = run_batch(three_rasters, QUESTION, out, models=models, options=_workers_options())
    assert summary.rasters == 3 and summary.tiles_total == 6 and summary.counts == {"ok": 6}
    assert summary.workers == 2 and summary.retries == 0 and summary.reprojected
    for source, polygons in reference.items():
        assert _polygons(out, source) == polygons  # exactly the same geometries
    tiles = pyogrio.read_dataframe(out, layer="tiles", read_geometry=False)
    assert sorted(tiles.groupby("source").size().tolist()) == [2, 2, 2]
    runs = pyogrio.read_dataframe(out, layer="runs", read_geometry=False)
    assert set(runs["raster_crs"]) == {"EPSG:32633", "EPSG:32634"} and set(runs["output_crs"]) == {"EPSG:32633"}
    assert pyogrio.read_info(out, layer="segments")["crs"] == "EPSG:32633"


def test_workers_killed_mid_run_lose_and_repeat_no_tile(local_ray, three_rasters, models, reference, tmp_path):
    """Both workers are killed (``ray.kill``; Ray restarts them) when the first tiles are in: whichever
    held tiles then, those tiles must be run again, once."""
    out = tmp_path / "killed.gpkg"
    killed = threading.Event()
    seen = []

    def kill_the_workers(progress) -> None:
        seen.append(progress)
        if not killed.is_set():
            killed.set()
            for actor in ray.util.list_named_actors(all_namespaces=True):
                if "worker" in actor["name"]:
                    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=False)

    summary = run_batch(
        three_rasters, QUESTION, out, models=models, options=_workers_options(), on_progress=kill_the_workers
    )
    assert killed.is_set()
    assert summary.counts == {"ok": 6} and summary.retries >= 1, summary
    tiles = pyogrio.read_dataframe(out, layer="tiles", read_geometry=False)
    assert len(tiles) == 6 and not tiles.duplicated(["source", "tile_id"]).any()
    for source, polygons in reference.items():
        assert _polygons(out, source) == polygons
    assert seen[-1].retries == summary.retries and seen[-1].workers == 2


def _committed_tiles(path: Path) -> int:
    try:
        with sqlite3.connect(path, timeout=1) as connection:
            return connection.execute("SELECT count(*) FROM tiles").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_driver_killed_with_sigkill_resumes_to_the_same_polygons(
    three_rasters, single_runs, reference, tiny_lvlm_dir, tiny_sam2_dir, tmp_path
):
    """``kill -9`` of a run with workers, then ``--resume`` (here in one process): the finished
    tiles are kept as they were, and every layer ends as in the single-process runs."""
    out = tmp_path / "driver.gpkg"
    command = [
        sys.executable,
        "-m",
        "think2seg",
        "batch",
        *map(str, three_rasters),
        QUESTION,
        "-o",
        str(out),
        "--tile-size-px",
        "160",
        "--overlap-px",
        "32",
        "--target-crs",
        "EPSG:32633",
        "--quiet",
        *tiny_model_flags(tiny_lvlm_dir, tiny_sam2_dir),
    ]
    process = subprocess.Popen([*command, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    # Killed at the first committed tile (polled often: two workers can finish the 6 tiles fast).
    while (not out.exists() or _committed_tiles(out) < 1) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    before = _committed_tiles(out)
    assert 1 <= before < 6, "the driver must be killed mid-way"
    kept = pyogrio.read_dataframe(out, layer="tiles", read_geometry=False)[["source", "tile_id", "attempt"]]

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"finished earlier {before}" in resumed.stdout
    for source, polygons in reference.items():
        assert _polygons(out, source) == polygons
    after = pyogrio.read_dataframe(out, layer="tiles", read_geometry=False)
    assert len(after) == 6 and not after.duplicated(["source", "tile_id"]).any()
    assert kept.merge(after, on=["source", "tile_id", "attempt"]).shape[0] == len(kept)  # not recomputed
    for layer in ("prompt_boxes", "prompt_points", "tile_pieces"):
        counts = pyogrio.read_dataframe(out, layer=layer, read_geometry=False).groupby("source").size()
        for source, single in single_runs.items():
            assert counts[source] == pyogrio.read_info(single, layer=layer)["features"], (layer, source)


def test_workers_that_cannot_load_the_models_say_why_and_leave_no_output(local_ray, three_rasters, tmp_path):
    out = tmp_path / "none.gpkg"
    missing = ModelSpec(lvlm=str(tmp_path / "no-such-model"), segmenter=str(tmp_path / "no-sam"), device="cpu")
    with pytest.raises(ModelError, match="all 2 workers failed .*no-sam does not exist"):
        run_batch(three_rasters, QUESTION, out, models=missing, options=_workers_options())
    assert not out.exists()


def test_stopping_a_run_stops_its_workers_and_leaves_it_resumable(
    local_ray, three_rasters, models, reference, tmp_path
):
    """What Ctrl-C does (the CLI turns it into the same unwinding): workers gone, output resumable."""
    out = tmp_path / "stopped.gpkg"
    stop = threading.Event()
    with pytest.raises(Cancelled):
        run_batch(
            three_rasters,
            QUESTION,
            out,
            models=models,
            options=_workers_options(),
            on_progress=lambda _: stop.set(),
            stop=stop,
        )
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if "worker" in a["name"]]
    done = pyogrio.read_info(out, layer="tiles")["features"]
    assert 1 <= done < 6
    summary = run_batch(
        three_rasters, QUESTION, out, models=models, options=BatchOptions(**GRID, target_crs="EPSG:32633", resume=True)
    )
    assert summary.tiles_before == done and summary.processed == 6 - done
    for source, polygons in reference.items():
        assert _polygons(out, source) == polygons


def test_a_server_job_runs_on_workers_and_reports_their_figures(local_ray, three_rasters, models, reference, tmp_path):
    from fastapi.testclient import TestClient

    from think2seg.engine import Engine
    from think2seg.server.app import create_app
    from think2seg.server.settings import ServerSettings

    from conftest import BoxSegmenter, FixedPrompter

    settings = ServerSettings(
        data_roots=(tmp_path, three_rasters[0].parent),
        token_file=tmp_path / "token",
        lvlm=models.lvlm,
        segmenter=models.segmenter,
        device="cpu",
        job_workers=2,
    )
    app = create_app(settings, Engine(FixedPrompter("unused"), BoxSegmenter()), token="t" * 24)
    headers = {"Authorization": f"Bearer {'t' * 24}"}
    raster, out = three_rasters[0], tmp_path / "job.gpkg"
    request = {"raster_path": str(raster), "output_path": str(out), "question": QUESTION, **GRID}
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        job = client.post("/v1/jobs", json=request, headers=headers).json()
        seen = []
        deadline = time.monotonic() + 240
        while (status := client.get(f"/v1/jobs/{job['id']}", headers=headers).json())["state"] == "running":
            seen.append(status)
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
    assert status["state"] == "done", status
    assert status["workers"] == 2 and status["tiles_done"] == 2 and status["tiles_per_s"] > 0
    assert any(s["workers_alive"] for s in seen) and status["workers_alive"] is None
    assert _polygons(out, str(raster.resolve())) == reference[str(raster.resolve())]  # a.tif is in EPSG:32633
