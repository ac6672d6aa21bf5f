"""``think2seg serve``: the local backend the QGIS plugin talks to (HTTP API v1)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

from think2seg.cli.options import (
    add_batch_size,
    add_model_options,
    add_positive_int,
    non_negative_int,
    positive_int,
)
from think2seg.server.access_log import quiet_health_polls
from think2seg.server.settings import DEFAULT_PORT, LOOPBACK_HOSTS, ServerSettings, default_token_file

log = logging.getLogger("think2seg")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the HTTP backend for the QGIS plugin",
        description="Serve questions and batch jobs over HTTP on this machine (API v1, see the README).",
    )
    network = parser.add_argument_group("network and security")
    network.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)"
    )
    network.add_argument("--port", type=positive_int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    network.add_argument(
        "--token-file",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"bearer token file, made on first start (default {default_token_file()})",
    )
    network.add_argument(
        "--data-root",
        type=Path,
        action="extend",
        nargs="+",
        metavar="DIR",
        help="folders whose rasters and outputs clients may use (one or more, repeatable; default your home folder)",
    )
    network.add_argument(
        "--any-path",
        action="store_true",
        help="let clients use any absolute path this user can read or write: for a backend that only this "
        "user's QGIS talks to (loopback --host only; overrides --data-root)",
    )
    network.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin to accept (repeatable; default none)",
    )
    network.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a Host header to accept besides this machine's names (repeatable)",
    )
    limits = parser.add_argument_group("limits")
    add_positive_int(
        limits, "--queue-size", default=8, help="interactive requests that may wait for the models before 429"
    )
    add_positive_int(limits, "--max-jobs", default=4, help="batch jobs running at once")
    add_batch_size(
        limits,
        help="questions waiting together that share one model batch (default auto: as many as fit the "
        "free GPU memory, 1 on a CPU; 1 never groups)",
    )
    add_positive_int(limits, "--max-upload-mb", default=256, help="largest request body")
    jobs = parser.add_argument_group("batch jobs on Ray (needs think2seg[ray])")
    jobs.add_argument(
        "--workers",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="Ray model workers for each batch job whose request does not say (each loads its own models, "
        "one GPU each; default 0: jobs run on the server's own models)",
    )
    jobs.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="the Ray cluster the workers join (default RAY_ADDRESS, else a local Ray instance)",
    )
    add_model_options(parser)
    parser.set_defaults(run=run, usage_error=parser.error)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from think2seg.server.app import create_app

    settings = settings_from_args(args)
    app = create_app(settings)
    log.info("serving on http://%s:%d (API v1); health: /v1/health", settings.host, settings.port)
    log.info("token file: %s (send 'Authorization: Bearer TOKEN')", settings.token_file)
    log.info("data roots: %s", _roots_line(settings))
    if settings.job_workers:
        where = settings.ray_address or "RAY_ADDRESS or a local Ray instance"
        log.info("batch jobs: %d Ray model workers each unless a request says (on %s)", settings.job_workers, where)
    if settings.any_path and args.data_root:
        log.warning("--any-path given: clients may use any path, so --data-root %s is ignored", _listed(args.data_root))
    if settings.host not in LOOPBACK_HOSTS and not settings.allowed_hosts:
        log.warning("listening on %s: remote clients also need --allow-host NAME:%d", settings.host, settings.port)
    quiet_health_polls()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=120)
    return 0


def _roots_line(settings: ServerSettings) -> str:
    return "any path (--any-path)" if settings.any_path else _listed(settings.resolved_roots())


def _listed(paths: Sequence[Path]) -> str:
    return ", ".join(str(p) for p in paths)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The server's settings from ``think2seg serve``'s options (a usage error for --any-path on a
    host that others can reach)."""
    if args.any_path and args.host not in LOOPBACK_HOSTS:
        args.usage_error(
            f"--any-path lets clients read and write any file of yours, so it goes only with a --host of "
            f"this machine alone ({', '.join(LOOPBACK_HOSTS)}), not {args.host}: for a server that others "
            "reach, drop --any-path and name the folders they may use with --data-root DIR"
        )
    if args.workers and find_spec("ray") is None:
        args.usage_error(
            f"--workers {args.workers} runs batch jobs on Ray model workers, but Ray is not installed: "
            "install think2seg[ray] (pip install 'think2seg[ray]'), or drop --workers"
        )
    return ServerSettings(
        host=args.host,
        port=args.port,
        token_file=args.token_file or default_token_file(),
        data_roots=tuple(args.data_root) if args.data_root else (Path.home(),),
        any_path=args.any_path,
        allowed_origins=tuple(args.allow_origin),
        allowed_hosts=tuple(args.allow_host),
        lvlm=args.lvlm,
        segmenter=args.segmenter,
        device=args.device,
        max_new_tokens=args.max_new_tokens,
        compile=args.compile,
        queue_size=args.queue_size,
        max_jobs=args.max_jobs,
        batch_size=args.batch_size,
        max_upload_mb=args.max_upload_mb,
        job_workers=args.workers,
        ray_address=args.ray_address,
    )
