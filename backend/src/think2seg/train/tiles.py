"""Cut georeferenced rasters and label polygons into a ``folder`` dataset for ``think2seg train``.

Tiles are edge to edge at full resolution (the last row and column shifted back to end at the edge);
each class's polygons, in the raster's CRS, are burnt into a mask per tile by the pixel-centre rule,
nodata excluded; one sample per tile, class and question. The split is by blocks of ``block_tiles``
x ``block_tiles`` tiles, a shifted-back row or column joining the block it overlaps, so no raster
pixel is in both splits; blocks that labels reach and the others are drawn for validation apart, so
both splits have targets. Per split, at most ``empty_ratio`` empty samples per sample with a target.
Layout: ``OUT/{train,val}/samples.json``, ``images/<raster>_r000_c000.png`` (RGB, or RGBA with alpha
0 on nodata) and ``masks/<raster>_r000_c000_<class>.png`` (0/255); no ``val`` when val_fraction is 0.
Records add ``class``, ``source``, ``window`` [col_off, row_off, width, height] (raster pixels),
``bounds`` and ``crs`` (the raster's), ``block`` [row, col] and ``empty``. OUT appears whole or not at all.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
from affine import Affine
from PIL import Image
from rasterio.windows import Window
from shapely.geometry import box
from tqdm import tqdm

from think2seg.classes import ClassQuestions
from think2seg.errors import InputError, OutputError, OutputExistsError
from think2seg.geo.bands import StretchLimits
from think2seg.geo.read import RasterSource
from think2seg.options import TILE_SIZE_PX, Option
from think2seg.tile import Tile
from think2seg.train.labels import Labels, class_masks, class_slugs, unique_names
from think2seg.train.split import BlockKey, block_of, grid_windows, held_out_blocks, round_half_up

SPLITS = ("train", "val")
EMPTY_RATIO = Option(
    "empty_ratio", 0.5, "per target sample", "empty samples kept per sample with a target", maximum=100
)
VAL_FRACTION = Option("val_fraction", 0.2, "fraction of blocks", "split blocks held out for validation", maximum=0.9)
BLOCK_TILES = Option("block_tiles", 4, "tiles", "side of a split block", minimum=1, maximum=1000, whole=True)
MIN_VALID_FRACTION = Option("min_valid_fraction", 0.5, "fraction", "tiles with less valid data are skipped", maximum=1)


@dataclass(frozen=True)
class DataOptions:
    """How rasters and labels are cut into samples (see the module docstring)."""

    tile_size_px: int = TILE_SIZE_PX.default
    empty_ratio: float = EMPTY_RATIO.default
    val_fraction: float = VAL_FRACTION.default
    block_tiles: int = BLOCK_TILES.default
    min_valid_fraction: float = MIN_VALID_FRACTION.default
    seed: int = 0

    def __post_init__(self) -> None:
        for option in (TILE_SIZE_PX, EMPTY_RATIO, VAL_FRACTION, BLOCK_TILES, MIN_VALID_FRACTION):
            option.check(getattr(self, option.name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"seed must be a whole number, got {self.seed!r}")


@dataclass(frozen=True)
class PreparedData:
    """A written dataset: its folders, what was counted while cutting, and notes for the user."""

    root: Path
    train_root: Path
    val_root: Path | None
    counts: dict[str, Any]
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        val_root = str(self.val_root) if self.val_root else None
        paths = {"root": str(self.root), "train_root": str(self.train_root), "val_root": val_root}
        return {**paths, "counts": self.counts, "notes": list(self.notes)}


@dataclass(frozen=True)
class _Spot:
    """One tile of a raster's grid, its block, and whether a label polygon reaches its footprint."""

    row: int
    col: int
    window: Window
    block: BlockKey
    reached: bool


@dataclass(frozen=True, eq=False)
class _Raster:
    index: int
    path: Path
    stem: str
    crs_text: str
    labels: gpd.GeoDataFrame  # in the raster's CRS
    spots: tuple[_Spot, ...]


