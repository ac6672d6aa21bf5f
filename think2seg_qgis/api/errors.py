"""What went wrong talking to the backend, in words for the message bar."""

from __future__ import annotations

import json

from ..errors import Think2SegError

OFFLINE = "offline"
TIMEOUT = "timeout"
BATCH = "open Batch…, choose the same output GeoPackage and tick"
# The backend speaks to every client in command-line and HTTP terms; in QGIS they read as buttons.
QGIS_TERMS = (
    ("POST /v1/jobs again with resume=true", f"{BATCH} “Resume”"),
    ("POST again with retry_failed=true to redo them", f"{BATCH} “Retry failed tiles” to redo them"),
    (
        "set resume=true to continue the run in it, set overwrite=true to start again",
        "tick “Resume” to continue it, “Overwrite” to start again",
    ),
    (
        "pass --resume to continue the run in it, pass --overwrite to start again",
        "tick “Resume” to continue it, “Overwrite” to start again",
    ),
    ("set overwrite=true to start again", "tick “Overwrite” to start again"),
    ("set overwrite=true to replace it", "tick “Overwrite” to replace it"),
    ("pass --overwrite to start again", "tick “Overwrite” to start again"),
    ("pass --overwrite to replace it", "tick “Overwrite” to replace it"),
    (
        "start the server with --data-root FOLDER to allow that folder",
        "start the backend from the Think2Seg panel "
        "(Stop, then Start: a backend started there may use any folder), or start it yourself with --data-root FOLDER",
    ),
    ("or start a job (POST /v1/jobs) for big areas", "or use Batch… for big areas"),
    (
        "or send workers=0 to run the job on the server's own models",
        "or set Workers to none in the Batch… dialog to run the job on the backend's own models",
    ),
    ("start a job (POST /v1/jobs)", "use Batch…"),
    # the backend's option messages ("simplify_px must be a number from 0 to 1000 (pixels), got -1")
    ("tile_size_px must", "the tile size must"),
    ("overlap_px must", "the overlap must"),
    ("simplify_px must", "Simplification (Think2Seg settings) must"),
    ("min_area_m2 must", "Minimum polygon area (Think2Seg settings) must"),
)


class ApiError(Think2SegError, OSError):
    """``code`` is the API's error code (or ``offline``/``timeout``/``network``); ``message`` says what to do."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(message)  # one argument: OSError would read two as (errno, strerror)
        self.code, self.message, self.status = code, message, status


def qgis_terms(message: str) -> str:
    """A backend message with its command-line and HTTP advice said in QGIS terms."""
    for api, qgis in QGIS_TERMS:
        message = message.replace(api, qgis)
    return message


def from_reply(status: int, body: bytes, url: str) -> ApiError:
    """The error an HTTP error reply carries, with hints for the cases users can fix in QGIS."""
    try:
        error = json.loads(body.decode("utf-8"))["error"]
        code, message = str(error["code"]), qgis_terms(str(error["message"]))
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", f"the backend at {url} answered HTTP {status}"
    if code == "output_exists":
        message += " in the Batch… dialog (RESUME or OVERWRITE in Processing), or choose another output file"
    if status == 401:
        message = (
            "the backend refused the token: set the token file in Think2Seg settings to the file "
            f"`think2seg serve` printed ({message})"
        )
    return ApiError(code, message, status)


def offline(url: str, detail: str) -> ApiError:
    return ApiError(
        OFFLINE,
        f"the Think2Seg backend at {url} is not reachable ({detail}): press Start in the Think2Seg panel "
        "(with the backend executable set in Think2Seg settings), or check the backend URL there",
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
