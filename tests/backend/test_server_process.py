"""A real `think2seg serve` process with the tiny models: every route, SSE, jobs, load, SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pyogrio
import pytest

from think2seg.testing.tiny_lvlm import TEST_ANSWERS, question_for

from conftest import tiny_model_flags
from rasters import scene, write_raster

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, folder: Path, lvlm: Path, sam: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.log = (folder / "server.log").open("w")
        command = [
            sys.executable,
            "-m",
            "think2seg",
            "serve",
            "--port",
            str(self.port),
            "--token-file",
            str(folder / "token"),
            "--data-root",
            str(folder),
            "--queue-size",
            "4",
            *tiny_model_flags(lvlm, sam),
        ]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready()
        self.headers = {"Authorization": f"Bearer {(folder / 'token').read_text().strip()}"}

    def _wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).json()["status"] == "ready":
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not become ready")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_lvlm_dir, tiny_sam2_dir):
    folder = tmp_path_factory.mktemp("serve")
    running = Server(folder, tiny_lvlm_dir, tiny_sam2_dir)
    yield running
    if running.process.poll() is None:
        running.process.kill()
    running.log.close()


@pytest.fixture(scope="module")
def raster(server) -> Path:
    return write_raster(server.folder / "scene.tif", scene(300, 400))


def test_segment_upload_and_stream_through_http(server, raster):
    with server.client() as client:
        reply = client.post("/v1/segment", json={"raster_path": str(raster), "question": question_for("ponds")})
        assert reply.status_code == 200
        body = reply.json()
        assert body["status"] == "ok" and body["raw_answer"] == TEST_ANSWERS["ponds"]
        assert len([f for f in body["prompts"]["features"] if f["properties"]["kind"] == "box"]) == 2
        upload = client.post(
            "/v1/segment",
            files={"file": ("scene.tif", raster.read_bytes(), "image/tiff")},
            data={"request": json.dumps({"question": question_for("airport")})},
        )
        assert upload.status_code == 200 and upload.json()["status"] == "no_target"
        events = []
        request = {"raster_path": str(raster), "question": question_for("river")}
        with client.stream("POST", "/v1/segment", json=request, headers={"Accept": "text/event-stream"}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for block in stream.iter_text():
                events.append(block)
    parsed = [_event(chunk) for chunk in "".join(events).strip().split("\n\n")]
    reasoning = "".join(data["text"] for name, data in parsed if name == "reasoning")
    assert reasoning == TEST_ANSWERS["river"] and len(parsed) > 2
    assert parsed[-1][0] == "result" and parsed[-1][1]["status"] == "ok"


def _event(block: str) -> tuple[str, dict]:
    lines = dict(line.split(": ", 1) for line in block.splitlines())
    return lines["event"], json.loads(lines["data"])


def test_job_started_polled_cancelled_and_resumed(server):
    big = write_raster(server.folder / "big.tif", scene(400, 500))  # 12 tiles: enough to cancel mid-way
    output = server.folder / "job.gpkg"
    request = {
        "raster_path": str(big),
        "output_path": str(output),
        "question": question_for("river"),
        "tile_size_px": 160,
        "overlap_px": 32,
    }
    with server.client() as client:
        job = client.post("/v1/jobs", json=request).json()
        while (status := client.get(f"/v1/jobs/{job['id']}").json())["tiles_done"] < 3:
            assert status["state"] == "running", status
            time.sleep(0.1)
        assert status["tiles_total"] == 12 and status["eta_s"] is not None
        client.delete(f"/v1/jobs/{job['id']}")
        while (status := client.get(f"/v1/jobs/{job['id']}").json())["state"] == "running":
            time.sleep(0.1)
        assert status["state"] == "cancelled"
        finished = len(pyogrio.read_dataframe(output, layer="tiles"))
        resumed = client.post("/v1/jobs", json={**request, "resume": True}).json()
        while (status := client.get(f"/v1/jobs/{resumed['id']}").json())["state"] == "running":
            time.sleep(0.2)
        assert status["state"] == "done" and status["tiles_done"] == 12 and finished < 12
        assert [j["id"] for j in client.get("/v1/jobs").json()["jobs"]] == [job["id"], resumed["id"]]


def test_twenty_clients_get_a_result_or_429_and_none_hangs(server, raster):
    outcomes: Counter[int] = Counter()
    problems: list[str] = []
    lock = threading.Lock()
    window = list(_window_bounds())

    def client_loop(count: int) -> None:
        with server.client() as client:
            for _ in range(count):
                try:
                    reply = client.post(
                        "/v1/segment",
                        json={"raster_path": str(raster), "question": question_for("river"), "bounds": window},
                    )
                    ok = reply.status_code == 200 or (reply.status_code == 429 and reply.headers.get("retry-after"))
                    with lock:
                        outcomes[reply.status_code] += 1
                        if not ok:
                            problems.append(reply.text[:200])
                except httpx.HTTPError as exc:
                    with lock:
                        problems.append(repr(exc))

    threads = [threading.Thread(target=client_loop, args=(5,)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert not problems and sum(outcomes.values()) == 100
    assert outcomes[200] > 0 and set(outcomes) <= {200, 429}
    assert httpx.get(f"{server.url}/v1/health", timeout=5).json()["status"] == "ready"


def _window_bounds():
    from rasters import UTM_TRANSFORM

    left, top = UTM_TRANSFORM @ (0, 0)
    right, bottom = UTM_TRANSFORM @ (128, 128)
    return (left, bottom, right, top)


def test_access_log_keeps_every_request_but_the_successful_health_polls(server):
    with server.client() as client:
        for _ in range(3):
            assert client.get("/v1/health").status_code == 200
        assert client.get("/v1/health", headers={"Origin": "https://evil.example"}).status_code == 403
        assert client.get("/v1/jobs/nope").status_code == 404
    log = (server.folder / "server.log").read_text()
    assert '"GET /v1/jobs/nope HTTP/1.1" 404' in log and '"GET /v1/health HTTP/1.1" 403' in log
    assert '"GET /v1/health HTTP/1.1" 200' not in log  # polled from the start, never logged


def test_sigterm_stops_cleanly_and_leaves_running_jobs_resumable(server, tiny_lvlm_dir, tiny_sam2_dir):
    big = write_raster(server.folder / "long.tif", scene(560, 560))  # 5x5 tiles of 128 with overlap 16
    output = server.folder / "long.gpkg"
    request = {
        "raster_path": str(big),
        "output_path": str(output),
        "question": question_for("ponds"),
        "tile_size_px": 128,
        "overlap_px": 16,
    }
    with server.client() as client:
        job = client.post("/v1/jobs", json=request).json()
        while client.get(f"/v1/jobs/{job['id']}").json()["tiles_done"] < 2:
            time.sleep(0.1)
    server.process.send_signal(signal.SIGTERM)
    # uvicorn shuts down, then re-raises the signal so the exit status says what stopped it.
    assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (server.folder / "server.log").read_text()
    tiles = pyogrio.read_dataframe(output, layer="tiles")
    assert 2 <= len(tiles) < 25
    resume = [
        sys.executable,
        "-m",
        "think2seg",
        "batch",
        str(big),
        question_for("ponds"),
        "-o",
        str(output),
        "--resume",
        "--quiet",
    ]
    resume += [
        "--tile-size-px",
        "128",
        "--overlap-px",
        "16",
        *tiny_model_flags(tiny_lvlm_dir, tiny_sam2_dir),
    ]
    done = subprocess.run(resume, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"finished earlier {len(tiles)}" in done.stdout and len(pyogrio.read_dataframe(output, layer="tiles")) == 25
