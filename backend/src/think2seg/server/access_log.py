"""uvicorn's access log without the health polls: the QGIS plugin asks ``GET /v1/health`` every few
seconds and shows the backend's log to its user, where those lines would bury every other request."""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"
HEALTH_PATH = "/v1/health"


class HealthPollFilter(logging.Filter):
    """Drops the access-log record of a successful (2xx) ``GET /v1/health``; keeps every other one.

    uvicorn logs each request with the arguments (client, method, path with query, HTTP version,
    status code); a record of any other shape is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        _client, method, path, _http_version, status = args
        health = method == "GET" and str(path).partition("?")[0] == HEALTH_PATH
        return not (health and isinstance(status, int) and 200 <= status < 300)


def quiet_health_polls() -> None:
    """Install :class:`HealthPollFilter` on uvicorn's access logger, once (uvicorn's logging setup
    replaces the logger's handlers but keeps its filters)."""
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, HealthPollFilter) for f in access.filters):
        access.addFilter(HealthPollFilter())
