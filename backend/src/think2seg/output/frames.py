"""Feature tables shared by `segment` and `batch` outputs: run attributes and prompt layers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import geopandas as gpd
import pandas as pd
from rasterio.crs import CRS

from think2seg.result import InstanceResult


@dataclass(frozen=True)
class RunStamp:
    """The attributes every feature of a run carries; its ``class`` column is ``class_name``, or
    the question when the run names no class."""

    run_id: str
    question: str
    model: str
    segmenter: str
    source: str
    created_at: datetime
    class_name: str = ""

    @property
    def label(self) -> str:
        """The ``class`` column's value."""
        return self.class_name or self.question

    def columns(self, count: int, *, status: str, tags: Mapping[str, object] | None = None) -> dict[str, object]:
        """Column data for ``count`` features; ``tags`` adds constant columns (int, float or str)."""
        return dict(self._series(count, status=status, tags=tags))

    def row(self, *, status: str) -> dict[str, object]:
        """The attributes' values for one row (of a ``runs`` table)."""
        return {name: values[0] for name, values in self._series(1, status=status).items()}

    def _series(self, count: int, *, status: str, tags: Mapping[str, object] | None = None) -> dict[str, pd.Series]:
        texts = {
            "run_id": self.run_id,
            "question": self.question,
            "class": self.label,
            "status": status,
            "model": self.model,
            "segmenter": self.segmenter,
            "source": self.source,
        }
        columns = {name: pd.Series([value] * count, dtype="object") for name, value in texts.items()}
        columns["created_at"] = pd.Series([pd.Timestamp(self.created_at)] * count, dtype="datetime64[ms, UTC]")
        for name, value in (tags or {}).items():
            columns[name] = pd.Series([value] * count, dtype=_dtype(value))
        return columns


def _dtype(value: object) -> str:
    if isinstance(value, bool):
        return "int32"
    if isinstance(value, int):
        return "int32"
    if isinstance(value, float):
        return "float64"
    return "object"


def boxes_frame(
    instances: Sequence[InstanceResult],
    stamp: RunStamp,
    *,
    status: str,
    reasoning: str,
    crs: CRS | None,
    tags: Mapping[str, object] | None = None,
) -> gpd.GeoDataFrame:
    """One box per instance that has one: 840-view and tile-pixel corners, SAM's score, reasoning."""
    boxed = []  # (instance, view box, pixel box, map box): the view box is the pixel box scaled
    scores = []
    for instance in instances:
        box_map, view, pixel = instance.box_map, instance.view.box_xyxy, instance.pixel.box_xyxy
        if box_map is not None and view is not None and pixel is not None:
            boxed.append((instance.index, view, pixel, box_map))
            scores.append(instance.score)
    columns = stamp.columns(len(boxed), status=status, tags=tags)
    columns["instance"] = pd.Series([index for index, _, _, _ in boxed], dtype="int32")
    columns["score"] = pd.Series(scores, dtype="float64")
    for axis, position in (("x1", 0), ("y1", 1), ("x2", 2), ("y2", 3)):
        columns[f"view_{axis}"] = pd.Series([view[position] for _, view, _, _ in boxed], dtype="float64")
        columns[f"px_{axis}"] = pd.Series([pixel[position] for _, _, pixel, _ in boxed], dtype="float64")
    columns["reasoning"] = pd.Series([reasoning] * len(boxed), dtype="object")
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([box for _, _, _, box in boxed], crs=crs))


def points_frame(
    instances: Sequence[InstanceResult],
    stamp: RunStamp,
    *,
    status: str,
    crs: CRS | None,
    tags: Mapping[str, object] | None = None,
) -> gpd.GeoDataFrame:
    """The positive points of every instance (label 1), in 840-view and tile-pixel coordinates too."""
    rows = [
        (instance.index, k, view_xy, pixel_xy, point, instance.score)
        for instance in instances
        for k, (view_xy, pixel_xy, point) in enumerate(
            zip(instance.view.points_xy or (), instance.pixel.points_xy or (), instance.points_map)
        )
    ]
    columns = stamp.columns(len(rows), status=status, tags=tags)
    columns["instance"] = pd.Series([r[0] for r in rows], dtype="int32")
    columns["point"] = pd.Series([r[1] for r in rows], dtype="int32")
    columns["label"] = pd.Series([1] * len(rows), dtype="int32")
    columns["score"] = pd.Series([r[5] for r in rows], dtype="float64")
    columns["view_x"] = pd.Series([r[2][0] for r in rows], dtype="float64")
    columns["view_y"] = pd.Series([r[2][1] for r in rows], dtype="float64")
    columns["px_x"] = pd.Series([r[3][0] for r in rows], dtype="float64")
    columns["px_y"] = pd.Series([r[3][1] for r in rows], dtype="float64")
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([r[4] for r in rows], crs=crs))
