"""A stand-in for `think2seg serve` (standard library only), for plugin tests that need replies on
cue: a slow or silent /v1/segment, and batch jobs that run until cancelled."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from qgis_helpers import FIXTURES

JOB_ID = "job1"


class FakeBackend:
    """Records every request as (method, path, JSON body) and every upload as (request part, file
    bytes); ``reply``, ``delay_s`` and ``silent`` decide how /v1/segment answers (``silent``: accept
    and never answer); ``refuse_paths`` answers a raster sent by reference with 403 path_not_allowed,
    as a backend does for a folder outside its data roots. A job runs on the ``workers`` its request
    asks for, ``job_workers_alive`` of them ready (all by default), ``job_retries`` tiles re-run."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        self.uploads: list[tuple[dict, bytes]] = []
        self.reply = json.loads((FIXTURES / "api" / "segment.reply.json").read_text())
        self.delay_s = 0.0
        self.silent = False
        self.refuse_paths = False
        self.job_state = "running"
        self.job_message = "1 of 4 tiles"
        self.job_workers = 0
        self.job_workers_alive: int | None = None
        self.job_retries = 0
        self.release = threading.Event()  # ends every wait when the server stops
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def sent(self, method: str, path: str) -> list[dict]:
        """The bodies of the requests received for ``method`` and ``path``."""
        return [body for m, p, body in self.requests if (m, p) == (method, path)]

    def answer(self, method: str, path: str, body: dict) -> tuple[int, dict | None]:
        """(status, JSON) for the plain routes; (200, None) means /v1/segment's stream."""
        if path == "/v1/health":
            return 200, json.loads((FIXTURES / "api" / "health.reply.json").read_text())
        if path == "/v1/segment" and self.refuse_paths and "raster_path" in body:
            message = f"the raster_path {body['raster_path']} resolves to it, outside the data roots (/home/me): "
            message += "start the server with --data-root FOLDER to allow that folder"
            return 403, {"error": {"code": "path_not_allowed", "message": message}}
        if path == "/v1/segment":
            return 200, None
        if path == "/v1/jobs" and method == "POST":
            self.job_state, self.job_workers = "running", int(body.get("workers") or 0)
            return 201, self._job()
        if path == f"/v1/jobs/{JOB_ID}":
            if method == "DELETE":
                self.job_state = "cancelled"
            return 200, self._job()
        return 404, {"error": {"code": "not_found", "message": f"no route {path}"}}

    def _job(self) -> dict:
        status = json.loads((FIXTURES / "api" / "job_status.reply.json").read_text())
        return {
            **status,
            "id": JOB_ID,
            "state": self.job_state,
            "message": self.job_message,
            "tiles_done": 1,
            "tiles_total": 4,
            "eta_s": 30.0,
            "tiles_per_s": 0.1,
            "workers": self.job_workers,
            "workers_alive": self._workers_alive(),
            "retries": self.job_retries,
        }

    def _workers_alive(self) -> int | None:
        """As the backend says it: None without workers or once the job has ended."""
        if not self.job_workers or self.job_state != "running":
            return None
        return self.job_workers if self.job_workers_alive is None else self.job_workers_alive


def _handler(fake: FakeBackend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:  # keep the test output clean
            return

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("multipart/form-data"):
                parts = _multipart(content_type, raw)
                body = json.loads(parts.get("request") or b"{}")
                fake.uploads.append((body, parts.get("file") or b""))
            else:
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {"raw": len(raw)}
            fake.requests.append((method, self.path, body))
            status, reply = fake.answer(method, self.path, body)
            if reply is None:
                self._stream(body)
                return
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, body: dict) -> None:
            if fake.silent:
                fake.release.wait(60)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self._event("reasoning", {"text": "<think>thinking"})
            fake.release.wait(fake.delay_s)
            # as the real backend: the question asked ("explicit prompts" for a re-segment), stamped now
            question = body.get("question", "explicit prompts")
            self._event("result", {**fake.reply, "question": question, "created_at": _now()})

        def _event(self, name: str, data: dict) -> None:
            try:
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
            except OSError:  # the client aborted: nothing left to send to
                return

    return Handler


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by name."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
