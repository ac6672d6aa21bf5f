"""A stand-in for `think2seg serve` (standard library only), for plugin tests that need replies on
cue: a slow or silent /v1/segment (a question, explicit prompts or several classes), and batch jobs
(a question or several classes) that run until cancelled, or end at once, writing their output
through a test's hook (job_output.write_job_output writes one shaped as the backend's)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
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
    asks for, ``job_workers_alive`` of them ready (all by default), ``job_retries`` tiles re-run.

    A request with ``classes`` gets the golden polygon and prompts once per class, except for the
    classes in ``class_status`` (name -> status, e.g. no_target: no polygons); classes with polygons
    all overlap (the same polygon). With ``on_job`` set, a job calls it with its request (to write
    its output) and is done at once. POST /v1/change starts a change job the same way (``on_change``),
    or answers ``change_error`` (status, envelope) instead."""

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
        self.job_question = ""
        self.job_classes: list[str] | None = None
        self.class_status: dict[str, str] = {}
        self.on_job: Callable[[dict], None] | None = None
        self.job_output = ""  # a change job's output_path (a batch job's status keeps the golden one)
        self.on_change: Callable[[dict], None] | None = None  # as on_job, for POST /v1/change
        self.change_error: tuple[int, dict] | None = None  # what POST /v1/change answers instead of a job
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
            problem = _job_problem(body)
            if problem:
                return 422, _invalid(f"the request does not fit the API: {problem}")
            self.job_state, self.job_workers = "running", int(body.get("workers") or 0)
            self.job_question, self.job_output = str(body.get("question") or ""), str(body["output_path"])
            self.job_classes = list(body["classes"]) if body.get("classes") else None
            if self.on_job is not None:
                self.on_job(body)
                self.job_state = "done"
            return 201, self._job()
        if path == "/v1/change" and method == "POST":
            return self._change(body)
        if path == f"/v1/jobs/{JOB_ID}":
            if method == "DELETE":
                self.job_state = "cancelled"
            return 200, self._job()
        return 404, {"error": {"code": "not_found", "message": f"no route {path}"}}

    def _job(self) -> dict:
        classes = self.job_classes or []
        golden = "job_classes_status.reply.json" if classes else "job_status.reply.json"
        status = json.loads((FIXTURES / "api" / golden).read_text())
        pairs = max(1, len(classes))  # as the backend counts: a tile once per class
        return {
            **status,
            "id": JOB_ID,
            "question": f"{len(classes)} classes: {', '.join(classes)}" if classes else self.job_question,
            "classes": classes or None,
            "output_path": self.job_output or status["output_path"],
            "state": self.job_state,
            "message": self.job_message,
            "tiles_done": 1 * pairs,
            "tiles_total": 4 * pairs,
            "eta_s": 30.0,
            "tiles_per_s": 0.1,
            "workers": self.job_workers,
            "workers_alive": self._workers_alive(),
            "retries": self.job_retries,
        }

    def _change(self, body: dict) -> tuple[int, dict]:
        """A change job: refused with ``change_error``, done at once through ``on_change``, or running."""
        if self.change_error is not None:
            return self.change_error
        self.job_state, self.job_workers, self.job_classes = "running", 0, None
        self.job_question, self.job_output = str(body.get("question") or ""), str(body.get("output_path") or "")
        if self.on_change is not None:
            self.on_change(body)
            self.job_state = "done"
        return 202, self._job()

    def segment_reply(self, body: dict) -> dict:
        """The /v1/segment result for a request, built from the golden reply as the backend builds it."""
        if body.get("classes"):
            return self._classes_reply(body["classes"])
        question = body.get("question", "explicit prompts")  # the backend's label for a re-segment
        reply = copy.deepcopy(self.reply)
        for feature in reply["features"] + reply["prompts"]["features"]:
            feature["properties"]["class"] = question
        reply["classes"] = [{**entry, "name": question, "question": question} for entry in reply["classes"]]
        return {**reply, "question": question, "created_at": _now()}

    def _classes_reply(self, classes: dict[str, str]) -> dict:
        golden, reply = self.reply, copy.deepcopy(self.reply)
        reply["features"], reply["prompts"]["features"], reply["classes"] = [], [], []
        for name, question in classes.items():
            status = self.class_status.get(name, "ok")
            found = status == "ok"
            for kind in ("features", "prompts"):
                features = golden[kind] if kind == "features" else golden["prompts"]["features"]
                target = reply[kind] if kind == "features" else reply["prompts"]["features"]
                for feature in copy.deepcopy(features) if found else []:
                    feature["properties"]["class"] = name
                    target.append(feature)
            entry = golden["classes"][0]
            reply["classes"].append(
                {
                    **entry,
                    "name": name,
                    "question": question,
                    "status": status,
                    "message": "" if found else "the model found no target in this view",
                    "reasoning": f"Looking for {question}: {entry['reasoning']}" if found else f"No {name} here.",
                    "polygons": len(golden["features"]) if found else 0,
                    "total_area_m2": golden["total_area_m2"] if found else 0.0,
                }
            )
        named = [entry["name"] for entry in reply["classes"] if entry["polygons"]]
        area = golden["features"][0]["properties"]["area_m2"]
        reply["class_overlaps"] = [
            {"class_a": a, "class_b": b, "area_m2": area} for i, a in enumerate(named) for b in named[i + 1 :]
        ]
        statuses = [entry["status"] for entry in reply["classes"]]
        reply.update(
            question="",
            status="ok" if "ok" in statuses else statuses[0],
            message=f"{len(classes)} classes: each one's answer is under classes",
            reasoning="",
            raw_answer="",
            total_area_m2=golden["total_area_m2"] * len(named),
            created_at=_now(),
        )
        return reply

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
                    body = json.loads(raw, object_pairs_hook=_refuse_repeated) if raw else {}
                except _RepeatedKey as exc:  # as the backend: parsers would keep the last silently
                    fake.requests.append((method, self.path, {"raw": len(raw)}))
                    self._reply(422, _invalid(exc.message))
                    return
                except ValueError:
                    body = {"raw": len(raw)}
            fake.requests.append((method, self.path, body))
            status, reply = fake.answer(method, self.path, body)
            if reply is None:
                self._stream(body)
                return
            self._reply(status, reply)

        def _reply(self, status: int, reply: dict) -> None:
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
            if not body.get("classes"):  # as the backend: several classes stream no text
                self._event("reasoning", {"text": "<think>thinking"})
            fake.release.wait(fake.delay_s)
            self._event("result", fake.segment_reply(body))

        def _event(self, name: str, data: dict) -> None:
            try:
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
            except OSError:  # the client aborted: nothing left to send to
                return

    return Handler


