"""``think2seg segment RASTER QUESTION -o OUT.gpkg``: questions about one raster window.

One question (the positional QUESTION), several (``--question`` repeated) or named classes
(``--classes FILE``) are asked of the same window in one pass: one LVLM batch, one SAM encoding.
The output's extension picks its format (:mod:`think2seg.output.formats`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from think2seg.classes import ClassQuestions
from think2seg.cli.options import (
    add_class_options,
    add_gpkg_output,
    add_model_options,
    add_raster_options,
    add_vector_options,
    classes_from_args,
    model_spec,
)
from think2seg.cli.summary import format_overlaps, format_summary
from think2seg.engine import Engine
from think2seg.errors import EmptyWindowError, InputError
from think2seg.geo.read import read_tile
from think2seg.inference import NO_DATA_MESSAGE
from think2seg.options import check_min_area
from think2seg.output.atomic import check_output_path
from think2seg.output.formats import VECTOR_FORMATS, check_vector_output, write_vector
from think2seg.output.geojson import to_feature_collection
from think2seg.output.gpkg import result_layers, write_gpkg_layers
from think2seg.output.maskfile import write_mask_geotiff
from think2seg.result import SegmentationResult
from think2seg.tile import Tile
from think2seg.timing import StageTimer

log = logging.getLogger("think2seg")
FORMATS = ", ".join(VECTOR_FORMATS)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "segment",
        help="segment one raster window by one or more questions",
        description="Ask questions about a raster (or a window of it) and write the polygons to a GeoPackage "
        f"(or {FORMATS}, by the output's extension).",
    )
    parser.add_argument(
        "raster", help="any raster GDAL reads (GeoTIFF, JPEG2000, VRT...), a URL, a GDAL WMS/WMTS .xml or a STAC item"
    )
    parser.add_argument(
        "question", nargs="?", help='what to segment, e.g. "segment the flooded farmland next to the river"'
    )
    add_gpkg_output(
        parser,
        required=False,
        help=f"vector file to write, its format by extension ({FORMATS}); a GeoPackage holds the layers segments, "
        "prompt_boxes, prompt_points, runs (and class_overlaps), the others the segments",
    )
    parser.add_argument(
        "--mask-out",
        type=Path,
        metavar="MASK.tif",
        help="also write the binary mask as a GeoTIFF aligned with the window (one band per question)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a GeoJSON FeatureCollection (with its CRS) on stdout instead of the summary; one line per "
        "question when there are several",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_class_options(parser)
    add_raster_options(parser)
    add_vector_options(parser)
    add_model_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    classes = classes_from_args(args)  # before any work: a bad question or class file costs nothing
    output, mask_out = _check_outputs(args)
    timer = StageTimer()
    with timer.stage("read"):
        tile = read_tile(
            args.raster,
            bounds=args.bounds,
            max_side_px=args.max_side_px,
            pixel_coords=args.pixel_coords,
            resolution_m=args.resolution_m,
            stac_asset=args.stac_asset,
        )
    if not tile.has_data:
        raise EmptyWindowError(f"{args.raster}: {NO_DATA_MESSAGE}")
    check_min_area(args.min_area_m2, tile.crs)
    log.info("loading %s and %s (device %s)", args.lvlm, args.segmenter, args.device)
    engine = model_spec(args).load()
    results = _segment(engine, tile, classes, args, timer)
    notes: list[str] = []
    layers = result_layers(results)
    with timer.stage("write"):
        if output is not None:
            notes = _write(layers, output, overwrite=args.overwrite)
        if mask_out is not None:
            write_mask_geotiff(results, mask_out, overwrite=args.overwrite)
    for note in notes:
        log.warning("%s: %s", output.name if output else "", note)
    if args.json:
        for result in results:
            json.dump(to_feature_collection(result), sys.stdout)
            sys.stdout.write("\n")
    else:
        _print_summary(results, layers.get("class_overlaps"), timer.seconds, [p for p in (output, mask_out) if p])
    return 0


def _segment(
    engine: Engine, tile: Tile, classes: list[ClassQuestions], args: argparse.Namespace, timer: StageTimer
) -> list[SegmentationResult]:
    vector = {
        "simplify_px": args.simplify_px,
        "min_area_m2": args.min_area_m2,
        "min_score": args.min_score,
        "outline": args.outline,
    }
    asked = [(c.name, q) for c in classes for q in c.questions]
    if len(asked) > 1:
        return engine.segment_classes(tile, classes, timer=timer, **vector)
    ((name, question),) = asked
    stream = _reasoning_stream(args)
    result = engine.segment_tile(tile, question, on_text=stream, timer=timer, **vector)
    if stream is not None:
        sys.stderr.write("\n")
    return [replace(result, class_name=name)]


def _write(layers: dict[str, pd.DataFrame], output: Path, *, overwrite: bool) -> list[str]:
    if output.suffix.lower() == ".gpkg":
        write_gpkg_layers(layers, output, overwrite=overwrite)
        return []
    return write_vector(layers, output, overwrite=overwrite)


def _print_summary(
    results: Sequence[SegmentationResult],
    overlaps: pd.DataFrame | None,
    seconds: dict[str, float],
    outputs: list[Path],
) -> None:
    if len(results) == 1:
        print(format_summary(results[0], seconds, outputs=outputs))
        return
    for result in results:
        print(f"== {result.class_name or result.question}")
        print(format_summary(result, result.timings_s))
    print(format_overlaps(overlaps, georeferenced=results[0].crs is not None))
    for path in outputs:
        print(f"wrote      {path}")


def _check_outputs(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """Validate every output path before any work, so a bad path costs nothing."""
    if args.output is None and args.mask_out is None and not args.json:
        raise InputError("nothing to write: give -o OUT.gpkg, --mask-out MASK.tif or --json")
    output = check_vector_output(args.output, overwrite=args.overwrite) if args.output else None
    if output is not None and output.suffix.lower() == ".geojson" and args.pixel_coords:
        raise InputError(
            f"{output.name}: GeoJSON needs a CRS, and --pixel-coords output has none: write .gpkg or .fgb instead"
        )
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
