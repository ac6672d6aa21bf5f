"""Refuse what a local model server must not answer: browser pages, foreign hosts, huge bodies,
JSON that names a key twice.

A web page in the user's browser can send requests to 127.0.0.1; DNS rebinding can even make them
look same-origin. So every request that carries an ``Origin`` header is refused unless that origin
is allowed, and the ``Host`` header must name this machine (or an allowed host).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


class GuardMiddleware:
    """Checks Origin and Host, and caps request bodies at ``max_body_bytes`` (413)."""

    def __init__(
        self, app: ASGIApp, *, allowed_origins: Iterable[str], allowed_hosts: Iterable[str], max_body_bytes: int
    ) -> None:
        self.app = app
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins}
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(headers)
        if refusal is not None:
            await _send_error(send, *refusal)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _send_error(send, 413, "payload_too_large", self._too_large(int(declared)))
            return
        await self.app(scope, self._counting(receive, send), send)

    def _refusal(self, headers: dict[str, str]) -> tuple[int, str, str] | None:
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() not in self.allowed_origins:
            return (
                403,
                "origin_not_allowed",
                (
                    f"requests from web pages (Origin {origin}) are refused; start the server with "
                    "--allow-origin ORIGIN to allow one"
                ),
            )
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host.lower() not in self.allowed_hosts and name.lower() not in LOCAL_HOSTS | self.allowed_hosts:
            return (
                403,
                "host_not_allowed",
                (
                    f"the Host header {host!r} is not this machine; start the server with --allow-host {host} "
                    "to serve it under that name"
                ),
            )
        return None

    def _too_large(self, size: int) -> str:
        return (
            f"the request body is {size / 2**20:.1f} MiB; the limit is {self.max_body_bytes / 2**20:.0f} MiB: "
            "send the raster by reference (raster_path) or start a job (POST /v1/jobs) for big areas"
        )

    def _counting(self, receive: Receive, send: Send) -> Receive:
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self._too_large(received))
            return message

        return counted


class BodyTooLarge(HTTPException):
    """Raised while reading a body without Content-Length that grows past the limit.

    An HTTP exception, so that FastAPI's body parsing passes it on (it turns other errors into 400).
    """

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def repeated_key(text: str | bytes) -> str | None:
    """A key that some object of the JSON ``text`` names twice (None if none, or if it is no JSON:
    the request's validation says that). Python's and pydantic's parsers silently keep the last
    value, so ``{"classes": {"roads": "A", "roads": "B"}}`` would lose a class without a word."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                repeated.append(key)
            seen.add(key)
        return dict(items)

    try:
        json.loads(text, object_pairs_hook=pairs)
    except ValueError:
        return None
    return repeated[0] if repeated else None


def repeated_key_message(key: str) -> str:
    return f"the request names {key!r} twice in one JSON object: give each key once (each class under its own name)"
