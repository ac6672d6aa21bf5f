"""``think2seg batch RASTER [RASTER ...] QUESTION -o OUT.gpkg``: one question over every tile of the rasters.

``--question`` (repeated) or ``--classes FILE`` instead of QUESTION asks several in one pass: every
tile is read once and asked all of them in one model batch; every row says its ``class``.

Exit status: 0 done; 1 bad input or an error (nothing is written, or the output keeps what was
finished); 2 bad usage; 3 done but some tiles failed (``--retry-failed`` redoes them); 130 interrupted
(``--resume`` continues).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from think2seg.batch.inputs import RasterRef, expand_rasters
from think2seg.batch.options import BatchOptions, BatchSummary
from think2seg.batch.runner import run_batch
from think2seg.classes import ClassQuestions
from think2seg.cli.options import (
    add_batch_size,
    add_bounds,
    add_class_options,
    add_gpkg_output,
    add_model_options,
    add_option,
    add_remote_options,
    add_vector_options,
    classes_from_args,
    model_spec,
)
from think2seg.cli.summary import format_area, format_overlaps, format_timings
from think2seg.errors import InputError
from think2seg.geo.remote import is_remote
from think2seg.options import OVERLAP_PX, PREFETCH, TILE_SIZE_PX
from think2seg.output.formats import VECTOR_FORMATS, check_vector_output, export_layer

log = logging.getLogger("think2seg")
FORMATS = ", ".join(VECTOR_FORMATS)

EXIT_SOME_TILES_FAILED = 3


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "batch",
        help="segment every tile of one or many rasters of any size",
        description=(
            "Ask one question (or several: --question repeated, --classes FILE) over every tile of one or many "
            "rasters (or of --bounds / --aoi) and write stitched "
            "polygons to one GeoPackage as tiles finish; every row names its source raster. Interrupted runs "
            "continue with --resume. --workers N runs the models on N Ray workers (GPUs or CPU shares)."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="RASTER ... QUESTION",
        help="rasters GDAL reads (GeoTIFF, COG, VRT...): files, folders (their rasters) or quoted globs like "
        "'tiles/*.tif'; then what to segment, e.g. \"every solar farm\" (unless --question or --classes says it)",
    )
    parser.add_argument(
        "--from-list", type=Path, metavar="FILE", help="also the rasters listed in FILE (one path or glob per line)"
    )
    add_gpkg_output(parser, required=True, help="GeoPackage holding the run and its results")
    parser.add_argument(
        "--export",
        type=Path,
        metavar="OUT.fgb",
        help=f"when the run ends, also write its segments to this file, the format by extension ({FORMATS}); "
        "OUT.gpkg stays the resumable run",
    )
    grid = parser.add_argument_group("tiles")
    add_option(grid, TILE_SIZE_PX)
    add_option(grid, OVERLAP_PX)
    add_bounds(grid, help="only this window, in the raster's CRS")
    grid.add_argument(
        "--aoi",
        type=Path,
        metavar="AOI.gpkg|.geojson",
        help="only tiles that meet these polygons; results are clipped to them",
    )
    grid.add_argument(
        "--pixel-coords", action="store_true", help="accept a raster without CRS: output in pixel coordinates"
    )
    add_remote_options(grid)
    grid.add_argument(
        "--target-crs",
        metavar="EPSG:XXXX",
        help="reproject the output polygons into this CRS (needed when the rasters' CRSs differ; areas are "
        "still measured in each raster's own CRS)",
    )
    run = parser.add_argument_group("run")
    add_batch_size(
        run,
        help="tiles sent through the LVLM and SAM at once; auto (default) fills the free GPU memory "
        "(1 on a CPU); halved when the GPU runs out of memory",
    )
    add_option(run, PREFETCH)
    run.add_argument("--resume", action="store_true", help="continue the interrupted run in OUT.gpkg (same options)")
    run.add_argument(
        "--retry-failed", action="store_true", help="continue the run in OUT.gpkg and redo its failed tiles"
    )
    run.add_argument("--overwrite", action="store_true", help="replace OUT.gpkg and start again")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--workers",
        type=_workers,
        default=0,
        metavar="N",
        help="run the models on N Ray workers: one GPU each, or a share of the CPUs (needs think2seg[ray])",
    )
    run.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster the workers join (default RAY_ADDRESS, else a local Ray instance)",
    )
    add_class_options(parser)
    add_vector_options(parser)
    add_model_options(parser)
    parser.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    export = check_vector_output(args.export, overwrite=args.overwrite) if args.export else None
    if export is not None and export == Path(args.output).expanduser().absolute():
        raise InputError(f"--export {export.name} is the run's own output: choose another file")
    rasters, classes = _rasters_and_classes(args)
    options = BatchOptions.named_like(args)
    models = model_spec(args)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run_batch(rasters, classes, args.output, models=models, options=options, progress=not args.quiet)
    except KeyboardInterrupt:
        print(
            f"think2seg: interrupted; the finished tiles are saved in {args.output}: "
            "run the same command with --resume to continue",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(format_batch_summary(summary))
    if export is not None:
        for note in export_layer(summary.output, export, overwrite=args.overwrite):
            log.warning("%s: %s", export.name, note)
        print(f"exported   {export}")
    return EXIT_SOME_TILES_FAILED if summary.failed or summary.previously_failed else 0


def _rasters_and_classes(args: argparse.Namespace) -> tuple[list[RasterRef], list[ClassQuestions]]:
    """The rasters and what to ask of them: the last positional is the question unless
    ``--question`` or ``--classes`` says what to segment."""
    inputs = list(args.inputs)
    told = bool(args.questions) or args.classes is not None
    if told and inputs and _looks_like_a_question(inputs[-1]):
        args.question = inputs.pop()  # refused below, with what to do
    else:
        args.question = None if told or not inputs else inputs.pop()
    classes = classes_from_args(args)
    return expand_rasters(inputs, from_list=args.from_list), classes


def _looks_like_a_question(text: str) -> bool:
    """Words, not a raster: no such file, no URL, and spaces in it."""
    return " " in text.strip() and not is_remote(text) and not Path(text).expanduser().exists()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--workers takes a whole number of workers (0 = none), not {text!r}")
    return value


def format_batch_summary(summary: BatchSummary) -> str:
    counts = summary.counts
    done_now = ", ".join(
        f"{status} {counts[status]}" for status in ("ok", "no_target", "unparseable", "failed") if counts.get(status)
    )
    skipped = ", ".join(f"{status} {counts[status]}" for status in ("no_data", "outside_aoi") if counts.get(status))
    lines = [
        f"output     {summary.output}"
        + (f" ({summary.rasters} rasters)" if summary.rasters > 1 else "")
        + (f", reprojected into {summary.output_crs}" if summary.reprojected else ""),
        f"tiles      {summary.tiles_total if summary.questions == 1 else summary.grid_text()} in the grid; segmented now {summary.processed}"
        + (f" ({done_now})" if done_now else "")
        + f"; skipped {summary.skipped}"
        + (f" ({skipped})" if skipped else "")
        + (f"; finished earlier {summary.tiles_before}" if summary.tiles_before else ""),
        f"polygons   {summary.polygons}"
        + (
            f" ({', '.join(f'{name} {count}' for name, count in summary.class_polygons.items())})"
            if summary.class_polygons
            else ""
        )
        + f", total area {format_area(summary.total_area_m2, summary.georeferenced)}",
        f"time       wall {summary.wall_s:.1f}s; {format_timings(summary.seconds)}",
        f"batches    {summary.batch_size} tile(s) at once"
        + (f" (halved {summary.oom_splits}x on out-of-memory)" if summary.oom_splits else "")
        + (f" on each of {summary.workers} workers" if summary.workers else ""),
    ]
    if summary.questions > 1:
        lines.append(format_overlaps(summary.class_overlaps, georeferenced=summary.georeferenced))
    if summary.workers:
        lines.append(f"workers    {summary.workers}; tiles sent again after a worker died: {summary.retries}")
    for skipped in summary.skipped_rasters:
        lines.append(f"skipped    {skipped}")
    if summary.failed or summary.previously_failed:
        now = f"{summary.failed} tile(s) now" if summary.failed else ""
        earlier = f"{summary.previously_failed} in earlier runs" if summary.previously_failed else ""
        lines.append(
            f"failed     {' and '.join(filter(None, (now, earlier)))} (see the tiles layer's message column): "
            "run the same command with --retry-failed to redo them"
        )
    return "\n".join(lines)
