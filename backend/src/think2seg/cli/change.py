"""``think2seg change BEFORE AFTER QUESTION -o OUT.gpkg``: what appeared, disappeared and persisted.

Exit status: 0 done; 1 bad input or an error (nothing is written); 2 bad usage; 130 interrupted
(a tiled run continues with ``--resume``).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from think2seg.change.align import DEFAULT_RESAMPLING, RESAMPLING_METHODS
from think2seg.change.compare import MIN_CHANGE_M2, SLIVER_PX
from think2seg.change.dates import parse_date
from think2seg.change.run import ChangeOptions, ChangeSummary, run_change, work_folder
from think2seg.cli.options import (
    add_batch_size,
    add_gpkg_output,
    add_model_options,
    add_option,
    add_vector_options,
    model_spec,
)
from think2seg.cli.summary import format_area
from think2seg.errors import InputError
from think2seg.options import MAX_SIDE_PX, OVERLAP_PX, PREFETCH, TILE_SIZE_PX

LAYER_NAMES = ("appeared", "disappeared", "persisted", "before_segments", "after_segments")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "change",
        help="what appeared, disappeared and persisted between two dates",
        description=(
            "Ask one question about two rasters of the same place and write what changed: layers appeared "
            "(in AFTER, not in BEFORE), disappeared, persisted, both dates' segments and a runs table. AFTER is "
            "resampled onto BEFORE's grid over their common extent; every layer is in BEFORE's CRS."
        ),
    )
    parser.add_argument("before", type=Path, metavar="BEFORE", help="the earlier raster (its grid and CRS are used)")
    parser.add_argument("after", type=Path, metavar="AFTER", help="the later raster (any CRS; resampled)")
    parser.add_argument("question", help='what to segment on both dates, e.g. "every building"')
    add_gpkg_output(parser, required=True, help="GeoPackage to write (change layers, both dates' segments, runs)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.gpkg (and a tiled run's work files)")
    change = parser.add_argument_group("change")
    change.add_argument(
        "--resampling",
        choices=RESAMPLING_METHODS,
        default=DEFAULT_RESAMPLING,
        help=f"how AFTER is resampled onto BEFORE's grid (default {DEFAULT_RESAMPLING})",
    )
    add_option(change, MIN_CHANGE_M2)
    add_option(change, SLIVER_PX)
    for role in ("before", "after"):
        change.add_argument(
            f"--{role}-date",
            type=_date,
            metavar="YYYY-MM-DD",
            help=f"the {role.upper()} raster's date (default: from its ACQUISITIONDATETIME / TIFFTAG_DATETIME)",
        )
    add_option(change, MAX_SIDE_PX)
    tiles = parser.add_argument_group("tiles (large rasters: two batch runs, then the overlay)")
    tiles.add_argument(
        "--tile-size-px",
        type=TILE_SIZE_PX.parse,
        metavar="N",
        help=f"segment both dates tile by tile with this tile side [{TILE_SIZE_PX.unit}, {TILE_SIZE_PX.span}; "
        "default: each date in one window, decimated beyond --max-side-px]",
    )
    add_option(tiles, OVERLAP_PX)
    add_batch_size(tiles, help="tiles sent through the models at once (default auto)")
    add_option(tiles, PREFETCH)
    tiles.add_argument("--resume", action="store_true", help="continue an interrupted tiled run (same options)")
    tiles.add_argument("--retry-failed", action="store_true", help="continue a tiled run and redo its failed tiles")
    tiles.add_argument("--quiet", action="store_true", help="no progress bar")
    add_vector_options(parser)
    add_model_options(parser)
    parser.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    options = ChangeOptions.named_like(args)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run_change(
            args.before,
            args.after,
            args.question,
            args.output,
            models=model_spec(args),
            options=options,
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        if not options.tiled:
            raise
        print(
            f"think2seg: interrupted; the finished tiles are kept in {work_folder(args.output.absolute())}: "
            "run the same command with --resume to continue",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(format_change_summary(summary))
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _date(text: str) -> str:
    try:
        return parse_date(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_change_summary(summary: ChangeSummary) -> str:
    """Counts and areas per layer, the dates and the grid."""
    before, after = (d.value or "date unknown" for d in summary.dates)
    width, height = summary.grid_px
    how = "already on BEFORE's grid" if summary.same_grid else f"resampled ({summary.resampling}) onto BEFORE's grid"
    lines = [
        f"output           {summary.output} ({summary.crs})",
        f"dates            BEFORE {before}, AFTER {after} ({how})",
        f"grid             {width} x {height} px over the common extent"
        + (f"; {summary.tiles[0]} + {summary.tiles[1]} tiles" if max(summary.tiles) > 1 else ""),
    ]
    for name in LAYER_NAMES:
        figures = summary.layers[name]
        lines.append(f"{name:<16} {figures.polygons} polygon(s), {format_area(figures.area_m2)}")
    lines += [f"note             {note}" for note in summary.notes]
    lines.append(f"time             {summary.wall_s:.1f}s")
    return "\n".join(lines)
