"""The parameters that define a batch run's result; a resumed run must match them exactly."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from think2seg.classes import Ask
from think2seg.geo.read import RasterSource

PIECES = "pixel"
"""How this think2seg stores tile pieces: in whole-pixel coordinates of the raster (x = column, y = row)."""
LEGACY_PIECES = "map"
"""How think2seg stored them before ``pieces`` was recorded: in map coordinates."""
LAYOUT = 2
"""The tables' layout: 2 = any number of rasters per file, every row keyed by its ``source``."""
RUN_KEYS = (
    "question",
    "classes",
    "tile_size_px",
    "overlap_px",
    "model",
    "segmenter",
    "max_new_tokens",
    "simplify_px",
    "min_area_m2",
    "min_score",
    "outline",
    "pixel_coords",
    "target_crs",
    "pieces",
    "layout",
)
"""The parameters every raster of one run shares; the others (source, raster, region, AOI, stretch) are per raster."""


def stored_classes(asks: tuple[Ask, ...]) -> list[list[str]] | None:
    """``asks`` as :attr:`BatchParams.classes` stores them (None for one question without a class)."""
    if len(asks) == 1 and not asks[0].class_name:
        return None
    return [[ask.class_name, ask.question] for ask in asks]


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
    min_score: float = 0.0
    """Instances SAM scored below this were left out (0: none; runs stored before scores had none)."""
    outline: str = "pixel"
    """How outlines were cleaned (runs stored before outlines: pixel, or simplify with simplify_px)."""
    target_crs: str | None = None
    """The CRS the output polygons were reprojected into (None: the rasters' own CRS)."""
    pieces: str = PIECES
    """The coordinates of the ``tile_pieces`` layer (a format marker, not an option)."""
    layout: int = LAYOUT
    """The tables' layout (a format marker, not an option)."""
    classes: list[list[str]] | None = None
    """Every (class name, question) the run asks of each tile (None: ``question`` alone, without a
    class name; ``question`` is then the first of them)."""

    def asks(self) -> tuple[Ask, ...]:
        """The questions the run asks of every tile, in order."""
        if self.classes is None:
            return (Ask("", self.question),)
        return tuple(Ask(name, question) for name, question in self.classes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BatchParams:
        values = json.loads(text)
        values["region"] = tuple(values["region"])
        values.setdefault("pieces", LEGACY_PIECES)  # written before the marker existed
        values.setdefault("layout", 1)  # one raster per file, before the layout was recorded
        values.setdefault("target_crs", None)
        values.setdefault("min_score", 0.0)
        values.setdefault("outline", "pixel")
        values.setdefault("classes", None)  # one question per run, before classes
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    def format_problem(self) -> str | None:
        """Why this think2seg cannot continue a run stored with these parameters (None if it can)."""
        if self.pieces == LEGACY_PIECES:
            return "was written by an older think2seg (map-coordinate tile pieces)"
        if self.pieces != PIECES:
            return f"was written by another think2seg (tile pieces in {self.pieces!r} coordinates)"
        if self.layout < LAYOUT:
            return "was written by an older think2seg (one raster per file, rows without their source)"
        if self.layout > LAYOUT:
            return "was written by a newer think2seg"
        return None

    def as_dict(self) -> dict[str, Any]:
        """The parameters as stored (JSON types), for :func:`~think2seg.runs.policy.differences`."""
        return json.loads(self.to_json())

    def run_level(self) -> dict[str, Any]:
        """The parameters all rasters of the run share (:data:`RUN_KEYS`)."""
        values = self.as_dict()
        return {key: values[key] for key in RUN_KEYS}


def raster_fingerprint(source: RasterSource) -> dict[str, Any]:
    """What identifies the raster's pixels and georeference (size, bands, CRS, transform, file size)."""
    return {
        "width": source.width,
        "height": source.height,
        "dtypes": list(source.dtypes),
        "crs": source.crs.to_wkt() if source.crs else None,
        "transform": [round(v, 12) for v in tuple(source.transform)[:6]],
        "file_size": source.path.stat().st_size if source.location.is_local else None,
    }
