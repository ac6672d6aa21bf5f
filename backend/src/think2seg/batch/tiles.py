"""Read the planned tiles in order, optionally in a background thread ahead of the models."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from PIL import Image

from think2seg.batch.grid import GridTile
from think2seg.errors import RasterError
from think2seg.geo.bands import StretchLimits
from think2seg.geo.read import RasterSpec
from think2seg.think2seg_rs.prompt import make_view
from think2seg.tile import Tile
from think2seg.timing import StageTimer


@dataclass
class ReadTile:
    """A planned tile, read and prepared (or the read error)."""

    grid_tile: GridTile
    tile: Tile | None = None
    view: Image.Image | None = None
    error: str = ""
    timer: StageTimer = field(default_factory=StageTimer)


def read_tiles(raster: RasterSpec, plan: Iterable[GridTile], *, limits: StretchLimits) -> Iterator[ReadTile]:
    """Read each planned tile on the raster's read grid and make its 840 view (only for tiles with data)."""
    with raster.open() as source:
        for grid_tile in plan:
            item = ReadTile(grid_tile)
            try:
                with item.timer.stage("read"):
                    item.tile = source.read(grid_tile.window, limits=limits)
            except RasterError as exc:
                item.error = str(exc)
                yield item
                continue
            if item.tile.has_data:
                try:
                    with item.timer.stage("prepare"):
                        item.view = make_view(item.tile.pixels)
                except (OSError, ValueError, MemoryError) as exc:  # recorded as the tile's failure; the run goes on
                    item.error = f"cannot prepare the tile's 840x840 view: {exc}"
            yield item


_DONE = object()


class Prefetcher:
    """Runs an iterator in a daemon thread, ``depth`` items ahead; iterate it like the original.

    Exceptions in the thread are raised in the consumer. ``close()`` stops the thread early.
    """

    def __init__(self, items: Iterator[ReadTile], depth: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), name="think2seg-reader", daemon=True)
        self._thread.start()

    def _run(self, items: Iterator[ReadTile]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)
            return
        self._put(_DONE)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[ReadTile]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
