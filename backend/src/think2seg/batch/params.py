"""The parameters that define a batch run's result; a resumed run must match them exactly."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from think2seg.geo.read import RasterSource


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BatchParams:
        values = json.loads(text)
        values["region"] = tuple(values["region"])
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    def differences(self, other: BatchParams) -> list[str]:
        """Human-readable ``name: stored -> requested`` for every parameter that differs."""
        mine, theirs = json.loads(self.to_json()), json.loads(other.to_json())
        return [f"{name}: {theirs[name]!r} -> {mine[name]!r}" for name in mine if mine[name] != theirs[name]]


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
