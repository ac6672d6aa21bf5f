"""Command-line options shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from think2seg.batch.options import ModelSpec
from think2seg.classes import ClassQuestions, classes_from_questions, load_classes
from think2seg.errors import InputError
from think2seg.geo.outline import OUTLINES
from think2seg.geo.remote import check_resolution_m
from think2seg.models.qwen import MAX_NEW_TOKENS
from think2seg.models.registry import SEGMENTER_SYNTAX
from think2seg.models.weights import DEFAULT_LVLM, DEFAULT_SEGMENTER
from think2seg.options import MAX_SIDE_PX, MIN_AREA_M2, MIN_SCORE, SIMPLIFY_PX, Option
from think2seg.runs.microbatch import AUTO, parse_batch_size

Container = argparse._ActionsContainer  # a parser or an argument group of one


class _IntAtLeast:
    """An argparse type: an integer >= ``minimum``; ``__name__`` names it in argparse's messages
    ("invalid positive_int value: 'x'")."""

    def __init__(self, minimum: int, name: str) -> None:
        self.minimum = minimum
        self.__name__ = name

    def __call__(self, text: str) -> int:
        value = int(text)
        if value < self.minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {self.minimum}, got {text}")
        return value


positive_int = _IntAtLeast(1, "positive_int")
non_negative_int = _IntAtLeast(0, "non_negative_int")


def add_positive_int(group: Container, flag: str, *, default: int, help: str) -> None:
    """An ``N`` option: an integer >= 1, its default said at the end of ``help``."""
    group.add_argument(flag, type=positive_int, default=default, metavar="N", help=f"{help} (default {default})")


def add_option(group: Container, option: Option) -> None:
    """The flag of ``option`` (``--simplify-px F``): its parsing, default and help come from the
    :class:`~think2seg.options.Option`, so a bad value reads as in the Python and HTTP APIs."""
    group.add_argument(
        option.flag,
        type=option.parse,
        default=option.default,
        metavar="N" if option.whole else "F",
        help=f"{option.help} [{option.unit}, {option.span}; default {option.default:g}]",
    )


def add_batch_size(group: Container, *, help: str) -> None:
    """``--batch-size N|auto`` (default auto); ``help`` says what is batched."""
    group.add_argument("--batch-size", type=parse_batch_size, default=AUTO, metavar="N|auto", help=help)


def add_bounds(group: Container, *, help: str) -> None:
    """``--bounds MINX MINY MAXX MAXY``, four numbers in the raster's CRS."""
    group.add_argument("--bounds", nargs=4, type=float, metavar=("MINX", "MINY", "MAXX", "MAXY"), help=help)


def add_raster_and_question(parser: argparse.ArgumentParser, *, formats: str, example: str) -> None:
    """The positional ``raster`` and ``question`` of the commands that segment a raster."""
    parser.add_argument("raster", help=f"any raster GDAL reads ({formats}), a URL, a GDAL WMS/WMTS .xml or a STAC item")
    parser.add_argument("question", help=f'what to segment, e.g. "{example}"')


def add_class_options(parser: argparse.ArgumentParser) -> None:
    """``--question Q`` (repeatable) and ``--classes FILE``: several things to segment in one run."""
    group = parser.add_argument_group("classes")
    group.add_argument(
        "--question",
        dest="questions",
        action="append",
        metavar="Q",
        help="a question to ask; give it several times for several classes (each polygon's class is its question)",
    )
    group.add_argument(
        "--classes",
        type=Path,
        metavar="FILE",
        help='a YAML or JSON file mapping class name -> question(s), e.g. {"buildings": "segment the buildings", '
        '"water": "segment the lakes and rivers"}; each polygon gets its class name',
    )


def classes_from_args(args: argparse.Namespace) -> list[ClassQuestions]:
    """The classes asked for: the positional question, the ``--question``s, or the ``--classes`` file
    (exactly one of the three). Repeated questions and class names are refused."""
    given = [args.question is not None, bool(args.questions), args.classes is not None]
    if sum(given) != 1:
        raise InputError(
            "say what to segment once: a QUESTION, one or more --question, or --classes FILE (not several of them)"
        )
    if args.classes is not None:
        return load_classes(args.classes)
    return classes_from_questions([args.question] if args.question is not None else args.questions)


def add_gpkg_output(parser: argparse.ArgumentParser, *, required: bool, help: str) -> None:
    """``-o/--output OUT.gpkg``."""
    parser.add_argument("-o", "--output", type=Path, required=required, metavar="OUT.gpkg", help=help)


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
    add_positive_int(
        group, "--max-new-tokens", default=MAX_NEW_TOKENS, help="longest answer the LVLM may write, reasoning included"
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
    add_bounds(group, help="window in the raster's CRS (default: whole raster)")
    add_option(group, MAX_SIDE_PX)
    group.add_argument(
        "--pixel-coords",
        action="store_true",
        help="accept a raster without CRS: output in pixel coordinates (x=col, y=row)",
    )
    add_remote_options(group)


def add_remote_options(group: Container) -> None:
    """``--resolution-m M`` and ``--stac-asset NAME``: the read grid, and a STAC item's asset."""
    group.add_argument(
        "--resolution-m",
        type=_resolution_m,
        metavar="M",
        help="read at this ground resolution, metres per pixel (required for WMS/WMTS/XYZ services; "
        "default: the raster's own pixels)",
    )
    group.add_argument(
        "--stac-asset",
        metavar="NAME",
        help="the asset of a STAC item to read (default: the one with role 'visual', or named visual/image/rgb)",
    )


def _resolution_m(text: str) -> float:
    try:
        return check_resolution_m(float(text))
    except ValueError as exc:  # not a number, or out of range (InputError)
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_vector_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("polygons")
    add_option(group, SIMPLIFY_PX)
    add_option(group, MIN_AREA_M2)
    add_option(group, MIN_SCORE)
    group.add_argument(
        "--outline",
        choices=OUTLINES,
        default="pixel",
        help="pixel: exact pixel edges (default); simplify: Douglas-Peucker; smooth: natural features (water, "
        "fields); regularize: buildings, right angles. --simplify-px is the tolerance (default 1 px, 1.5 for "
        "regularize); outlines stay valid, never cross, and keep each polygon's area within 10%%",
    )
