"""The tile grid of a batch run: full-resolution windows with overlap, each owning only its core.

Along each axis, tiles start every ``tile_size_px - overlap_px`` pixels from the region's origin.
The last row and column are shifted back so they end exactly at the region's edge: every tile is
full size (the model sees the same scale everywhere) and the last overlap is simply larger. A
region smaller than a tile is one tile of the region's size.

Neighbouring tiles split their overlap at its middle: a tile's *core* is the tile minus half the
overlap on every side that has a neighbour, so the cores partition the region exactly and every
pixel's result comes from exactly one tile.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from rasterio.windows import Window

from think2seg.errors import InputError
from think2seg.options import TILE_SIZE_PX


@dataclass(frozen=True)
class GridTile:
    """One tile: its window and its core, both in full-resolution raster pixels."""

    tile_id: int
    row: int
    col: int
    window: Window
    core: Window

    def core_edges_with_neighbours(self, grid: TileGrid) -> tuple[bool, bool, bool, bool]:
        """(left, top, right, bottom): whether the core's edge on that side borders another core."""
        return (self.col > 0, self.row > 0, self.col < grid.cols - 1, self.row < grid.rows - 1)


@dataclass(frozen=True)
class TileGrid:
    """A grid over ``region`` (a window of the raster); its size is known up front."""

    region: Window
    tile_size_px: int
    overlap_px: int

    def __post_init__(self) -> None:
        TILE_SIZE_PX.check(self.tile_size_px)
        if not 0 <= self.overlap_px <= self.tile_size_px // 2:
            raise InputError(
                f"overlap_px must be between 0 and half the tile size ({self.tile_size_px // 2}), got {self.overlap_px}"
            )

    @property
    def step_px(self) -> int:
        return self.tile_size_px - self.overlap_px

    @property
    def cols(self) -> int:
        return len(self._starts(int(self.region.width)))

    @property
    def rows(self) -> int:
        return len(self._starts(int(self.region.height)))

    def __len__(self) -> int:
        return self.rows * self.cols

    def __iter__(self) -> Iterator[GridTile]:
        xs, ys = self._spans(int(self.region.width)), self._spans(int(self.region.height))
        for row, (y0, y1, cy0, cy1) in enumerate(ys):
            for col, (x0, x1, cx0, cx1) in enumerate(xs):
                yield GridTile(
                    tile_id=row * len(xs) + col,
                    row=row,
                    col=col,
                    window=self._window(x0, y0, x1, y1),
                    core=self._window(cx0, cy0, cx1, cy1),
                )

    def _window(self, x0: int, y0: int, x1: int, y1: int) -> Window:
        return Window(int(self.region.col_off) + x0, int(self.region.row_off) + y0, x1 - x0, y1 - y0)

    def _starts(self, length: int) -> list[int]:
        if length <= self.tile_size_px:
            return [0]
        count = math.ceil((length - self.tile_size_px) / self.step_px) + 1
        return [i * self.step_px for i in range(count - 1)] + [length - self.tile_size_px]

    def _spans(self, length: int) -> list[tuple[int, int, int, int]]:
        """(start, end, core start, core end) per position, relative to the region."""
        size = min(self.tile_size_px, length)
        starts = self._starts(length)
        ends = [start + size for start in starts]
        cuts = [0] + [(ends[i] + starts[i + 1]) // 2 for i in range(len(starts) - 1)] + [length]
        return [(starts[i], ends[i], cuts[i], cuts[i + 1]) for i in range(len(starts))]
