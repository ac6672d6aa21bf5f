"""What went wrong talking to the backend, in words for the message bar."""

from __future__ import annotations

import json

from ..errors import Think2SegError

OFFLINE = "offline"
TIMEOUT = "timeout"


class ApiError(Think2SegError, OSError):
    """``code`` is the API's error code (or ``offline``/``timeout``/``network``); ``message`` says what to do."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(message)  # one argument: OSError would read two as (errno, strerror)
        self.code, self.message, self.status = code, message, status


def from_reply(status: int, body: bytes, url: str) -> ApiError:
    """The error an HTTP error reply carries, with hints for the cases users can fix in QGIS."""
    try:
        error = json.loads(body.decode("utf-8"))["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", f"the backend at {url} answered HTTP {status}"
    if code == "output_exists":
        message += (
            " — in QGIS: tick “Resume” or “Overwrite” in the Batch… dialog (RESUME or OVERWRITE in "
            "Processing), or choose another output file"
        )
    if status == 401:
        message = (
            "the backend refused the token: set the token file in Think2Seg settings to the file "
            f"`think2seg serve` printed ({message})"
        )
    return ApiError(code, message, status)


def offline(url: str, detail: str) -> ApiError:
    return ApiError(
        OFFLINE,
        f"the Think2Seg backend at {url} is not reachable ({detail}): press Start in the Think2Seg panel, "
        "or check the backend URL in Think2Seg settings",
    )


def timed_out(url: str, timeout_s: int) -> ApiError:
    """A request the backend accepted but did not answer in time (not a connection failure)."""
    return ApiError(
        TIMEOUT,
        f"the request to the Think2Seg backend at {url} timed out: it sent nothing for {timeout_s} s. "
        "It may still be loading its models or working on a large tile: raise “Request timeout” in "
        "Think2Seg settings (QGIS's network timeout in Settings › Options › Network caps it too), zoom in "
        "to send a smaller tile, or use Batch… for large areas",
    )
