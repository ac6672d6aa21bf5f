"""``think2seg segment RASTER QUESTION -o OUT.gpkg``: one question about one raster window."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from think2seg.cli.options import (
    add_gpkg_output,
    add_model_options,
    add_raster_and_question,
    add_raster_options,
    add_vector_options,
    model_spec,
)
from think2seg.cli.summary import format_summary
from think2seg.engine import NO_DATA_MESSAGE
from think2seg.errors import EmptyWindowError, InputError
from think2seg.geo.read import read_tile
from think2seg.options import check_min_area
from think2seg.output.atomic import check_output_path
from think2seg.output.geojson import to_feature_collection
from think2seg.output.gpkg import write_gpkg
from think2seg.output.maskfile import write_mask_geotiff
from think2seg.think2seg_rs.prompt import validate_question
from think2seg.timing import StageTimer

log = logging.getLogger("think2seg")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "segment",
        help="segment one raster window by a question",
        description="Ask one question about a raster (or a window of it) and write the polygons to a GeoPackage.",
    )
    add_raster_and_question(
        parser, formats="GeoTIFF, JPEG2000, VRT...", example="segment the flooded farmland next to the river"
    )
    add_gpkg_output(
        parser, required=False, help="GeoPackage to write (layers segments, prompt_boxes, prompt_points, runs)"
    )
    parser.add_argument(
        "--mask-out",
        type=Path,
        metavar="MASK.tif",
        help="also write the binary mask as a GeoTIFF aligned with the window",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a GeoJSON FeatureCollection (with its CRS) on stdout instead of the summary",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_raster_options(parser)
    add_vector_options(parser)
    add_model_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    question = validate_question(args.question)
    output, mask_out = _check_outputs(args)
    timer = StageTimer()
    with timer.stage("read"):
        tile = read_tile(args.raster, bounds=args.bounds, max_side_px=args.max_side_px, pixel_coords=args.pixel_coords)
    if not tile.has_data:
        raise EmptyWindowError(f"{args.raster}: {NO_DATA_MESSAGE}")
    check_min_area(args.min_area_m2, tile.crs)
    log.info("loading %s and %s (device %s)", args.lvlm, args.segmenter, args.device)
    engine = model_spec(args).load()
    stream = _reasoning_stream(args)
    result = engine.segment_tile(
        tile, question, simplify_px=args.simplify_px, min_area_m2=args.min_area_m2, on_text=stream, timer=timer
    )
    if stream is not None:
        sys.stderr.write("\n")
    with timer.stage("write"):
        if output is not None:
            write_gpkg(result, output, overwrite=args.overwrite)
        if mask_out is not None:
            write_mask_geotiff(result, mask_out, overwrite=args.overwrite)
    if args.json:
        json.dump(to_feature_collection(result), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(format_summary(result, timer.seconds, outputs=[p for p in (output, mask_out) if p]))
    return 0


def _check_outputs(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """Validate every output path before any work, so a bad path costs nothing."""
    if args.output is None and args.mask_out is None and not args.json:
        raise InputError("nothing to write: give -o OUT.gpkg, --mask-out MASK.tif or --json")
    output = check_output_path(args.output, overwrite=args.overwrite, suffixes=(".gpkg",)) if args.output else None
    mask_out = (
        check_output_path(args.mask_out, overwrite=args.overwrite, suffixes=(".tif", ".tiff"))
        if args.mask_out
        else None
    )
    return output, mask_out


def _reasoning_stream(args: argparse.Namespace) -> Callable[[str], None] | None:
    """Show the reasoning as it is generated when a person watches the terminal."""
    if args.json or not sys.stderr.isatty():
        return None
    sys.stderr.write("reasoning: ")

    def write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    return write
