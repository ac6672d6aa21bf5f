"""What the HTTP API adds to a segment call, and how the server behaves under concurrent clients.

    .venv/bin/python bench/serve_overhead.py

Side by side in one run, on the same 1024x1024 window (the sample scene resampled) and the same
models (tiny architectures, random weights, 128 new tokens, stand-in outputs as in stand_ins.py):
1. in-process: ``Engine.segment_raster`` plus the GeoJSON reply it would be sent as;
2. through HTTP by reference (``raster_path`` + ``bounds``);
3. through HTTP as an upload (the window as a GeoTIFF, multipart).
The server is the real app under a real uvicorn on 127.0.0.1, in a thread of this process.
Then throughput and p50/p95 latency with 1, 4 and 8 concurrent clients (by reference), against a
server that runs questions one at a time and one that lets waiting questions share a model batch
(``--batch-size``, default 8), on the same engine, in one run.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from think2seg.engine import Engine
from think2seg.output.geojson import to_feature_collection
from think2seg.server.app import create_app
from think2seg.server.settings import ServerSettings

from segment_stages import window_raster
from stand_ins import FixedText, SubstituteMasks, ellipse_in_box, random_weight_models

TOKEN = "bench-token-0123456789"
QUESTION = "segment the river"


def start_server(engine: Engine, root: Path, batch_size: int) -> tuple[uvicorn.Server, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ServerSettings(
        port=port, data_roots=(root,), token_file=root / "token", queue_size=64, batch_size=batch_size
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, engine, token=TOKEN), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("the server did not start")


def side_by_side(engine: Engine, raster: Path, url: str, repeats: int) -> None:
    """The three ways in turn, ``repeats`` rounds after 3 warm-up rounds; medians compared."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    upload = raster.read_bytes()
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:

        def in_process() -> None:
            json.dumps(to_feature_collection(engine.segment_raster(raster, QUESTION)))

        def by_reference() -> None:
            client.post("/v1/segment", json={"raster_path": str(raster), "question": QUESTION}).raise_for_status()

        def uploaded() -> None:
            files = {"file": ("window.tif", upload, "image/tiff")}
            client.post(
                "/v1/segment", files=files, data={"request": json.dumps({"question": QUESTION})}
            ).raise_for_status()

        calls = {"in-process": in_process, "HTTP by reference": by_reference, "HTTP upload": uploaded}
        times: dict[str, list[float]] = {name: [] for name in calls}
        for round_index in range(3 + repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                if round_index >= 3:
                    times[name].append(time.perf_counter() - start)
    base = statistics.median(times["in-process"])
    print(f"Same 1024x1024 window, median of {repeats} rounds, the three ways taking turns (ratios only):")
    for name, values in times.items():
        median = statistics.median(values)
        verdict = (
            "" if name == "in-process" else ("  within the 10% aim" if median / base < 1.1 else "  OVER the 10% aim")
        )
        print(f"  {name:<18} {median / base:6.3f}x   ({(median - base) / base:+6.1%}){verdict}")


def concurrency(raster: Path, url: str, requests_per_client: int, label: str, single: float | None) -> float:
    """Throughput and latency with 1, 4 and 8 clients; latencies relative to ``single`` (the first p50)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    print(f"Concurrent clients, by reference, {label}:")
    print(f"  {'clients':>7} {'req/s':>7} {'p50 / single':>13} {'p95 / single':>13}")
    for clients in (1, 4, 8):
        latencies: list[float] = []

        def client_loop(latencies: list[float] = latencies) -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
                for _ in range(requests_per_client):
                    start = time.perf_counter()
                    client.post(
                        "/v1/segment", json={"raster_path": str(raster), "question": QUESTION}
                    ).raise_for_status()
                    latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            for future in [pool.submit(client_loop) for _ in range(clients)]:
                future.result()
        wall = time.perf_counter() - start
        p50, p95 = np.percentile(latencies, [50, 95])
        single = single or p50
        print(f"  {clients:>7} {len(latencies) / wall:>7.2f} {p50 / single:>12.2f}x {p95 / single:>12.2f}x")
    return single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--requests-per-client", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8, help="the grouping server's batch (default 8)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raster = window_raster(root, 1024)
        prompter, segmenter = random_weight_models("tiny", "cpu", root, 128)
        engine = Engine(FixedText(prompter), SubstituteMasks(segmenter, ellipse_in_box))
        servers = [start_server(engine, root, size) for size in (1, args.batch_size)]
        try:
            side_by_side(engine, raster, servers[0][1], args.repeats)
            single = concurrency(raster, servers[0][1], args.requests_per_client, "one question at a time", None)
            label = f"waiting questions share a batch (up to {args.batch_size})"
            concurrency(raster, servers[1][1], args.requests_per_client, label, single)
        finally:
            for server, _url in servers:
                server.should_exit = True


if __name__ == "__main__":
    sys.exit(main())
