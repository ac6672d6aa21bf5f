"""The ``think2seg`` command line. Commands only parse options and call the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from think2seg._version import __version__
from think2seg.cli import batch, change, download, evaluate, info, segment, serve, train
from think2seg.errors import Think2SegError

COMMANDS = (segment, batch, change, serve, evaluate, train, download, info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="think2seg",
        description="Ask a question about a raster, get georeferenced polygons (Think2Seg-RS: Qwen2.5-VL + SAM 2.1).",
    )
    parser.add_argument("--version", action="version", version=f"think2seg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (model loading, library warnings)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.run(args) or 0)
    except Think2SegError as exc:
        print(f"think2seg: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("think2seg: interrupted; no output was written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): stop quietly, like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _configure_logging(verbose: bool) -> None:
    """Our progress lines at INFO; library chatter (GDAL warnings, Transformers notices) only with -v."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="think2seg: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("think2seg").setLevel(logging.INFO)
    if not verbose:
        from transformers.utils import logging as hf_logging

        logging.getLogger("rasterio").setLevel(logging.ERROR)
        hf_logging.set_verbosity_error()