@dataclass(eq=False)
class _TileRecord:
    """A tile that was read and kept: where it goes and which classes it holds pixels of."""

    raster: _Raster
    spot: _Spot
    split: str
    bounds: tuple[float, float, float, float]
    targets: dict[str, bool]
    image_written: bool = False

    @property
    def name(self) -> str:
        return f"{self.raster.stem}_r{self.spot.row:03d}_c{self.spot.col:03d}"


@dataclass(frozen=True, eq=False)
class _Sample:
    tile: _TileRecord
    cls: ClassQuestions
    slug: str
    question: str

    @property
    def empty(self) -> bool:
        return not self.tile.targets[self.cls.name]

    @property
    def mask_name(self) -> str:
        return f"{self.tile.name}_{self.slug}.png"


def prepare_dataset(
    rasters: Sequence[Path], labels: Labels, out_dir: Path, options: DataOptions, *, progress: bool = False
) -> PreparedData:
    """Cut ``rasters`` with ``labels`` into ``out_dir`` (which must not exist) as train and val folders.

    Raises :class:`InputError` when the labels miss the rasters, the rasters make too few blocks
    for a validation split, or no polygon covers a pixel centre; :class:`OutputExistsError` when
    ``out_dir`` exists. On any failure ``out_dir`` is left absent.
    """
    out = Path(out_dir).expanduser().absolute()
    if out.exists():
        raise OutputExistsError(f"{out} already exists: remove it or choose another output folder")
    notes = list(labels.notes)
    planned = _plan(rasters, labels, options, notes)
    val_blocks = held_out_blocks([(s.block, s.reached) for r in planned for s in r.spots], options)
    work = _work_folder(out)
    try:
        cutter = _Cutter(labels.classes, options, val_blocks, work, notes)
        counts = cutter.run(planned, progress=progress)
        _publish(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    val_root = out / "val" if options.val_fraction > 0 else None
    return PreparedData(out, out / "train", val_root, counts, tuple(notes))


def write_image(path: Path, pixels: np.ndarray, valid: np.ndarray) -> None:
    """(H, W, 3) uint8 ``pixels`` as a PNG: RGB when all of ``valid`` (H, W bool) holds, else RGBA (alpha = valid)."""
    if valid.all():
        Image.fromarray(pixels, "RGB").save(path, format="PNG")
    else:
        Image.fromarray(np.dstack([pixels, valid.astype(np.uint8) * 255]), "RGBA").save(path, format="PNG")


def write_mask(path: Path, mask: np.ndarray) -> None:
    """An (H, W) bool mask as a single-band 0/255 PNG."""
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(path, format="PNG")


def _plan(rasters: Sequence[Path], labels: Labels, options: DataOptions, notes: list[str]) -> list[_Raster]:
    """Open every raster (a bad one fails before anything is written), with its labels and grid."""
    paths = [Path(p).expanduser().absolute() for p in rasters]
    if not paths:
        raise InputError("give at least one raster to cut into training tiles")
    repeated = [str(p) for p, n in Counter(paths).items() if n > 1]
    if repeated:
        raise InputError(f"the raster {repeated[0]} is given more than once: give each raster once")
    planned, extents = [], []
    for index, (path, stem) in enumerate(zip(paths, unique_names([p.stem for p in paths]))):
        raster, extent = _plan_raster(index, path, stem, labels, options, notes)
        planned.append(raster)
        extents.append(extent)
    if not any(s.reached for r in planned for s in r.spots):
        raise InputError(f"the labels miss the rasters: {'; '.join(extents)}: check that the labels cover the rasters")
    return planned


def _plan_raster(
    index: int, path: Path, stem: str, labels: Labels, options: DataOptions, notes: list[str]
) -> tuple[_Raster, str]:
    """The raster's plan, and its extent and the labels' for the message when labels miss every raster."""
    with RasterSource(path) as source:
        frame, note = labels.in_crs(source.crs, raster=path.name)
        crs_text, transform = str(source.crs.to_string()) if source.crs else "", source.transform
        windows = grid_windows(source.width, source.height, options.tile_size_px)
        footprint = _window_bounds(transform, source.full_window)
    notes.extend([note] if note else [])
    size, per_block = options.tile_size_px, options.block_tiles
    spots = []
    for row, col, window in windows:
        block = (index, block_of(row, window.row_off, size, per_block), block_of(col, window.col_off, size, per_block))
        query = frame.sindex.query(box(*_window_bounds(transform, window)), predicate="intersects")
        spots.append(_Spot(row, col, window, block, len(query) > 0))
    if not any(s.reached for s in spots):
        notes.append(f"no label polygon reaches {path.name}: its tiles give only empty samples")
    label_bounds = str([round(float(v), 3) for v in frame.total_bounds]) if len(frame) else "none"
    extent = f"{path.name} covers {[round(v, 3) for v in footprint]}, the labels {label_bounds} (in {crs_text})"
    return _Raster(index, path, stem, crs_text, frame, tuple(spots)), extent


def _window_bounds(transform: Affine, window: Window) -> tuple[float, float, float, float]:
    c0, r0, c1, r1 = window.col_off, window.row_off, window.col_off + window.width, window.row_off + window.height
    xs, ys = zip(*(transform @ (c, r) for c in (c0, c1) for r in (r0, r1)))
    return (min(xs), min(ys), max(xs), max(ys))


def _work_folder(out: Path) -> Path:
    """A temporary folder beside ``out`` with the split folders, renamed to ``out`` when complete."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"cannot write in {out.parent} ({exc.strerror or exc}): choose a writable folder") from exc
    for split in SPLITS:
        (work / split / "images").mkdir(parents=True)
        (work / split / "masks").mkdir()
    return work


def _publish(work: Path, out: Path) -> None:
    try:
        os.rename(work, out)
    except OSError as exc:
        if out.exists():
            raise OutputExistsError(
                f"{out} appeared while the tiles were cut: remove it or choose another one"
            ) from exc
        raise OutputError(f"cannot move the dataset into {out} ({exc.strerror or exc}): choose another folder") from exc


@dataclass
class _Cutter:
    """Reads the tiles, writes images and masks into ``work`` and lists the samples kept."""

    classes: Sequence[ClassQuestions]
    options: DataOptions
    val_blocks: set[BlockKey]
    work: Path
    notes: list[str]
    records: list[_TileRecord] = field(default_factory=list)
    limits: dict[int, StretchLimits] = field(default_factory=dict)
    read: int = 0
    skipped: int = 0

    def run(self, planned: Sequence[_Raster], *, progress: bool) -> dict[str, Any]:
        """Cut every raster; returns the counts."""
        with tqdm(total=sum(len(r.spots) for r in planned), unit="tile", desc="tiles", disable=not progress) as bar:
            for raster in planned:
                self._cut(raster, bar)
        slugs = class_slugs(self.classes)
        samples = [_Sample(t, c, slugs[c.name], q) for t in self.records for c in self.classes for q in c.questions]
        kept, dropped = self._keep(samples)
        if all(s.empty for s in kept["train"]):
            raise InputError(
                f"no label polygon falls inside the tiles of {', '.join(r.path.name for r in planned)} (tiles with "
                f"less than {self.options.min_valid_fraction:g} valid data are skipped): check that the labels cover "
                "the rasters"
            )
        self._write_empty([s for split in SPLITS for s in kept[split] if s.empty])
        self._write_listings(kept)
        blocks = {s.block for r in planned for s in r.spots}
        return {
            "rasters": len(planned),
            "tiles": sum(len(r.spots) for r in planned),
            "tiles_read": self.read,
            "tiles_skipped_nodata": self.skipped,
            "blocks": {"train": len(blocks - self.val_blocks), "val": len(blocks & self.val_blocks)},
            "samples": {split: len(kept[split]) for split in SPLITS},
            "empty_kept": {split: sum(s.empty for s in kept[split]) for split in SPLITS},
            "empty_dropped": dropped,
            "class_samples": {split: dict(Counter(s.cls.name for s in kept[split])) for split in SPLITS},
        }

    def _cut(self, raster: _Raster, bar: tqdm[Any]) -> None:
        slugs = class_slugs(self.classes)
        with RasterSource(raster.path) as source:
            limits = self.limits[raster.index] = source.stretch_limits(source.full_window)
            for spot in raster.spots:
                tile = source.read(spot.window, limits=limits)
                self.read += 1
                bar.update()
                if not tile.has_data or float(tile.valid.mean()) < self.options.min_valid_fraction:
                    self.skipped += 1
                    continue
                masks = class_masks(tile, raster.labels, self.classes)
                split = "val" if spot.block in self.val_blocks else "train"
                record = _TileRecord(raster, spot, split, tile.bounds, {k: bool(m.any()) for k, m in masks.items()})
                self.records.append(record)
                if any(record.targets.values()):
                    self._write_tile(record, tile, {slugs[k]: m for k, m in masks.items() if m.any()})

    def _write_tile(self, record: _TileRecord, tile: Tile, masks: dict[str, np.ndarray]) -> None:
        folder = self.work / record.split
        write_image(folder / "images" / f"{record.name}.png", tile.pixels, tile.valid)
        record.image_written = True
        for slug, mask in masks.items():
            write_mask(folder / "masks" / f"{record.name}_{slug}.png", mask)

    def _keep(self, samples: Sequence[_Sample]) -> tuple[dict[str, list[_Sample]], dict[str, int]]:
        """Per split, the samples kept (all with a target, at most empty_ratio per such of the empty ones)."""
        kept: dict[str, list[_Sample]] = {}
        dropped: dict[str, int] = {}
        rng = random.Random(f"{self.options.seed}-empty")
        for split in SPLITS:
            own = [s for s in samples if s.tile.split == split]
            empty = [i for i, s in enumerate(own) if s.empty]
            chosen = set(
                rng.sample(empty, min(len(empty), round_half_up(self.options.empty_ratio * (len(own) - len(empty)))))
            )
            kept[split] = [s for i, s in enumerate(own) if not s.empty or i in chosen]
            dropped[split] = len(empty) - len(chosen)
        return kept, dropped

    def _write_empty(self, samples: Sequence[_Sample]) -> None:
        """The empty masks of the kept empty samples, and the images of their tiles not yet written."""
        unread: dict[int, dict[str, _TileRecord]] = {}
        for sample in samples:
            record, window = sample.tile, sample.tile.spot.window
            path = self.work / record.split / "masks" / sample.mask_name
            if not path.exists():
                write_mask(path, np.zeros((int(window.height), int(window.width)), bool))
            if not record.image_written:
                unread.setdefault(record.raster.index, {})[record.name] = record
        for records in (list(by_name.values()) for by_name in unread.values()):
            with RasterSource(records[0].raster.path) as source:
                for record in records:
                    tile = source.read(record.spot.window, limits=self.limits[record.raster.index])
                    write_image(self.work / record.split / "images" / f"{record.name}.png", tile.pixels, tile.valid)
                    record.image_written = True

    def _write_listings(self, kept: dict[str, list[_Sample]]) -> None:
        for split in SPLITS if self.options.val_fraction > 0 else ("train",):
            listing = json.dumps([_sample_json(s) for s in kept[split]], indent=1)
            (self.work / split / "samples.json").write_text(listing + "\n", encoding="utf-8")
        if self.options.val_fraction == 0:
            shutil.rmtree(self.work / "val")
            self.notes.append("val_fraction is 0: no validation split was written")
        elif all(s.empty for s in kept["val"]):
            self.notes.append("the validation blocks hold no labelled pixel: validation has no target to score")


def _sample_json(sample: _Sample) -> dict[str, Any]:
    record, window = sample.tile, sample.tile.spot.window
    return {
        "image": f"images/{record.name}.png",
        "mask": f"masks/{sample.mask_name}",
        "question": sample.question,
        "class": sample.cls.name,
        "source": str(record.raster.path),
        "window": [int(window.col_off), int(window.row_off), int(window.width), int(window.height)],
        "bounds": [float(v) for v in record.bounds],
        "crs": record.raster.crs_text,
        "block": [record.spot.block[1], record.spot.block[2]],
        "empty": sample.empty,
    }
