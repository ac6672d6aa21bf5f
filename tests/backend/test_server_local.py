"""The backend the QGIS plugin starts for its analyst alone: `serve --any-path`, and an access log
without the health polls."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from think2seg.cli import main
from think2seg.engine import Engine
from think2seg.server.access_log import HealthPollFilter
from think2seg.server.app import create_app
from think2seg.server.settings import ServerSettings

from conftest import BoxSegmenter, FixedPrompter
from rasters import scene, write_raster

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ONE_BOX = '<think>A field.</think> <answer>[{"bbox_2d": [84, 84, 420, 840], "positive_points": [[200, 400], [300, 500]]}]</answer>'


def local_client(root: Path, *, any_path: bool) -> TestClient:
    """A server whose only data root is ``root``; ``any_path`` as `serve --any-path` sets it."""
    settings = ServerSettings(data_roots=(root,), token_file=root / "token", any_path=any_path)
    app = create_app(settings, Engine(FixedPrompter(ONE_BOX), BoxSegmenter()), token=TOKEN)
    return TestClient(app, base_url="http://127.0.0.1:8765")


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """(the data root, a folder outside it holding scene.tif), e.g. QGIS Processing's temporary folder."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    write_raster(elsewhere / "scene.tif", scene(300, 600))
    return root, elsewhere


def job_request(elsewhere: Path) -> dict:
    raster, output = elsewhere / "scene.tif", elsewhere / "out.gpkg"
    return {"raster_path": str(raster), "output_path": str(output), "question": "q", "tile_size_px": 256}


def wait_done(client: TestClient, job_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    status = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
    while status["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        status = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
    return status


# --- --any-path -------------------------------------------------------------------------------------


def test_paths_outside_the_data_roots_refused_without_any_path(folders):
    root, elsewhere = folders
    with local_client(root, any_path=False) as client:
        segment = {"raster_path": str(elsewhere / "scene.tif"), "question": "q"}
        reply = client.post("/v1/segment", json=segment, headers=AUTH)
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "path_not_allowed"
        reply = client.post("/v1/jobs", json=job_request(elsewhere), headers=AUTH)
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "path_not_allowed"
    assert not (elsewhere / "out.gpkg").exists()


def test_any_path_serves_rasters_and_writes_outputs_anywhere(folders):
    root, elsewhere = folders
    with local_client(root, any_path=True) as client:
        segment = {"raster_path": f"{root}/../elsewhere/scene.tif", "question": "q"}
        reply = client.post("/v1/segment", json=segment, headers=AUTH)
        assert reply.status_code == 200 and reply.json()["status"] == "ok"
        started = client.post("/v1/jobs", json=job_request(elsewhere), headers=AUTH)
        assert started.status_code == 202
        status = wait_done(client, started.json()["id"])
        assert status["state"] == "done" and status["output_path"] == str(elsewhere / "out.gpkg")
    assert (elsewhere / "out.gpkg").is_file()


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("raster_path", "elsewhere/scene.tif", "absolute"),
        ("raster_path", "/tmp/scene\x00.tif", "NUL"),
        ("output_path", "out.gpkg", "absolute"),
        ("aoi_path", "aoi.geojson", "absolute"),
    ],
)
def test_any_path_still_refuses_relative_paths_and_nul(folders, field, value, match):
    root, elsewhere = folders
    with local_client(root, any_path=True) as client:
        reply = client.post("/v1/jobs", json={**job_request(elsewhere), field: value}, headers=AUTH)
        assert reply.status_code == 422 and reply.json()["error"]["code"] == "invalid_input"
        assert match in reply.json()["error"]["message"]
        if field == "raster_path":
            reply = client.post("/v1/segment", json={"raster_path": value, "question": "q"}, headers=AUTH)
            assert reply.status_code == 422 and match in reply.json()["error"]["message"]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "gpu-box", "::"])
def test_any_path_with_a_host_others_reach_is_a_usage_error(host, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--any-path", "--host", host])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: think2seg serve") and "think2seg serve: error: --any-path" in err
    assert host in err and "127.0.0.1" in err


@pytest.fixture
def no_uvicorn(monkeypatch) -> dict:
    """`think2seg serve` up to the point where uvicorn would start: returns what uvicorn.run got."""
    import uvicorn

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))
    yield seen
    access = logging.getLogger("uvicorn.access")
    for installed in [f for f in access.filters if isinstance(f, HealthPollFilter)]:
        access.removeFilter(installed)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_any_path_wins_over_data_root_and_the_log_says_so(tmp_path, host, no_uvicorn, capsys):
    token = ["--token-file", str(tmp_path / "token")]
    assert main(["serve", "--any-path", "--host", host, "--data-root", str(tmp_path), *token]) == 0
    settings = no_uvicorn["app"].state.settings
    assert settings.any_path and no_uvicorn["host"] == host
    err = capsys.readouterr().err
    assert "data roots: any path (--any-path)" in err
    assert "--any-path" in err and "--data-root" in err and "ignored" in err


def test_without_any_path_the_log_lists_the_data_roots(tmp_path, no_uvicorn, capsys):
    assert main(["serve", "--data-root", str(tmp_path), "--token-file", str(tmp_path / "token")]) == 0
    assert not no_uvicorn["app"].state.settings.any_path
    err = capsys.readouterr().err
    assert f"data roots: {tmp_path.resolve()}" in err and "any path" not in err


# --- the access log ------------------------------------------------------------------------------------


def access_record(method: str, path: str, status: int) -> logging.LogRecord:
    """A record as uvicorn's HTTP protocols log it on the "uvicorn.access" logger."""
    args = ("127.0.0.1:50000", method, path, "1.1", status)
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)


@pytest.mark.parametrize(
    ("method", "path", "status", "kept"),
    [
        ("GET", "/v1/health", 200, False),
        ("GET", "/v1/health?probe=1", 200, False),
        ("GET", "/v1/health", 403, True),  # a refused poll is worth a line
        ("GET", "/v1/health", 500, True),
        ("POST", "/v1/segment", 200, True),
        ("GET", "/v1/jobs", 200, True),
        ("POST", "/v1/health", 405, True),
    ],
)
def test_health_poll_filter_drops_only_successful_health_checks(method, path, status, kept):
    assert HealthPollFilter().filter(access_record(method, path, status)) is kept


def test_health_poll_filter_keeps_records_of_another_shape():
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "plain message", None, None)
    assert HealthPollFilter().filter(record)


def test_serve_installs_the_filter_once(tmp_path, no_uvicorn):
    for _ in range(2):
        assert main(["serve", "--data-root", str(tmp_path), "--token-file", str(tmp_path / "token")]) == 0
    access = logging.getLogger("uvicorn.access")
    assert sum(isinstance(f, HealthPollFilter) for f in access.filters) == 1
    assert no_uvicorn.get("access_log", True) is not False
