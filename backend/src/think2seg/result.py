"""What one question about one tile produces."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

import geopandas as gpd
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import Point, Polygon

from think2seg.think2seg_rs.answer import AnswerStatus, InstancePrompt
from think2seg.tile import Tile


class ResultStatus(str, enum.Enum):
    """``ok``: targets found; ``no_target``: the model found none; ``unparseable``: the answer could
    not be read (zero polygons, raw text kept); ``no_data``: the window is all nodata (no model call)."""

    OK = "ok"
    NO_TARGET = "no_target"
    UNPARSEABLE = "unparseable"
    NO_DATA = "no_data"

    @classmethod
    def from_answer(cls, status: AnswerStatus) -> ResultStatus:
        return cls(status.value)


@dataclass(frozen=True)
class InstanceResult:
    """One instance's prompts: as answered (840 view), in tile pixels, and in map coordinates.

    ``score`` is the segmenter's predicted IoU of the instance's mask (SAM's own estimate of the
    mask's quality for these prompts, 0-1; not the LVLM's certainty), NaN before SAM ran or when
    the segmenter predicts none.
    """

    index: int
    view: InstancePrompt
    pixel: InstancePrompt
    transform: Affine
    score: float = field(default=float("nan"), compare=False)  # derived from the prompts; NaN != NaN

    @property
    def box_map(self) -> Polygon | None:
        """The pixel box mapped through the tile transform (a rectangle unless the raster is rotated)."""
        if self.pixel.box_xyxy is None:
            return None
        x1, y1, x2, y2 = self.pixel.box_xyxy
        corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
        return Polygon([self.transform @ corner for corner in corners])

    @property
    def points_map(self) -> list[Point]:
        """The positive points in map coordinates."""
        if self.pixel.points_xy is None:
            return []
        return [Point(self.transform @ xy) for xy in self.pixel.points_xy]


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """Polygons, mask, prompts, reasoning, status and timings for one question about one tile.

    ``polygons`` is in ``tile.crs`` with an ``area_m2`` column; ``mask`` is (H, W) bool aligned
    with ``tile`` (nodata pixels are always False); ``timings_s`` holds seconds per stage.
    """

    run_id: str
    question: str
    status: ResultStatus
    tile: Tile
    mask: np.ndarray
    polygons: gpd.GeoDataFrame
    instances: tuple[InstanceResult, ...]
    model: str
    segmenter: str
    created_at: datetime
    reasoning: str = ""
    raw_answer: str = ""
    message: str = ""
    new_tokens: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)
    class_name: str = ""
    """The class this question asks for (``--classes``); "" when the run names none (its ``class``
    column is then the question)."""

    @property
    def crs(self) -> CRS | None:
        return self.tile.crs

    @property
    def total_area_m2(self) -> float:
        return float(self.polygons["area_m2"].sum()) if len(self.polygons) else 0.0

    @property
    def notes(self) -> tuple[str, ...]:
        return self.tile.notes
