"""The grid of training tiles and its spatial split: edge-to-edge tiles, grouped into blocks, some
blocks held out for validation, so that no raster pixel is in both sets."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Protocol

from rasterio.windows import Window

from think2seg.errors import InputError

BlockKey = tuple[int, int, int]  # (raster index, block row, block col)


class SplitOptions(Protocol):
    """What the split needs of the data options."""

    @property
    def val_fraction(self) -> float: ...

    @property
    def block_tiles(self) -> int: ...

    @property
    def seed(self) -> int: ...


def grid_windows(width: int, height: int, tile_size_px: int) -> list[tuple[int, int, Window]]:
    """(row, col, window) of the edge-to-edge tiles of a ``width`` x ``height`` px raster, row by row.

    Tiles start every ``tile_size_px``; the last row and column end at the edge (shifted back when
    the size is not a multiple of the tile); a raster smaller than a tile is one tile of its size.
    """
    cols, rows = _starts(width, tile_size_px), _starts(height, tile_size_px)
    size_x, size_y = min(tile_size_px, width), min(tile_size_px, height)
    return [(r, c, Window(x, y, size_x, size_y)) for r, y in enumerate(rows) for c, x in enumerate(cols)]


def _starts(length: int, tile_size_px: int) -> list[int]:
    count = max(1, math.ceil(length / tile_size_px))
    return [i * tile_size_px for i in range(count - 1)] + [max(0, length - tile_size_px)]


def block_of(index: int, start_px: int, tile_size_px: int, block_tiles: int) -> int:
    """The block row (column) of tile row (column) ``index``, which starts at ``start_px``.

    A shifted-back last tile (its start not a multiple of the tile) overlaps its neighbour, so it
    joins the neighbour's block.
    """
    shifted = index > 0 and start_px % tile_size_px != 0
    return (index - 1 if shifted else index) // block_tiles


def held_out_blocks(tiles: Sequence[tuple[BlockKey, bool]], options: SplitOptions) -> set[BlockKey]:
    """The blocks held out for validation, drawn with the seed among those labels reach and the others;
    ``tiles`` holds each tile's block and whether a label polygon reaches it."""
    if options.val_fraction == 0:
        return set()
    reached: dict[BlockKey, bool] = {}
    for block, touched in tiles:
        reached[block] = reached.get(block, False) or touched
    hint = f"lower --block-tiles (now {options.block_tiles}) or --tile-size-px, or pass --val-fraction 0"
    if len(reached) < 2:
        raise InputError(f"the rasters make {len(reached)} split block, too few to hold out a validation split: {hint}")
    with_labels = sorted(k for k, v in reached.items() if v)
    if len(with_labels) < 2:
        raise InputError(
            f"the label polygons fall in {len(with_labels)} of {len(reached)} split blocks, and validation needs "
            f"another block with labels: {hint}, or label more of the rasters"
        )
    others = sorted(k for k, v in reached.items() if not v)
    rng = random.Random(options.seed)
    held = rng.sample(
        with_labels, min(len(with_labels) - 1, max(1, round_half_up(options.val_fraction * len(with_labels))))
    )
    held += rng.sample(others, min(len(others), round_half_up(options.val_fraction * len(others))))
    return set(held)


def round_half_up(value: float) -> int:
    """Half up (Python's round() halves to even, so half of 1 sample would keep none)."""
    return math.floor(value + 0.5)
