"""Change jobs over HTTP (POST /v1/change, followed through /v1/jobs/{id}) and run_change's bounds,
with generated rasters whose objects are known and models that find exactly the bright ones."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyogrio
import pytest
from affine import Affine
from rasterio.warp import transform_bounds
from test_change import ADDED, KEPT, REMOVED, BlobPrompter, BrightSegmenter, area_m2, blob_engine, footprint, picture
from test_server import AUTH, make_client, wait_job

from think2seg.change.run import ChangeOptions, run_change
from think2seg.engine import Engine
from think2seg.errors import BoundsError
from think2seg.server.schemas import JobStatus

from conftest import FIXTURES, FixedPrompter
from rasters import UTM_TRANSFORM, write_raster

QUESTION = "every bright roof"
CHANGE_LAYERS = ("appeared", "disappeared", "persisted")
# In map units of EPSG:32633 (UTM_TRANSFORM: 0.5 m pixels from 512000 E, 5262000 N)
WEST_HALF = [512000.0, 5261850.0, 512075.0, 5262000.0]  # columns 0..150: KEPT and REMOVED, not ADDED
NORTH_PART = [512000.0, 5261900.0, 512150.0, 5262000.0]  # rows 0..200: KEPT whole, ADDED and REMOVED cut


@pytest.fixture
def dates(tmp_path: Path) -> tuple[Path, Path]:
    """BEFORE with KEPT and REMOVED, AFTER with KEPT and ADDED, on the same grid."""
    before = write_raster(tmp_path / "before.tif", picture(KEPT, REMOVED, seed=1))
    after = write_raster(tmp_path / "after.tif", picture(KEPT, ADDED, seed=2))
    return before, after


def change_request(before: Path, after: Path, output: Path, **fields) -> dict:
    return {
        "before_path": str(before),
        "after_path": str(after),
        "question": QUESTION,
        "output_path": str(output),
        **fields,
    }


def change_layers(path: Path) -> dict:
    return {name: pyogrio.read_dataframe(path, layer=name) for name in CHANGE_LAYERS}


class GatedPrompter(BlobPrompter):
    """BlobPrompter that holds its first answer until ``go`` is set (``asked`` says it was asked)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked, self.go = threading.Event(), threading.Event()

    def generate(self, view, question, *, on_text=None):
        self.asked.set()
        self.go.wait(30)
        return super().generate(view, question, on_text=on_text)


# --- run_change's bounds -----------------------------------------------------------------------------------


def test_bounds_limit_the_change_to_the_common_extent_inside_them(dates, tmp_path):
    before, after = dates
    out = tmp_path / "north.gpkg"
    summary = run_change(before, after, QUESTION, out, models=blob_engine(), options=ChangeOptions(bounds=NORTH_PART))
    found = change_layers(out)
    cut = {"appeared": (150, 200, 190, 260), "disappeared": (180, 200, 60, 120), "persisted": KEPT}
    for name, rect in cut.items():
        assert len(found[name]) == 1, name
        assert found[name].geometry[0].equals(footprint(rect)), name  # cut exactly at the bounds' edge
        assert summary.layers[name].area_m2 == pytest.approx(area_m2(rect)), name
    assert summary.grid_px == (300, 200)


def test_bounds_that_miss_the_common_extent_or_are_malformed_are_refused(dates, tmp_path):
    before, after = dates
    elsewhere = ChangeOptions(bounds=(600000.0, 5000000.0, 600100.0, 5000100.0))
    with pytest.raises(BoundsError, match="miss the extent both rasters cover"):
        run_change(before, after, QUESTION, tmp_path / "x.gpkg", models=blob_engine(), options=elsewhere)
    assert not (tmp_path / "x.gpkg").exists()
    for bounds in ((1.0, 2.0, 3.0), (5.0, 0.0, 1.0, 1.0), (0.0, 0.0, float("nan"), 1.0)):
        with pytest.raises(BoundsError, match="bounds must"):
            ChangeOptions(bounds=bounds)


# --- POST /v1/change -------------------------------------------------------------------------------------


