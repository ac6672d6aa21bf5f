"""Command-line options shared by several commands."""

from __future__ import annotations

import argparse

from think2seg.batch.options import ModelSpec
from think2seg.geo.read import DEFAULT_MAX_SIDE_PX
from think2seg.models.qwen import MAX_NEW_TOKENS
from think2seg.models.registry import SEGMENTER_SYNTAX
from think2seg.models.weights import DEFAULT_LVLM, DEFAULT_SEGMENTER


def non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument(
        "--lvlm",
        default=DEFAULT_LVLM,
        metavar="ID|DIR",
        help=f"Qwen2.5-VL prompter: Hub id or folder (default {DEFAULT_LVLM})",
    )
    group.add_argument(
        "--segmenter",
        default=DEFAULT_SEGMENTER,
        metavar="SPEC",
        help=f"{SEGMENTER_SYNTAX} (default {DEFAULT_SEGMENTER})",
    )
    group.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]", help="compute device (default auto)")
    group.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=MAX_NEW_TOKENS,
        metavar="N",
        help=f"longest answer the LVLM may write, reasoning included (default {MAX_NEW_TOKENS})",
    )
    group.add_argument(
        "--compile",
        action="store_true",
        help="static KV cache and a compiled decoding step (CUDA; each new batch shape first compiles "
        "for about a minute; see bench/gpu_throughput.py for whether it pays on your GPU)",
    )


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The models named by :func:`add_model_options`' flags (loaded with ``.load()``)."""
    return ModelSpec(args.lvlm, args.segmenter, args.device, args.max_new_tokens, args.compile)


def add_raster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("raster")
    group.add_argument(
        "--bounds",
        nargs=4,
        type=float,
        metavar=("MINX", "MINY", "MAXX", "MAXY"),
        help="window in the raster's CRS (default: whole raster)",
    )
    group.add_argument(
        "--max-side-px",
        type=positive_int,
        default=DEFAULT_MAX_SIDE_PX,
        metavar="N",
        help=f"windows with a longer side are read decimated (default {DEFAULT_MAX_SIDE_PX})",
    )
    group.add_argument(
        "--pixel-coords",
        action="store_true",
        help="accept a raster without CRS: output in pixel coordinates (x=col, y=row)",
    )


def add_vector_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("polygons")
    group.add_argument(
        "--simplify-px",
        type=non_negative,
        default=0.0,
        metavar="F",
        help="simplification tolerance in pixels (default 0: exact pixel edges)",
    )
    group.add_argument(
        "--min-area-m2", type=non_negative, default=0.0, metavar="F", help="drop polygons smaller than this (default 0)"
    )
