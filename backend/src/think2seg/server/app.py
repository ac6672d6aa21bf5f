"""The FastAPI application: ``create_app(settings, engine=None)``.

Routes only translate between HTTP and the library; the work lives in segment.py and jobs.py.
Models load in the background during the lifespan unless an engine is injected (tests do).
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.metadata
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from think2seg._version import __version__
from think2seg.server import segment
from think2seg.server.errors import ApiError, envelope, install_api_error_handler, install_handlers, to_api_error
from think2seg.server.guards import BodyTooLarge, GuardMiddleware, repeated_key, repeated_key_message
from think2seg.server.jobs import JobManager
from think2seg.server.schemas import (
    ChangeRequest,
    ErrorEnvelope,
    HealthReply,
    JobList,
    JobRequest,
    JobStatus,
    SegmentByReference,
    SegmentReply,
    UploadMeta,
)
from think2seg.server.serving import ServingEngine
from think2seg.server.settings import API_VERSION, ServerSettings
from think2seg.server.state import ModelState
from think2seg.server.tiles import tile_by_reference, tile_from_upload
from think2seg.server.token import load_or_create_token
from think2seg.timing import StageTimer

PACKAGES = ("think2seg", "torch", "transformers", "rasterio", "shapely", "pyproj", "fastapi", "uvicorn")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope, "description": text}
    for code, text in {
        401: "missing or wrong token",
        403: "browser Origin, foreign Host, or a path outside the data roots",
        404: "no such raster or job",
        409: "conflicting output",
        413: "upload, image or window too large",
        422: "invalid request",
        429: "busy: retry after Retry-After seconds",
        503: "models loading, unavailable, or out of memory",
    }.items()
}
_bearer = HTTPBearer(auto_error=False, description="the token from the file `think2seg serve` prints")


def create_app(
    settings: ServerSettings | None = None, engine: ServingEngine | None = None, *, token: str | None = None
) -> FastAPI:
    """The API app. ``engine`` skips model loading; ``token`` skips the token file (tests)."""
    settings = settings or ServerSettings()
    state = ModelState(settings, engine)
    jobs = JobManager(state, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        yield
        await run_in_threadpool(jobs.shutdown)
        state.worker.stop()

    app = FastAPI(
        title="think2seg",
        version=__version__,
        description="Ask a question about a raster, get georeferenced polygons (Think2Seg-RS). API v1.",
        lifespan=lifespan,
        openapi_url=None,  # served below, behind the token like every route but health
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings, app.state.models, app.state.jobs = settings, state, jobs
    app.state.token = token if token is not None else load_or_create_token(settings.token_file)
    app.add_middleware(
        GuardMiddleware,
        allowed_origins=settings.allowed_origins,
        allowed_hosts=settings.allowed_hosts,
        max_body_bytes=settings.max_upload_bytes,
    )
    install_handlers(app)
    install_api_error_handler(app)
    _routes(app, state, jobs, settings)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema

    @app.get("/openapi.json", dependencies=[Depends(require_token)], include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request models that /v1/segment reads by hand (two content types)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (SegmentByReference, UploadMeta):
            definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(definition.pop("$defs", {}))
            components[model.__name__] = definition
        app.openapi_schema = schema
    return app.openapi_schema


async def refuse_repeated_keys(request: Request) -> None:
    """422 for a JSON body that names a key twice in one object (parsers would keep the last silently)."""
    if request.headers.get("content-type", "").startswith("application/json"):
        _refuse_repeated(await request.body())


def require_token(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    expected = request.app.state.token
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        file = request.app.state.settings.token_file
        raise ApiError(
            401, "unauthorized", f"missing or wrong token: send 'Authorization: Bearer TOKEN' with the token in {file}"
        )


def _routes(app: FastAPI, state: ModelState, jobs: JobManager, settings: ServerSettings) -> None:
    auth = [Depends(require_token)]
    json_body = [*auth, Depends(refuse_repeated_keys)]

    @app.get("/v1/health", response_model=HealthReply, tags=["health"])
    def health() -> HealthReply:
        """Status of the models (no token needed): ``loading``, ``ready`` or ``error``."""
        device, gpu = _device(settings.device)
        return HealthReply(
            status=state.status,
            message=state.message,
            api_version=API_VERSION,
            version=__version__,
            device=device,
            gpu=gpu,
            models=state.models,
            packages={name: _version(name) for name in PACKAGES},
            queue_depth=state.worker.waiting,
            running_jobs=jobs.running,
        )

    @app.post(
        "/v1/segment",
        dependencies=auth,
        tags=["segment"],
        response_model=SegmentReply,
        responses={
            **ERRORS,
            200: {
                "content": {"text/event-stream": {}},
                "description": "the result, or with Accept: text/event-stream the reasoning as it is generated, then the result",
            },
        },
        openapi_extra={"requestBody": _segment_body()},
    )
    async def segment_tile(request: Request) -> Any:
        """Segment one tile by question (LVLM + SAM) or by explicit prompts (SAM alone).

        JSON body: a window of a raster on the server's disk (``raster_path``, ``bounds``,
        ``bounds_crs``). Multipart: ``file`` (GeoTIFF, or PNG/JPEG with ``transform`` and ``crs``)
        and ``request`` (the options as JSON).
        """
        timer = StageTimer()
        tile, prompts_crs, options = await _tile_and_options(request, settings, timer)
        streaming = "text/event-stream" in request.headers.get("accept", "")
        if not streaming:
            future = segment.submit(state, tile, options, prompts_crs, timer)
            try:
                inference = await asyncio.wrap_future(future)
                engine = state.require_engine()  # there is one: it answered
                return JSONResponse(await run_in_threadpool(segment.reply, engine, inference, options, timer))
            except Exception as exc:  # model failures (out of memory...) become the envelope
                raise to_api_error(exc) from exc
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[str | None] = asyncio.Queue()

        def forward(text: str) -> None:
            loop.call_soon_threadsafe(chunks.put_nowait, text)

        on_text = forward if options.question else None
        future = segment.submit(state, tile, options, prompts_crs, timer, on_text=on_text)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(chunks.put_nowait, None))
        return StreamingResponse(_events(state, future, chunks, options, timer), media_type="text/event-stream")

    @app.post(
        "/v1/jobs",
        dependencies=json_body,
        tags=["jobs"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=JobStatus,
        responses=ERRORS,
    )
    async def start_job(body: JobRequest) -> JobStatus:
        """Start a batch run over a raster on the server's disk, written to ``output_path``."""
        job = await run_in_threadpool(jobs.start, body)
        return job.status()

    @app.post(
        "/v1/change",
        dependencies=json_body,
        tags=["jobs"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=JobStatus,
        responses=ERRORS,
    )
    async def start_change(body: ChangeRequest) -> JobStatus:
        """Start a change job between two rasters on the server's disk (followed as a job), written to ``output_path``."""
        job = await run_in_threadpool(jobs.start_change, body)
        return job.status()

    @app.get("/v1/jobs", dependencies=auth, tags=["jobs"], response_model=JobList, responses=ERRORS)
    def list_jobs() -> JobList:
        return JobList(jobs=[job.status() for job in jobs.list()])

    @app.get("/v1/jobs/{job_id}", dependencies=auth, tags=["jobs"], response_model=JobStatus, responses=ERRORS)
    def job_status(job_id: str) -> JobStatus:
        return jobs.get(job_id).status()

    @app.delete("/v1/jobs/{job_id}", dependencies=auth, tags=["jobs"], response_model=JobStatus, responses=ERRORS)
    def cancel_job(job_id: str) -> JobStatus:
        """Stop a job after its tile in progress; its GeoPackage stays resumable."""
        return jobs.cancel(job_id).status()


async def _tile_and_options(request: Request, settings: ServerSettings, timer: StageTimer) -> tuple[Any, Any, Any]:
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/json"):
            body = await request.body()
            _refuse_repeated(body)
            options = SegmentByReference.model_validate_json(body)
            with timer.stage("read"):
                tile, prompts_crs = await run_in_threadpool(tile_by_reference, options, settings)
            return tile, prompts_crs, options
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=4)
            upload, meta_text = form.get("file"), form.get("request")
            if not isinstance(upload, UploadFile) or not isinstance(meta_text, str):
                raise ApiError(
                    422, "invalid_input", "a multipart request needs a 'file' part and a 'request' part (JSON options)"
                )
            _refuse_repeated(meta_text)
            meta = UploadMeta.model_validate_json(meta_text)
            with timer.stage("read"):
                tile = await run_in_threadpool(tile_from_upload, await upload.read(), meta, settings)
            return tile, tile.crs, meta
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        raise ApiError(422, "invalid_input", f"the request does not fit the API: {problems}") from exc
    except (ApiError, BodyTooLarge):
        raise
    except StarletteHTTPException as exc:  # e.g. a multipart body without a boundary
        raise ApiError(exc.status_code, "invalid_input", f"the request body cannot be read: {exc.detail}") from exc
    except Exception as exc:  # library errors (bad raster, bounds...) become the envelope
        raise to_api_error(exc) from exc
    raise ApiError(
        415, "unsupported_media_type", "send application/json (raster by reference) or multipart/form-data (upload)"
    )