def test_a_change_job_finishes_with_the_three_layers(dates, tmp_path):
    before, after = dates
    out = tmp_path / "change.gpkg"
    with make_client(tmp_path, engine=blob_engine()) as client:
        started = client.post("/v1/change", json=change_request(before, after, out), headers=AUTH)
        assert started.status_code == 202, started.json()
        job = JobStatus.model_validate(started.json())
        assert (job.raster_path, job.output_path, job.question) == (str(before), str(out), QUESTION)
        status = wait_job(client, job.id)
        listed = client.get("/v1/jobs", headers=AUTH).json()["jobs"]
    assert status["state"] == "done", status["message"]
    assert (status["tiles_done"], status["tiles_total"], status["polygons"]) == (2, 2, 3)
    assert status["message"] == (
        "appeared 1 polygon, 1,400.0 m²; disappeared 1 polygon, 900.0 m²; persisted 1 polygon, 1,050.0 m² (EPSG:32633)"
    )
    assert [j["id"] for j in listed] == [job.id]
    golden = json.loads((FIXTURES / "api" / "job_status.reply.json").read_text())
    assert set(status) == set(golden)  # a change job is followed like a batch job
    found = change_layers(out)
    for name, rect in (("appeared", ADDED), ("disappeared", REMOVED), ("persisted", KEPT)):
        assert len(found[name]) == 1 and found[name].geometry[0].equals(footprint(rect)), name
        assert found[name].crs.to_epsg() == 32633


def test_bounds_in_another_crs_are_taken_into_befores_crs(dates, tmp_path):
    before, after = dates
    out = tmp_path / "west.gpkg"
    west_wgs84 = list(transform_bounds("EPSG:32633", "EPSG:4326", *WEST_HALF))
    request = change_request(before, after, out, bounds=west_wgs84, bounds_crs="EPSG:4326", min_change_m2=30.0)
    with make_client(tmp_path, engine=blob_engine()) as client:
        job = client.post("/v1/change", json=request, headers=AUTH).json()
        status = wait_job(client, job["id"])
    assert status["state"] == "done", status["message"]
    found = change_layers(out)
    assert found["appeared"].empty  # ADDED lies east of the bounds
    assert found["disappeared"].geometry[0].equals(footprint(REMOVED))
    assert found["persisted"].geometry[0].equals(footprint(KEPT))
    runs = pyogrio.read_dataframe(out, layer="runs", read_geometry=False)
    assert set(runs["min_change_m2"]) == {30.0}


def test_the_golden_request_is_accepted(dates, tmp_path):
    before, after = dates
    golden = json.loads((FIXTURES / "api" / "change.request.json").read_text())
    paths = {"before_path": str(before), "after_path": str(after), "output_path": str(tmp_path / "golden.gpkg")}
    with make_client(tmp_path, engine=blob_engine()) as client:
        job = client.post("/v1/change", json={**golden, **paths}, headers=AUTH)
        assert job.status_code == 202, job.json()
        assert wait_job(client, job.json()["id"])["state"] == "done"
        assert "/v1/change" in client.get("/openapi.json", headers=AUTH).json()["paths"]


def test_rasters_that_do_not_overlap_get_the_error_envelope(dates, tmp_path):
    before, _ = dates
    far = write_raster(tmp_path / "far.tif", picture(KEPT), transform=Affine(0.5, 0, 600000.0, 0, -0.5, 5000000.0))
    with make_client(tmp_path, engine=blob_engine()) as client:
        reply = client.post("/v1/change", json=change_request(before, far, tmp_path / "x.gpkg"), headers=AUTH)
        missed = client.post(
            "/v1/change",
            json=change_request(before, far.with_name("after.tif"), tmp_path / "x.gpkg", bounds=[0, 0, 1, 1]),
            headers=AUTH,
        )
        assert client.get("/v1/jobs", headers=AUTH).json()["jobs"] == []  # refused before any job started
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "bounds_outside"
    assert "do not overlap" in reply.json()["error"]["message"]
    assert missed.status_code == 422 and "miss the extent both rasters cover" in missed.json()["error"]["message"]
    assert not (tmp_path / "x.gpkg").exists()


