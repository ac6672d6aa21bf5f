"""Batch jobs on Ray model workers: the request's ``workers``, `serve --workers`, the 422 without Ray,
and the figures a job reports. Ray is never started: ``run_batch`` is replaced by a fake."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from think2seg.batch.options import BatchProgress, BatchSummary, ModelSpec
from think2seg.engine import Engine
from think2seg.server import jobs
from think2seg.server.app import create_app
from think2seg.server.schemas import JobRequest, JobStatus
from think2seg.server.settings import ServerSettings
from think2seg.server.worker import QueuedEngine

from conftest import FIXTURES, BoxSegmenter, FixedPrompter
from rasters import scene, write_raster

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ONE_BOX = '<think>A field.</think> <answer>[{"bbox_2d": [84, 84, 420, 840], "positive_points": [[200, 400], [300, 500]]}]</answer>'
NO_RAY = "install think2seg[ray] on the backend"


def make_client(tmp_path: Path, **settings) -> TestClient:
    options = {"data_roots": (tmp_path,), "token_file": tmp_path / "token", **settings}
    app = create_app(ServerSettings(**options), Engine(FixedPrompter(ONE_BOX), BoxSegmenter()), token=TOKEN)
    return TestClient(app, base_url="http://127.0.0.1:8765")


def job_request(tmp_path: Path, **fields) -> dict:
    raster = tmp_path / "scene.tif"
    if not raster.exists():
        write_raster(raster, scene(300, 600))
    return {"raster_path": str(raster), "output_path": str(tmp_path / "out.gpkg"), "question": "q", **fields}


def wait_state(client: TestClient, job_id: str, test, timeout_s: float = 30) -> dict:
    """The job's first status that passes ``test``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
        if test(status):
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {status}")


@pytest.fixture
def ray_installed(monkeypatch) -> None:
    """As if Ray were installed (whether or not it is), so that nothing depends on this venv."""
    monkeypatch.setattr(jobs, "find_spec", lambda name: object() if name == "ray" else None)


@pytest.fixture
def no_ray(monkeypatch) -> None:
    monkeypatch.setattr(jobs, "find_spec", lambda name: None)


class FakeRun:
    """Stands in for ``run_batch``: once ``go`` is set, reports one progress with workers' figures;
    once ``release`` is, returns a summary. ``calls`` holds the keyword arguments it got."""

    PROGRESS = BatchProgress(
        done=120,
        total=400,
        counts={"ok": 30, "failed": 2},
        elapsed_s=10.0,
        workers=2,
        workers_alive=1,
        retries=3,
    )

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.go, self.release = threading.Event(), threading.Event()

    def run_through(self) -> None:
        self.go.set()
        self.release.set()

    def __call__(self, raster, question, output, **kwargs) -> BatchSummary:
        self.calls.append(kwargs)
        self.go.wait(30)
        kwargs["on_progress"](self.PROGRESS)
        self.release.wait(30)
        return BatchSummary(
            output=Path(output),
            tiles_total=400,
            tiles_before=88,
            counts={"ok": 310, "failed": 2},
            previously_failed=0,
            polygons=57,
            total_area_m2=1234.5,
        )


@pytest.fixture
def fake_run(monkeypatch) -> FakeRun:
    fake = FakeRun()
    monkeypatch.setattr(jobs, "run_batch", fake)
    yield fake
    fake.run_through()


# --- the request ---------------------------------------------------------------------------------------


def test_the_workers_field_is_optional_and_bounded(tmp_path):
    request = job_request(tmp_path)
    assert JobRequest.model_validate(request).workers is None  # None: the server's default
    for workers in (0, 1, 64):
        assert JobRequest.model_validate({**request, "workers": workers}).workers == workers
    for workers in (-1, 65, "two", 1.5):
        with pytest.raises(ValidationError):
            JobRequest.model_validate({**request, "workers": workers})
    schema = JobRequest.model_json_schema()["properties"]["workers"]
    assert "Ray model workers for this job" in schema["description"] and "server's own models" in schema["description"]


def test_a_workers_field_out_of_range_is_an_invalid_input(tmp_path):
    with make_client(tmp_path) as client:
        reply = client.post("/v1/jobs", json=job_request(tmp_path, workers=65), headers=AUTH)
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "invalid_input"
    assert "workers" in reply.json()["error"]["message"]


def test_workers_without_ray_are_refused_when_posted(tmp_path, no_ray, fake_run):
    with make_client(tmp_path) as client:
        reply = client.post("/v1/jobs", json=job_request(tmp_path, workers=2), headers=AUTH)
        assert reply.status_code == 422 and reply.json()["error"]["code"] == "ray_not_installed"
        assert NO_RAY in reply.json()["error"]["message"] and "workers=0" in reply.json()["error"]["message"]
        assert client.get("/v1/jobs", headers=AUTH).json()["jobs"] == []
    with make_client(tmp_path, job_workers=2) as client:  # the server's default asks for them too
        reply = client.post("/v1/jobs", json=job_request(tmp_path), headers=AUTH)
        assert reply.status_code == 422 and NO_RAY in reply.json()["error"]["message"]
        assert "serve --workers" in reply.json()["error"]["message"]
        fake_run.run_through()
        reply = client.post("/v1/jobs", json=job_request(tmp_path, workers=0), headers=AUTH)  # needs no Ray
        assert reply.status_code == 202
        wait_state(client, reply.json()["id"], lambda s: s["state"] == "done")
    assert fake_run.calls[0]["options"].workers == 0