def _refuse_repeated(body: str | bytes) -> None:
    key = repeated_key(body)
    if key is not None:
        raise ApiError(422, "invalid_input", repeated_key_message(key))


async def _events(
    state: ModelState, future: Any, chunks: asyncio.Queue[str | None], options: Any, timer: StageTimer
) -> AsyncIterator[str]:
    while (text := await chunks.get()) is not None:
        yield _sse("reasoning", {"text": text})
    try:
        inference = future.result()
        body = await run_in_threadpool(segment.reply, state.require_engine(), inference, options, timer)
        yield _sse("result", body)
    except Exception as exc:  # the stream has started: report the error as an event
        error = to_api_error(exc)
        yield _sse("error", {"error": {"code": error.code, "message": error.message}})


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _segment_body() -> dict[str, Any]:
    upload_schema = {
        "type": "object",
        "required": ["file", "request"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "GeoTIFF, PNG or JPEG"},
            "request": {"type": "string", "description": "UploadMeta as JSON"},
        },
    }
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SegmentByReference"}},
            "multipart/form-data": {"schema": upload_schema},
        },
    }


def _device(spec: str) -> tuple[str, Any]:
    import torch

    from think2seg.errors import DeviceError
    from think2seg.models.device import plan_device

    try:
        plan = plan_device(spec)
    except DeviceError as exc:
        return f"{spec} ({exc})", None
    if plan.device.type != "cuda":
        return str(plan.device), None
    free, total = torch.cuda.mem_get_info(plan.device)
    name = torch.cuda.get_device_name(plan.device)
    return str(plan.device), {"name": name, "memory_total_mb": total // 2**20, "memory_free_mb": free // 2**20}


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


__all__ = ["create_app", "envelope"]
