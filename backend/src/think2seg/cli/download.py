"""``think2seg download``: fetch model weights into the Hugging Face cache ahead of time."""

from __future__ import annotations

import argparse

from think2seg.models.registry import parse_sam1_spec
from think2seg.models.weights import DEFAULT_LVLM, DEFAULT_SEGMENTER, resolve_model_dir


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "download",
        help="download model weights ahead of time",
        description=(
            f"Download the weights into the Hugging Face cache (defaults: {DEFAULT_LVLM} and {DEFAULT_SEGMENTER}). "
            "Copy the cache folder (see `think2seg info`) to a machine without internet to use them there."
        ),
    )
    parser.add_argument(
        "--lvlm", action="append", metavar="ID", help=f"prompter to fetch (repeatable; default {DEFAULT_LVLM})"
    )
    parser.add_argument(
        "--segmenter",
        action="append",
        metavar="ID",
        help=f"segmenter to fetch (repeatable; default {DEFAULT_SEGMENTER})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    lvlms = args.lvlm or ([] if args.segmenter else [DEFAULT_LVLM])
    segmenters = args.segmenter or ([] if args.lvlm else [DEFAULT_SEGMENTER])
    for flag, sources in (("--lvlm", lvlms), ("--segmenter", segmenters)):
        for source in sources:
            variant, _ = parse_sam1_spec(source)
            if variant is not None:
                print(f"{source}: SAM v1 checkpoints are local .pth files, nothing to download")
                continue
            print(f"{source}: {resolve_model_dir(source, flag=flag)}")
    return 0
