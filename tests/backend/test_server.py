"""The HTTP API through FastAPI's TestClient, with injected models whose output is known."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from shapely.geometry import box, shape

from think2seg.engine import Engine
from think2seg.server.app import create_app
from think2seg.server.schemas import (
    ChangeRequest,
    HealthReply,
    JobList,
    JobRequest,
    JobStatus,
    SegmentByReference,
    SegmentReply,
    UploadMeta,
)
from think2seg.server.settings import ServerSettings

from conftest import FIXTURES, BoxSegmenter, FixedPrompter
from rasters import UTM_TRANSFORM, scene, write_raster

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ONE_BOX = '<think>A field.</think> <answer>[{"bbox_2d": [84, 84, 420, 840], "positive_points": [[200, 400], [300, 500]]}]</answer>'
BASE = "http://127.0.0.1:8765"
API = FIXTURES / "api"


def make_client(tmp_path: Path, engine=None, **settings) -> TestClient:
    options = {"data_roots": (tmp_path,), "token_file": tmp_path / "token", **settings}
    engine = engine or Engine(FixedPrompter(ONE_BOX), BoxSegmenter())
    return TestClient(create_app(ServerSettings(**options), engine, token=TOKEN), base_url=BASE)


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path) as test_client:
        yield test_client


@pytest.fixture
def raster(tmp_path) -> Path:
    return write_raster(tmp_path / "scene.tif", scene(300, 600))


def field_box(col0=0, row0=0, width=600, height=300):
    """The map box BoxSegmenter returns for ONE_BOX on a width x height tile at (col0, row0)."""
    x1, y1, x2, y2 = (84 * width / 840, 84 * height / 840, 420 * width / 840, 840 * height / 840)
    corners = [UTM_TRANSFORM @ (col0 + x, row0 + y) for x, y in ((x1, y2), (x2, y1))]
    return box(corners[0][0], corners[0][1], corners[1][0], corners[1][1])


def polygons(reply: dict):
    return [shape(f["geometry"]) for f in reply["features"]]


# --- health, auth, guards ---------------------------------------------------------------------------


def test_health_needs_no_token_and_matches_the_schema(client):
    reply = client.get("/v1/health")
    assert reply.status_code == 200
    health = HealthReply.model_validate(reply.json())
    assert health.status == "ready" and health.api_version == "1" and health.models["lvlm"] == "fixed-prompter"
    assert "torch" in health.packages and health.queue_depth == 0 and health.running_jobs == 0


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0000000000"}, {"Authorization": TOKEN}])
def test_every_other_route_needs_the_token(client, raster, headers):
    for method, url, body in (
        ("post", "/v1/segment", {"raster_path": str(raster), "question": "q"}),
        ("get", "/v1/jobs", None),
        ("get", "/v1/jobs/abc", None),
        ("delete", "/v1/jobs/abc", None),
        ("post", "/v1/jobs", {}),
        ("get", "/openapi.json", None),
    ):
        reply = client.request(method, url, json=body, headers=headers)
        assert reply.status_code == 401, (method, url)
        assert reply.json()["error"]["code"] == "unauthorized" and reply.headers["www-authenticate"] == "Bearer"
    for page in ("/docs", "/redoc"):  # no token-less pages either
        assert client.get(page).status_code == 404


def test_browser_origin_and_foreign_host_refused(tmp_path):
    with make_client(tmp_path) as client:
        reply = client.get("/v1/health", headers={"Origin": "https://evil.example"})
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "origin_not_allowed"
        reply = client.get("/v1/health", headers={"Host": "evil.example:8765"})
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "host_not_allowed"
        assert client.get("/v1/health", headers={"Host": "localhost:8765"}).status_code == 200
    with make_client(tmp_path, allowed_origins=("https://ok.example",), allowed_hosts=("gpu-box:8765",)) as client:
        assert client.get("/v1/health", headers={"Origin": "https://ok.example"}).status_code == 200
        assert client.get("/v1/health", headers={"Host": "gpu-box:8765"}).status_code == 200


# --- segment by reference and by upload ---------------------------------------------------------------


def test_segment_by_reference_in_the_raster_crs(client, raster):
    reply = client.post("/v1/segment", json={"raster_path": str(raster), "question": "segment the field"}, headers=AUTH)
    assert reply.status_code == 200
    body = SegmentReply.model_validate(reply.json()).model_dump()
    assert body["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633" and body["status"] == "ok"
    (polygon,) = polygons(body)
    assert polygon.symmetric_difference(field_box()).area < 1e-6
    kinds = [f["properties"]["kind"] for f in body["prompts"]["features"]]
    assert kinds == ["box", "positive_point", "positive_point"]
    assert {"read", "vectorize", "sam_encode"} <= set(body["timings_ms"]) and body["mask"] is None


@pytest.mark.parametrize("bounds_crs", ["EPSG:4326", 4326, "4326"])
def test_bounds_in_another_crs_and_the_mask(client, raster, bounds_crs):
    from rasterio.warp import transform_bounds

    left, top = UTM_TRANSFORM @ (100, 50)
    right, bottom = UTM_TRANSFORM @ (400, 250)
    bounds = transform_bounds("EPSG:32633", "EPSG:4326", left, bottom, right, top, densify_pts=21)
    request = {
        "raster_path": str(raster),
        "question": "q",
        "bounds": list(bounds),
        "bounds_crs": bounds_crs,
        "include_mask": True,
    }
    body = client.post("/v1/segment", json=request, headers=AUTH).json()
    window = body["window"]
    assert 99 <= window["col_off"] <= 100 and 49 <= window["row_off"] <= 50 and window["width"] >= 300
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"]["png_base64"]))))
    assert mask.shape == (window["height"], window["width"]) and set(np.unique(mask)) <= {0, 1}
    (polygon,) = polygons(body)
    assert polygon.area == pytest.approx(mask.sum() * 0.25)


def test_upload_geotiff_and_png_with_georeference(client, tmp_path):
    geotiff = write_raster(tmp_path / "up.tif", scene(200, 300)).read_bytes()
    meta = json.dumps({"question": "segment the field"})
    reply = client.post(
        "/v1/segment", files={"file": ("up.tif", geotiff, "image/tiff")}, data={"request": meta}, headers=AUTH
    )
    assert reply.status_code == 200
    (polygon,) = polygons(reply.json())
    assert polygon.symmetric_difference(field_box(width=300, height=200)).area < 1e-6
    png = io.BytesIO()
    Image.fromarray(np.moveaxis(scene(200, 300), 0, -1)).save(png, format="PNG")
    meta = json.dumps({"question": "q", "transform": list(UTM_TRANSFORM)[:6], "crs": "EPSG:32633"})
    reply = client.post(
        "/v1/segment", files={"file": ("up.png", png.getvalue(), "image/png")}, data={"request": meta}, headers=AUTH
    )
    assert reply.status_code == 200 and reply.json()["crs"]["properties"]["name"].endswith("32633")
    assert polygons(reply.json())[0].symmetric_difference(field_box(width=300, height=200)).area < 1e-6


def test_uploads_are_decimated_to_max_side_px_alike(client, tmp_path):
    """A PNG is read like a GeoTIFF: the same coarser pixels, transform, polygon and note."""
    geotiff = write_raster(tmp_path / "up.tif", scene(200, 300)).read_bytes()
    png = io.BytesIO()
    Image.fromarray(np.moveaxis(scene(200, 300), 0, -1)).save(png, format="PNG")
    georeference = {"transform": list(UTM_TRANSFORM)[:6], "crs": 32633}  # a bare EPSG code is fine
    bodies = []
    for name, data, extra in (("up.tif", geotiff, {}), ("up.png", png.getvalue(), georeference)):
        meta = json.dumps({"question": "q", "max_side_px": 100, "include_mask": True, **extra})
        reply = client.post("/v1/segment", files={"file": (name, data)}, data={"request": meta}, headers=AUTH)
        assert reply.status_code == 200, reply.text
        bodies.append(reply.json())
    tif, png_body = bodies
    assert (png_body["mask"]["width"], png_body["mask"]["height"]) == (tif["mask"]["width"], tif["mask"]["height"])
    assert (tif["mask"]["width"], tif["mask"]["height"]) == (100, 67)
    assert png_body["mask"]["transform"] == pytest.approx(tif["mask"]["transform"])
    assert any("decimated to 100x67 px" in note for note in png_body["notes"])
    assert polygons(png_body)[0].symmetric_difference(polygons(tif)[0]).area < 1e-6
    assert polygons(png_body)[0].symmetric_difference(field_box(width=300, height=200)).area < 0.1 * field_box().area


@pytest.mark.parametrize(
    ("content", "meta", "status", "code"),
    [
        ("png", {"question": "q"}, 422, "missing_georeference"),
        ("corrupt_tiff", {"question": "q"}, 422, "raster_unreadable"),
        ("garbage", {"question": "q"}, 422, "invalid_input"),
        ("png", {"question": "q", "transform": [1, 0, 0, 0, -1, 0], "crs": "EPSG:999999"}, 422, "invalid_input"),
        ("png", "{not json", 422, "invalid_input"),
    ],
)
def test_bad_uploads(client, tmp_path, content, meta, status, code):
    if content == "png":
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(buffer, format="PNG")
        data = buffer.getvalue()
    elif content == "corrupt_tiff":
        data = write_raster(tmp_path / "c.tif", scene(256, 256)).read_bytes()[:500]
    else:
        data = b"\x00\x01 definitely not an image"
    text = meta if isinstance(meta, str) else json.dumps(meta)
    reply = client.post(
        "/v1/segment", files={"file": ("f", data, "application/octet-stream")}, data={"request": text}, headers=AUTH
    )
    assert reply.status_code == status and reply.json()["error"]["code"] == code, reply.json()


def test_size_limits_say_the_limit_and_the_alternative(tmp_path):
    with make_client(tmp_path, max_upload_mb=1, max_upload_pixels=100 * 100) as client:
        big = b"\x00" * (2 * 2**20)
        reply = client.post(
            "/v1/segment", files={"file": ("big.tif", big, "image/tiff")}, data={"request": "{}"}, headers=AUTH
        )
        assert reply.status_code == 413 and "POST /v1/jobs" in reply.json()["error"]["message"]
        png = io.BytesIO()
        Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(png, format="PNG")
        meta = json.dumps({"question": "q", "transform": [1, 0, 0, 0, -1, 0], "crs": "EPSG:32633"})
        reply = client.post(
            "/v1/segment", files={"file": ("p.png", png.getvalue(), "image/png")}, data={"request": meta}, headers=AUTH
        )
        assert reply.status_code == 413 and reply.json()["error"]["code"] == "image_too_large"
        long = {"raster_path": str(tmp_path / "x.tif"), "question": "x" * 5000}
        reply = client.post("/v1/segment", json=long, headers=AUTH)
        assert reply.status_code == 422 and "question" in reply.json()["error"]["message"]


@pytest.mark.parametrize("route", ["/v1/segment", "/v1/jobs"])
def test_a_body_without_length_is_cut_at_the_limit(tmp_path, route):
    """Chunked bodies carry no Content-Length: the limit is counted as they arrive, on every route."""

    def chunks():
        yield b'{"question": "'
        for _ in range(24):
            yield b"x" * 2**16
        yield b'"}'

    with make_client(tmp_path, max_upload_mb=1) as client:
        reply = client.post(route, content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "payload_too_large", reply.text
    assert "limit is 1 MiB" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"question": "q"},
        {"raster_path": "RASTER", "question": "q", "prompts": [{"box": [1, 2, 3, 4]}]},
        {"raster_path": "RASTER"},
        {"raster_path": "RASTER", "question": "  "},
        {"raster_path": "RASTER", "question": "q", "bounds": [1, 2, 3]},
        {"raster_path": "RASTER", "question": "q", "max_side_px": 100000},
        {"raster_path": "RASTER", "question": "q", "unknown": 1},
    ],
)
def test_invalid_json_requests(client, raster, body):
    body = {k: (str(raster) if v == "RASTER" else v) for k, v in body.items()}
    reply = client.post("/v1/segment", json=body, headers=AUTH)
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "invalid_input"


def test_paths_must_stay_inside_the_data_roots(client, raster, tmp_path):
    outside = tmp_path.parent / "outside"
    outside.mkdir(exist_ok=True)
    secret = write_raster(outside / "secret.tif", scene(20, 20))
    (tmp_path / "link.tif").symlink_to(secret)
    (tmp_path / "linkdir").symlink_to(outside)
    for path in (
        str(secret),
        f"{tmp_path}/../outside/secret.tif",
        str(tmp_path / "link.tif"),
        str(tmp_path / "linkdir" / "secret.tif"),
    ):
        reply = client.post("/v1/segment", json={"raster_path": path, "question": "q"}, headers=AUTH)
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "path_not_allowed", path
    reply = client.post("/v1/segment", json={"raster_path": "scene.tif", "question": "q"}, headers=AUTH)
    assert reply.status_code == 422 and "absolute" in reply.json()["error"]["message"]
    reply = client.post(
        "/v1/segment", json={"raster_path": str(tmp_path / "missing.tif"), "question": "q"}, headers=AUTH
    )
    assert reply.status_code == 404
    job = {"raster_path": str(raster), "output_path": str(outside / "out.gpkg"), "question": "q"}
    assert client.post("/v1/jobs", json=job, headers=AUTH).status_code == 403


def test_explicit_prompts_run_sam_alone(tmp_path, raster):
    prompter = FixedPrompter(ONE_BOX)
    with make_client(tmp_path, engine=Engine(prompter, BoxSegmenter())) as client:
        target = field_box(100, 50, 200, 100)
        request = {
            "raster_path": str(raster),
            "prompts": [{"box": list(target.bounds), "points": [list(target.centroid.coords[0])] * 2}],
        }
        body = client.post("/v1/segment", json=request, headers=AUTH).json()
    assert prompter.calls == 0 and body["model"] == "" and body["status"] == "ok"
    (polygon,) = polygons(body)
    assert polygon.symmetric_difference(target).area < 0.3  # the box snaps to whole pixels
    outside = {"raster_path": str(raster), "prompts": [{"box": [0, 0, 1, 1]}]}
    with make_client(tmp_path) as client:
        reply = client.post("/v1/segment", json=outside, headers=AUTH)
    assert reply.status_code == 422 and "outside the tile" in reply.json()["error"]["message"]


# --- reliability ------------------------------------------------------------------------------------------


class FlakySegmenter(BoxSegmenter):
    def __init__(self) -> None:
        super().__init__()
        self.fail_next = True

    def encode(self, image):
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().encode(image)


def test_model_errors_answer_503_and_the_server_keeps_serving(tmp_path, raster):
    with make_client(tmp_path, engine=Engine(FixedPrompter(ONE_BOX), FlakySegmenter())) as client:
        reply = client.post("/v1/segment", json={"raster_path": str(raster), "question": "q"}, headers=AUTH)
        assert (
            reply.status_code == 503
            and reply.json()["error"]["code"] == "out_of_memory"
            and reply.headers["retry-after"]
        )
        reply = client.post("/v1/segment", json={"raster_path": str(raster), "question": "q"}, headers=AUTH)
        assert reply.status_code == 200 and client.get("/v1/health").json()["status"] == "ready"


def test_full_queue_answers_429_with_retry_after(tmp_path, raster):
    with make_client(tmp_path, queue_size=1) as client:
        worker = client.app.state.models.worker
        gate = threading.Event()
        worker.submit(gate.wait)  # occupies the worker
        while worker.waiting:
            time.sleep(0.01)
        worker.submit(lambda: None)  # fills the one waiting place
        reply = client.post("/v1/segment", json={"raster_path": str(raster), "question": "q"}, headers=AUTH)
        gate.set()
        assert reply.status_code == 429 and reply.json()["error"]["code"] == "busy" and reply.headers["retry-after"]
        assert (
            client.post("/v1/segment", json={"raster_path": str(raster), "question": "q"}, headers=AUTH).status_code
            == 200
        )


def test_models_that_fail_to_load_are_reported(tmp_path, raster):
    settings = ServerSettings(
        data_roots=(tmp_path,), token_file=tmp_path / "token", lvlm=str(tmp_path / "no-model"), device="cpu"
    )
    with TestClient(create_app(settings, token=TOKEN), base_url=BASE) as client:
        for _ in range(100):
            health = client.get("/v1/health").json()
            if health["status"] != "loading":
                break
            time.sleep(0.05)
        assert health["status"] == "error" and "does not exist" in health["message"]
        reply = client.post("/v1/segment", json={"raster_path": str(raster), "question": "q"}, headers=AUTH)
        assert reply.status_code == 503 and reply.json()["error"]["code"] == "model_unavailable"


# --- jobs ---------------------------------------------------------------------------------------------------


class SlowSegmenter(BoxSegmenter):
    def encode(self, image):
        time.sleep(0.2)
        return super().encode(image)


def wait_job(client: TestClient, job_id: str, states=("done", "failed", "cancelled"), timeout_s=60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
        if status["state"] in states:
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {status}")


def test_job_runs_to_the_end_and_is_listed(client, tmp_path):
    raster = write_raster(tmp_path / "big.tif", scene(600, 900))
    request = {
        "raster_path": str(raster),
        "output_path": str(tmp_path / "out.gpkg"),
        "question": "q",
        "tile_size_px": 256,
        "overlap_px": 32,
    }
    started = client.post("/v1/jobs", json=request, headers=AUTH)
    assert started.status_code == 202
    job = JobStatus.model_validate(started.json())
    status = wait_job(client, job.id)
    assert status["state"] == "done" and status["tiles_done"] == status["tiles_total"] == 12 and status["polygons"] >= 1
    listed = JobList.model_validate(client.get("/v1/jobs", headers=AUTH).json())
    assert [j.id for j in listed.jobs] == [job.id]
    assert client.get("/v1/jobs/nope", headers=AUTH).status_code == 404
    again = client.post("/v1/jobs", json=request, headers=AUTH)
    assert again.status_code == 409 and again.json()["error"]["code"] == "output_exists"


def test_job_cancelled_then_resumed_while_questions_are_answered(tmp_path):
    import pyogrio

    raster = write_raster(tmp_path / "big.tif", scene(600, 900))
    with make_client(tmp_path, engine=Engine(FixedPrompter(ONE_BOX), SlowSegmenter())) as client:
        request = {
            "raster_path": str(raster),
            "output_path": str(tmp_path / "out.gpkg"),
            "question": "q",
            "tile_size_px": 256,
            "overlap_px": 32,
        }
        job = client.post("/v1/jobs", json=request, headers=AUTH).json()
        wait_job(client, job["id"], states=("running",))
        while client.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()["tiles_done"] < 2:
            time.sleep(0.05)
        start = time.monotonic()
        reply = client.post("/v1/segment", json={"raster_path": str(raster), "question": "q"}, headers=AUTH)
        assert reply.status_code == 200 and time.monotonic() - start < 3  # served between tiles, not after the job
        cancelled = client.delete(f"/v1/jobs/{job['id']}", headers=AUTH).json()
        assert cancelled["state"] in ("running", "cancelled")
        status = wait_job(client, job["id"])
        assert status["state"] == "cancelled" and "resume" in status["message"]
        done_before = len(pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="tiles"))
        assert 2 <= done_before < 12
        resumed = client.post("/v1/jobs", json={**request, "resume": True}, headers=AUTH).json()
        status = wait_job(client, resumed["id"])
    assert status["state"] == "done" and status["tiles_done"] == 12
    assert len(pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="tiles")) == 12


# --- schema and golden files ------------------------------------------------------------------------------


def test_openapi_lists_every_route_and_both_segment_bodies(client):
    schema = client.get("/openapi.json", headers=AUTH).json()
    assert {"/v1/health", "/v1/segment", "/v1/jobs", "/v1/jobs/{job_id}"} <= set(schema["paths"])
    content = schema["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    assert {"SegmentByReference", "UploadMeta", "PromptIn"} <= set(schema["components"]["schemas"])


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("segment_by_reference.request.json", SegmentByReference),
        ("segment_prompts.request.json", SegmentByReference),
        ("segment_upload.request.json", UploadMeta),
        ("job.request.json", JobRequest),
        ("job_classes.request.json", JobRequest),
        ("change.request.json", ChangeRequest),
        ("health.reply.json", HealthReply),
        ("segment.reply.json", SegmentReply),
        ("job_status.reply.json", JobStatus),
        ("job_classes_status.reply.json", JobStatus),
        ("job_list.reply.json", JobList),
    ],
)
def test_golden_files_fit_the_schemas(name, model):
    model.model_validate_json((API / name).read_text())


def _shape(value):
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in ("features", "packages", "prompts")}
    return type(value).__name__ if value is not None else None


def test_live_replies_have_the_golden_shape(client, raster):
    golden = json.loads((API / "segment.reply.json").read_text())
    live = client.post("/v1/segment", json={"raster_path": str(raster), "question": "q"}, headers=AUTH).json()
    assert set(live) == set(golden)
    assert set(live["window"]) == set(golden["window"])
    assert set(live["features"][0]["properties"]) == set(golden["features"][0]["properties"])
    assert set(live["prompts"]["features"][0]["properties"]) == set(golden["prompts"]["features"][0]["properties"])
    assert set(client.get("/v1/health").json()) == set(json.loads((API / "health.reply.json").read_text()))
    error = client.post("/v1/segment", json={}, headers=AUTH).json()
    assert _shape(error) == _shape(json.loads((API / "error.reply.json").read_text()))


def test_token_file_is_made_private_and_reused(tmp_path):
    import os
    import stat

    from think2seg.server.token import load_or_create_token

    path = tmp_path / "config" / "think2seg" / "token"
    token = load_or_create_token(path)
    assert len(token) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == token
    os.chmod(path, 0o644)
    assert load_or_create_token(path) == token and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("short")
    with pytest.raises(Exception, match="shorter than 16"):
        load_or_create_token(path)


def test_serve_options_become_settings(tmp_path):
    from think2seg.cli import build_parser
    from think2seg.cli.serve import settings_from_args

    args = build_parser().parse_args(
        ["serve", "--data-root", str(tmp_path / "a"), str(tmp_path / "b"), "--data-root", str(tmp_path / "c")]
        + ["--allow-host", "gpu-box:8765", "--batch-size", "4", "--token-file", str(tmp_path / "token")]
    )
    settings = settings_from_args(args)
    assert settings.data_roots == (tmp_path / "a", tmp_path / "b", tmp_path / "c")
    assert settings.allowed_hosts == ("gpu-box:8765",) and settings.batch_size == 4
    default = settings_from_args(build_parser().parse_args(["serve"]))
    assert default.data_roots == (Path.home(),) and default.host == "127.0.0.1" and default.port == 8765
