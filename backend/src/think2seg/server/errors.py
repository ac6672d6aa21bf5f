"""One error envelope for every failure: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from think2seg import errors
from think2seg.runs.microbatch import is_out_of_memory
from think2seg.server.guards import BodyTooLarge

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


class ApiError(Exception):
    """An error answered as ``status`` with the envelope; ``retry_after_s`` adds Retry-After."""

    def __init__(self, status: int, code: str, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after_s = status, code, message, retry_after_s


# Most specific first: the first matching class decides.
_MAPPED: tuple[tuple[type[Exception], int, str], ...] = (
    (errors.RasterNotFoundError, 404, "not_found"),
    (errors.RasterUnreachableError, 502, "raster_unreachable"),  # a service the backend reads is down
    (errors.MissingCRSError, 422, "missing_crs"),
    (errors.EmptyWindowError, 422, "no_data"),
    (errors.BoundsError, 422, "bounds_outside"),
    (errors.RasterError, 422, "raster_unreadable"),
    (errors.OutputExistsError, 409, "output_exists"),
    (errors.OutputError, 422, "output_unwritable"),
    (errors.InputError, 422, "invalid_input"),
    (errors.Cancelled, 409, "cancelled"),
    (errors.WeightsUnavailableError, 503, "model_unavailable"),
    (errors.ModelError, 503, "model_unavailable"),
    (errors.DeviceError, 503, "model_unavailable"),
)


def to_api_error(exc: Exception) -> ApiError:
    """The envelope and status for any exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, BodyTooLarge):
        return ApiError(413, "payload_too_large", str(exc.detail))
    if is_out_of_memory(exc):
        return ApiError(
            503,
            "out_of_memory",
            f"the GPU ran out of memory ({exc}): retry, or send a smaller tile",
            retry_after_s=RETRY_AFTER_S,
        )
    for kind, status, code in _MAPPED:
        if isinstance(exc, kind):
            return ApiError(status, code, str(exc))
    if isinstance(exc, errors.Think2SegError):
        return ApiError(500, "error", str(exc))
    log.exception("unexpected error while serving a request", exc_info=exc)
    return ApiError(500, "internal_error", f"{type(exc).__name__}: {exc}; the server keeps running, see its log")


def envelope(error: ApiError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else None
    if error.status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    body = {"error": {"code": error.code, "message": error.message}}
    return JSONResponse(body, status_code=error.status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(_describe(e) for e in exc.errors()[:5])
        return envelope(ApiError(422, "invalid_input", f"the request does not fit the API: {details}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return envelope(ApiError(exc.status_code, code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> JSONResponse:
        return envelope(to_api_error(exc))


def _describe(error: dict) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


def install_api_error_handler(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return envelope(exc)

    @app.exception_handler(errors.Think2SegError)
    async def _ours(request: Request, exc: errors.Think2SegError) -> JSONResponse:
        return envelope(to_api_error(exc))  # e.g. an existing output refused by the run policy: 409