class _RepeatedKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        # think2seg.server.guards.repeated_key_message
        self.message = (
            f"the request names {key!r} twice in one JSON object: give each key once (each class under its own name)"
        )


def _refuse_repeated(pairs: list[tuple[str, object]]) -> dict:
    seen: set[str] = set()
    for key, _value in pairs:
        if key in seen:
            raise _RepeatedKey(key)
        seen.add(key)
    return dict(pairs)


def _job_problem(body: dict) -> str:
    """Why the backend's JobRequest refuses ``body`` (in pydantic's words for a model check), or ''."""
    question, classes = body.get("question"), body.get("classes")
    if (question is None) == (classes is None):
        return "Value error, give a question or classes (one of the two)"
    if question == "":
        return "question: String should have at least 1 character"
    if question is not None and not str(question).strip():
        return 'Value error, the question is empty: ask what to segment, e.g. "every solar farm"'
    if classes is not None and not (isinstance(classes, dict) and classes):
        return "classes: Dictionary should have at least 1 item after validation, not 0"
    for name, asked in (classes or {}).items():
        if not str(asked).strip():
            return f'Value error, class {name!r} has an empty question: ask what to segment, e.g. "segment the roads"'
    return ""


def _invalid(message: str) -> dict:
    return {"error": {"code": "invalid_input", "message": message}}


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by name."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
