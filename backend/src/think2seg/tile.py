"""The :class:`Tile`: the pixels the models see, with the georeference of exactly those pixels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from think2seg.errors import InputError


@dataclass(frozen=True, eq=False)
class Tile:
    """One window of a raster, ready for the models.

    Attributes:
        pixels: (H, W, 3) uint8 RGB; pixels outside ``valid`` are 0.
        valid: (H, W) bool, True where the raster has data (not nodata, alpha 0 or NaN).
        transform: maps pixel corner coordinates (col, row) of ``pixels`` to map (x, y) in ``crs``.
        crs: the raster's CRS, or None when the caller accepted pixel coordinates.
        source: the raster's path, or a label for in-memory arrays.
        window: the window of the source raster that was read, in full-resolution pixels.
        scale_xy: source pixels per tile pixel along x and y (1.0 when read at full resolution).
        notes: remarks for the user about how the window was read (clipping, decimation).
    """

    pixels: np.ndarray
    valid: np.ndarray
    transform: Affine
    crs: CRS | None
    source: str
    window: Window | None = None
    scale_xy: tuple[float, float] = (1.0, 1.0)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.pixels.ndim != 3 or self.pixels.shape[2] != 3 or self.pixels.dtype != np.uint8:
            raise InputError(f"tile pixels must be (H, W, 3) uint8, got {self.pixels.shape} {self.pixels.dtype}")
        if self.valid.shape != self.pixels.shape[:2] or self.valid.dtype != bool:
            raise InputError(f"tile valid mask must be (H, W) bool matching the pixels, got {self.valid.shape}")

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def has_data(self) -> bool:
        """False when every pixel is nodata."""
        return bool(self.valid.any())

    @property
    def is_decimated(self) -> bool:
        return self.scale_xy != (1.0, 1.0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the tile's footprint in its CRS."""
        corners = [self.transform @ (c, r) for c in (0, self.width) for r in (0, self.height)]
        xs, ys = zip(*corners)
        return (min(xs), min(ys), max(xs), max(ys))