@pytest.mark.parametrize("field", ["before_path", "after_path", "output_path"])
def test_every_path_stays_inside_the_data_roots(dates, tmp_path, field):
    before, after = dates
    outside = tmp_path.parent / "outside"
    outside.mkdir(exist_ok=True)
    request = change_request(before, after, tmp_path / "x.gpkg")
    request[field] = str(outside / Path(request[field]).name)
    with make_client(tmp_path, engine=blob_engine()) as client:
        reply = client.post("/v1/change", json=request, headers=AUTH)
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "path_not_allowed"
    assert field in reply.json()["error"]["message"] and "--data-root" in reply.json()["error"]["message"]


def test_bad_requests_get_the_error_envelope(dates, tmp_path):
    before, after = dates
    existing = tmp_path / "old.gpkg"
    existing.write_bytes(b"")
    cases = [
        (change_request(before, after, existing), 409, "output_exists", "overwrite=true"),
        (change_request(before, after, tmp_path / "x.shp"), 422, "invalid_input", "must end in .gpkg"),
        (change_request(before, after, tmp_path / "x.gpkg", question="  "), 422, "invalid_input", "empty"),
        (change_request(before, tmp_path / "none.tif", tmp_path / "x.gpkg"), 404, "not_found", "none.tif"),
        (change_request(before, after, tmp_path / "x.gpkg", min_change_m2=-1), 422, "invalid_input", "min_change_m2"),
        (change_request(before, after, tmp_path / "x.gpkg", tile_size_px=256), 422, "invalid_input", "tile_size_px"),
    ]
    with make_client(tmp_path, engine=blob_engine()) as client:
        for request, status, code, words in cases:
            reply = client.post("/v1/change", json=request, headers=AUTH)
            assert (reply.status_code, reply.json()["error"]["code"]) == (status, code), request
            assert words in reply.json()["error"]["message"], reply.json()
        assert client.post("/v1/change", json=change_request(before, after, tmp_path / "x.gpkg")).status_code == 401


def test_a_cancelled_change_job_stops_before_its_next_date_and_writes_nothing(dates, tmp_path):
    before, after = dates
    out = tmp_path / "change.gpkg"
    prompter = GatedPrompter()
    with make_client(tmp_path, engine=Engine(prompter, BrightSegmenter())) as client:
        job = client.post("/v1/change", json=change_request(before, after, out), headers=AUTH).json()
        assert prompter.asked.wait(30)  # BEFORE is being answered
        assert client.delete(f"/v1/jobs/{job['id']}", headers=AUTH).json()["state"] in ("running", "cancelled")
        prompter.go.set()
        status = wait_job(client, job["id"])
    assert status["state"] == "cancelled" and status["tiles_done"] == 1, status
    assert "nothing was written" in status["message"] and "/v1/change" in status["message"]
    assert prompter.calls == 1  # AFTER was never asked
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".change.gpkg")] == []  # no work files left


def test_a_date_without_a_usable_answer_fails_the_job_and_writes_nothing(dates, tmp_path):
    before, after = dates
    out = tmp_path / "change.gpkg"
    with make_client(tmp_path, engine=Engine(FixedPrompter("no json here"), BrightSegmenter())) as client:
        job = client.post("/v1/change", json=change_request(before, after, out), headers=AUTH).json()
        status = wait_job(client, job["id"])
    assert status["state"] == "failed" and "no usable answer" in status["message"], status
    assert not out.exists()


def test_a_running_change_job_counts_its_dates_as_tiles(dates, tmp_path):
    before, after = dates
    prompter = GatedPrompter()
    with make_client(tmp_path, engine=Engine(prompter, BrightSegmenter())) as client:
        job = client.post("/v1/change", json=change_request(before, after, tmp_path / "c.gpkg"), headers=AUTH).json()
        assert prompter.asked.wait(30)
        running = client.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()
        assert (running["state"], running["tiles_done"], running["tiles_total"]) == ("running", 0, 2)
        assert running["message"] == "0 of 2 dates segmented" and running["polygons"] is None
        prompter.go.set()
        done = wait_job(client, job["id"])
    assert (done["state"], done["tiles_done"], done["finished_at"] is not None) == ("done", 2, True)


def test_the_utm_fixture_is_what_the_bounds_above_assume():
    assert UTM_TRANSFORM @ (150, 300) == (WEST_HALF[2], WEST_HALF[1])
    assert UTM_TRANSFORM @ (300, 200) == (NORTH_PART[2], NORTH_PART[1])
