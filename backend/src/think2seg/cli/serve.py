"""``think2seg serve``: the local backend the QGIS plugin talks to (HTTP API v1)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from think2seg.batching import AUTO, parse_batch_size
from think2seg.cli.options import add_model_options, positive_int
from think2seg.server.settings import DEFAULT_PORT, ServerSettings, default_token_file

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
    limits.add_argument(
        "--queue-size",
        type=positive_int,
        default=8,
        metavar="N",
        help="interactive requests that may wait for the models before 429 (default 8)",
    )
    limits.add_argument(
        "--max-jobs", type=positive_int, default=4, metavar="N", help="batch jobs running at once (default 4)"
    )
    limits.add_argument(
        "--batch-size",
        type=parse_batch_size,
        default=AUTO,
        metavar="N|auto",
        help="questions waiting together that share one model batch (default auto: as many as fit the "
        "free GPU memory, 1 on a CPU; 1 never groups)",
    )
    limits.add_argument(
        "--max-upload-mb", type=positive_int, default=256, metavar="N", help="largest request body (default 256)"
    )
    add_model_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from think2seg.server.app import create_app

    settings = settings_from_args(args)
    app = create_app(settings)
    log.info("serving on http://%s:%d (API v1); health: /v1/health", settings.host, settings.port)
    log.info("token file: %s (send 'Authorization: Bearer TOKEN')", settings.token_file)
    log.info("data roots: %s", ", ".join(str(r) for r in settings.resolved_roots()))
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.allowed_hosts:
        log.warning("listening on %s: remote clients also need --allow-host NAME:%d", settings.host, settings.port)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=120)
    return 0


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The server's settings from ``think2seg serve``'s options."""
    return ServerSettings(
        host=args.host,
        port=args.port,
        token_file=args.token_file or default_token_file(),
        data_roots=tuple(args.data_root) if args.data_root else (Path.home(),),
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
    )
