"""The parameters that define a batch run's result; a resumed run must match them exactly."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from think2seg.geo.read import RasterSource

PIECES = "pixel"
"""How this think2seg stores tile pieces: in whole-pixel coordinates of the raster (x = column, y = row)."""
LEGACY_PIECES = "map"
"""How think2seg stored them before ``pieces`` was recorded: in map coordinates."""


@dataclass(frozen=True)
class BatchParams:
    """Everything that changes which polygons a run produces (not the batch size or the device)."""

    question: str
    source: str
    raster: dict[str, Any]
    region: tuple[int, int, int, int]
    tile_size_px: int
    overlap_px: int
    aoi: str | None
    model: str
    segmenter: str
    max_new_tokens: int | None
    simplify_px: float
    min_area_m2: float
    pixel_coords: bool
    stretch: dict[str, list[float]]
    pieces: str = PIECES
    """The coordinates of the ``tile_pieces`` layer (a format marker, not an option)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BatchParams:
        values = json.loads(text)
        values["region"] = tuple(values["region"])
        values.setdefault("pieces", LEGACY_PIECES)  # written before the marker existed
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    def format_problem(self) -> str | None:
        """Why this think2seg cannot continue a run stored with these parameters (None if it can)."""
        if self.pieces == PIECES:
            return None
        if self.pieces == LEGACY_PIECES:
            return "was written by an older think2seg (map-coordinate tile pieces)"
        return f"was written by another think2seg (tile pieces in {self.pieces!r} coordinates)"

    def as_dict(self) -> dict[str, Any]:
        """The parameters as stored (JSON types), for :func:`~think2seg.runs.policy.differences`."""
        return json.loads(self.to_json())


def raster_fingerprint(source: RasterSource) -> dict[str, Any]:
    """What identifies the raster's pixels and georeference (size, bands, CRS, transform, file size)."""
    return {
        "width": source.width,
        "height": source.height,
        "dtypes": list(source.dtypes),
        "crs": source.crs.to_wkt() if source.crs else None,
        "transform": [round(v, 12) for v in tuple(source.transform)[:6]],
        "file_size": Path(source.path).stat().st_size,
    }
