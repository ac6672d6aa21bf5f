"""Incremental parser for server-sent events (text/event-stream)."""

from __future__ import annotations

import json


class SseParser:
    """Feed bytes as they arrive; get back complete (event, data) pairs, data parsed as JSON."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, chunk: bytes) -> list[tuple[str, dict]]:
        self._buffer += chunk.decode("utf-8", errors="replace").replace("\r\n", "\n")
        events = []
        while "\n\n" in self._buffer:
            block, self._buffer = self._buffer.split("\n\n", 1)
            event = _parse(block)
            if event is not None:
                events.append(event)
        return events


def _parse(block: str) -> tuple[str, dict] | None:
    name, data = "message", []
    for line in block.split("\n"):
        if line.startswith(":") or not line:
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if not data:
        return None
    try:
        return name, json.loads("\n".join(data))
    except ValueError:
        return name, {"text": "\n".join(data)}
