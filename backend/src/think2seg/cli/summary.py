"""The short human summary ``think2seg segment`` prints."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from think2seg.geo.overlaps import overlap_totals
from think2seg.result import SegmentationResult
from think2seg.timing import STAGES


def format_summary(result: SegmentationResult, seconds: dict[str, float], *, outputs: Sequence[Path] = ()) -> str:
    tile = result.tile
    crs = tile.crs.to_string() if tile.crs else "pixel coordinates"
    lines = [
        f"status     {result.status.value}" + (f" ({result.message})" if result.message else ""),
        f"instances  {len(result.instances)}" + format_scores(result),
        f"polygons   {len(result.polygons)}, total area {format_area(result.total_area_m2, tile.crs is not None)} ({crs})",
        f"window     {tile.width} x {tile.height} px"
        + (" (decimated)" if tile.is_decimated else " at full resolution"),
    ]
    lines += [f"note       {note}" for note in tile.notes]
    lines += [f"wrote      {path}" for path in outputs]
    lines.append(f"time       {format_timings(seconds)}")
    reasoning = result.reasoning or "(none)"
    lines.append("reasoning  " + textwrap.fill(reasoning, width=100, subsequent_indent=" " * 11))
    if result.status.value == "unparseable":
        lines.append("answer     " + textwrap.fill(result.raw_answer, width=100, subsequent_indent=" " * 11))
    return "\n".join(lines)


def format_scores(result: SegmentationResult) -> str:
    """The instances' SAM scores (predicted mask IoU), e.g. " (scores 0.91, 0.62)"; empty when unknown."""
    scores = [i.score for i in result.instances if not math.isnan(i.score)]
    return f" (SAM scores {', '.join(f'{s:.2f}' for s in scores)})" if scores else ""


def format_overlaps(overlaps: pd.DataFrame | dict[tuple[str, str], float] | None, *, georeferenced: bool) -> str:
    """One line per pair of classes that claim the same ground (kept in both), or that none do;
    ``overlaps`` is a ``class_overlaps`` layer or its totals (:func:`overlap_totals`)."""
    totals = overlaps if isinstance(overlaps, dict) else overlap_totals(overlaps) if overlaps is not None else {}
    if not totals:
        return "overlaps   none between the classes"
    return "\n".join(
        f"overlaps   {a} and {b}: {format_area(area, georeferenced)} (kept in both: layer class_overlaps)"
        for (a, b), area in totals.items()
    )


def format_timings(seconds: dict[str, float]) -> str:
    ordered = [s for s in STAGES if s in seconds] + [s for s in seconds if s not in STAGES]
    parts = [f"{name} {seconds[name]:.2f}s" for name in ordered]
    return ", ".join(parts) + f"; total {sum(seconds.values()):.2f}s"


def format_area(area_m2: float, georeferenced: bool = True) -> str:
    if not georeferenced:
        return "n/a"
    if area_m2 >= 1e6:
        return f"{area_m2 / 1e6:,.3f} km²"
    return f"{area_m2:,.1f} m²"