# --- running on workers ------------------------------------------------------------------------------------


def test_a_job_on_workers_gets_the_servers_model_spec_and_reports_their_figures(tmp_path, ray_installed, fake_run):
    models = {"lvlm": "/models/think2seg-7b", "segmenter": "sam2:/models/sam2", "device": "cuda", "max_new_tokens": 512}
    settings = {**models, "compile": True, "ray_address": "ray://head:10001"}
    with make_client(tmp_path, **settings) as client:
        started = client.post("/v1/jobs", json=job_request(tmp_path, workers=2), headers=AUTH)
        assert started.status_code == 202
        job = JobStatus.model_validate(started.json())
        assert (job.workers, job.workers_alive, job.retries, job.tiles_per_s) == (2, 0, 0, None)  # none ready yet
        assert job.message == "starting 2 Ray model workers"
        fake_run.go.set()
        running = wait_state(client, job.id, lambda s: s["tiles_done"] == 120)
        fake_run.release.set()
        done = wait_state(client, job.id, lambda s: s["state"] != "running")
    (call,) = fake_run.calls
    assert call["models"] == ModelSpec(**models, compile=True)  # loaded by each worker, not by this process
    assert call["options"].workers == 2 and call["options"].ray_address == "ray://head:10001"
    assert running["state"] == "running" and running["tiles_total"] == 400 and running["failures"] == 2
    assert running["tiles_per_s"] == pytest.approx(3.2) and running["eta_s"] == pytest.approx(87.5)
    assert (running["workers"], running["workers_alive"], running["retries"]) == (2, 1, 3)
    assert running["message"].startswith("120 of 400 tiles, 3.2 tiles/s, 1 of 2 workers")
    assert done["state"] == "done" and done["message"] == "57 polygons from 400 tiles; 2 tile(s) failed: " + (
        "POST again with retry_failed=true to redo them"
    )
    assert done["workers"] == 2 and done["workers_alive"] is None and done["eta_s"] is None
    assert done["tiles_per_s"] == pytest.approx(3.2) and done["retries"] == 3
    golden = json.loads((FIXTURES / "api" / "job_status.reply.json").read_text())
    assert set(running) == set(done) == set(golden)  # the live replies have the golden file's fields


def test_the_servers_default_workers_apply_unless_the_request_says(tmp_path, ray_installed, fake_run):
    fake_run.run_through()
    with make_client(tmp_path, job_workers=3) as client:
        for fields, output in (({}, "a.gpkg"), ({"workers": 0}, "b.gpkg")):
            request = {**job_request(tmp_path), "output_path": str(tmp_path / output), **fields}
            reply = client.post("/v1/jobs", json=request, headers=AUTH)
            assert reply.status_code == 202
            wait_state(client, reply.json()["id"], lambda s: s["state"] == "done")
    default, own = fake_run.calls
    assert default["options"].workers == 3 and isinstance(default["models"], ModelSpec)
    assert own["options"].workers == 0 and isinstance(own["models"], QueuedEngine)  # the server's own models


def test_a_job_on_its_own_models_reports_no_workers(tmp_path, fake_run):
    fake_run.PROGRESS = BatchProgress(done=5, total=10, counts={"ok": 5}, elapsed_s=2.0)
    fake_run.run_through()
    with make_client(tmp_path) as client:
        job = client.post("/v1/jobs", json=job_request(tmp_path), headers=AUTH).json()
        assert job["workers"] == 0 and job["workers_alive"] is None
        done = wait_state(client, job["id"], lambda s: s["state"] == "done")
    assert done["workers"] == 0 and done["workers_alive"] is None and done["tiles_per_s"] == pytest.approx(2.5)


# --- think2seg serve --------------------------------------------------------------------------------------


def test_serve_workers_and_ray_address_become_settings(monkeypatch, capsys):
    from think2seg.cli import build_parser, serve
    from think2seg.cli.serve import settings_from_args

    monkeypatch.setattr(serve, "find_spec", lambda name: object())
    args = build_parser().parse_args(["serve", "--workers", "4", "--ray-address", "ray://head:10001"])
    settings = settings_from_args(args)
    assert (settings.job_workers, settings.ray_address) == (4, "ray://head:10001")
    default = settings_from_args(build_parser().parse_args(["serve"]))
    assert (default.job_workers, default.ray_address) == (0, None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--workers", "-1"])
    monkeypatch.setattr(serve, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as exited:
        settings_from_args(build_parser().parse_args(["serve", "--workers", "2"]))
    assert exited.value.code == 2 and "think2seg[ray]" in capsys.readouterr().err
    assert settings_from_args(build_parser().parse_args(["serve"])).job_workers == 0  # no Ray needed without workers
