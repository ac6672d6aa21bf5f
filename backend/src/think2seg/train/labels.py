"""The analyst's label polygons and the questions asked about them, ready to be cut into samples.

A *class* is a value of the labels' class field (or ``""`` when there is no class field: every
polygon is a target) with the question(s) whose answer is the polygons of that class. Classes come
from a small YAML or JSON file (:func:`load_classes`) or from questions given directly
(:func:`classes_from_questions`). :func:`read_labels` reads a vector file (GeoPackage, Shapefile,
GeoJSON... anything GDAL reads) into :class:`Labels`: polygons only, repaired where invalid, each
with its class, in the file's CRS; :meth:`Labels.in_crs` gives them in a raster's CRS, reprojected
explicitly and with a note saying so (DESIGN.md section 3: never reproject silently).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS
from rasterio.features import rasterize
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from think2seg.classes import ClassQuestions, class_text
from think2seg.errors import InputError
from think2seg.tile import Tile

CLASS_COLUMN = "class"
POLYGONAL = ("Polygon", "MultiPolygon")
POLYGON_TYPE_IDS = (3, 6)  # shapely.get_type_id of Polygon and MultiPolygon


@dataclass(frozen=True)
class Labels:
    """Label polygons in their own CRS.

    Attributes:
        frame: one row per polygon (Polygon or MultiPolygon, valid), columns ``class`` (str) and geometry.
        crs: the CRS of ``frame``.
        classes: the classes the polygons belong to, with their questions, in the order asked.
        source: the vector file that was read.
        notes: what reading changed (polygons left out or repaired), for the user.
    """

    frame: gpd.GeoDataFrame
    crs: CRS
    classes: tuple[ClassQuestions, ...]
    source: Path
    notes: list[str]

    def in_crs(self, crs: object, *, raster: str = "the raster") -> tuple[gpd.GeoDataFrame, str | None]:
        """The polygons in ``crs`` (a rasterio or pyproj CRS, or text such as ``EPSG:32633``).

        Returns them with a note naming both CRSs and ``raster`` when they had to be reprojected,
        and as they are with None when the CRS is already the same.
        """
        target = CRS.from_user_input(crs)
        if same_crs(self.crs, target):
            return self.frame, None
        try:
            moved = self.frame.to_crs(target)
        except Exception as exc:  # pyproj raises several kinds; all mean the same to the user
            raise InputError(
                f"cannot reproject the labels from {crs_label(self.crs)} to {crs_label(target)} for {raster} "
                f"({exc}): reproject them yourself (ogr2ogr -t_srs) and try again"
            ) from exc
        moved = moved[~moved.geometry.is_empty & moved.geometry.notna()].reset_index(drop=True)
        note = f"labels reprojected from {crs_label(self.crs)} to {crs_label(target)} for raster {raster}"
        return moved, note


def same_crs(a: CRS, b: CRS) -> bool:
    """Whether two CRSs are the same (axis order aside: both are used x, y)."""
    if a == b or a.equals(b, ignore_axis_order=True):
        return True
    return a.to_authority() is not None and a.to_authority() == b.to_authority()


def crs_label(crs: CRS) -> str:
    """A short name of ``crs`` for messages: ``EPSG:32633`` when it has an authority code, else its name."""
    authority = crs.to_authority()
    return f"{authority[0]}:{authority[1]}" if authority else crs.name


def class_slugs(classes: Sequence[ClassQuestions]) -> dict[str, str]:
    """A file-name-safe slug per class name, unique ignoring case; the class ``""`` is ``target``."""
    bases = [
        re.sub(r"[^0-9a-z]+", "-", c.name.lower()).strip("-") or ("class" if c.name else "target") for c in classes
    ]
    return dict(zip((c.name for c in classes), unique_names(bases)))


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` with -2, -3... added where one repeats an earlier one, ignoring case (file systems may)."""
    used: set[str] = set()
    unique = []
    for name in names:
        candidate, number = name, 2
        while candidate.lower() in used:
            candidate, number = f"{name}-{number}", number + 1
        used.add(candidate.lower())
        unique.append(candidate)
    return unique


def read_labels(path: str | os.PathLike[str], *, class_field: str | None, classes: Sequence[ClassQuestions]) -> Labels:
    """Read the polygons of a vector file and their classes.

    With ``class_field``, a polygon's class is that field's value, and only polygons of one of
    ``classes`` are kept (the others are left out with a note). Without it every polygon belongs to
    the one class of ``classes`` (several classes need a class field). Points and lines are left
    out with a note; invalid polygons are repaired (shapely ``make_valid``, polygonal parts kept).
    Raises :class:`InputError` with what to do when nothing usable is left.
    """
    file = Path(path).expanduser().absolute()
    if not classes:
        raise InputError("give the questions to ask about the labels (--question or --classes)")
    frame = _read_frame(file)
    names = _classes_of(frame, file, class_field, classes)
    notes: list[str] = []
    values = _select_classes(names, classes, file, class_field, notes)
    geoms, kept = _polygons(frame.geometry, values, file, notes)
    classes_kept = [str(v) for v in values.to_numpy()[kept]]
    labels = gpd.GeoDataFrame({CLASS_COLUMN: classes_kept}, geometry=list(geoms), crs=frame.crs)
    return Labels(labels.reset_index(drop=True), CRS.from_user_input(frame.crs), tuple(classes), file, notes)


def _read_frame(file: Path) -> gpd.GeoDataFrame:
    if not file.exists():
        raise InputError(f"the labels file {file} does not exist: check the path")
    try:
        frame = gpd.read_file(file, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"cannot read the labels {file} ({first}): give a vector file GDAL reads (GeoPackage, Shapefile, GeoJSON)"
        ) from exc
    if len(frame) == 0:
        raise InputError(f"the labels {file} hold no features: draw the target polygons first")
    if frame.crs is None:
        raise InputError(
            f"the labels {file} have no CRS: assign the one they were drawn in "
            f"(ogr2ogr -a_srs EPSG:XXXX fixed.gpkg {file.name}) and try again"
        )
    return frame.reset_index(drop=True)


def _classes_of(
    frame: gpd.GeoDataFrame, file: Path, class_field: str | None, classes: Sequence[ClassQuestions]
) -> pd.Series:
    """Each feature's class value as text (None where missing)."""
    if class_field is None:
        if len(classes) > 1:
            raise InputError(
                f"{len(classes)} classes were given but no class field: name the field that holds them (--class-field)"
            )
        return pd.Series([classes[0].name] * len(frame), index=frame.index, dtype=object)
    if class_field not in frame.columns or class_field == frame.geometry.name:
        fields = [str(c) for c in frame.columns if c != frame.geometry.name]
        shown = ", ".join(fields) if fields else "none"
        raise InputError(f"the labels {file.name} have no field {class_field!r}; their fields are: {shown}")
    return frame[class_field].map(class_text).astype(object)


def _select_classes(
    names: pd.Series, classes: Sequence[ClassQuestions], file: Path, class_field: str | None, notes: list[str]
) -> pd.Series:
    """The class values of the polygons that belong to one of ``classes``; notes what was left out."""
    wanted = {c.name for c in classes}
    keep = names.isin(wanted)
    if keep.all():
        return names
    other = sorted({str(v) for v in names[~keep].dropna()})
    missing = int(names.isna().sum())
    if not keep.any():
        raise InputError(
            f"no feature of {file.name} has a {class_field!r} value among the classes asked about "
            f"({', '.join(sorted(wanted))}); the field holds {', '.join(other[:20]) or 'no values'}: "
            "name the classes as they are written in the field"
        )
    parts = [f"values {', '.join(other[:20])}" + (" ..." if len(other) > 20 else "")] if other else []
    parts += [f"{missing} without a value"] if missing else []
    notes.append(
        f"{int((~keep).sum())} label feature(s) left out: their {class_field!r} is not a class asked about "
        f"({'; '.join(parts)})"
    )
    return names[keep]


def _polygons(
    geometry: gpd.GeoSeries, values: pd.Series, file: Path, notes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The polygonal, valid, non-empty geometries of ``values``' rows, and which of those rows they are."""
    geoms = np.asarray(geometry.reindex(values.index).to_numpy(), dtype=object)
    present = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    polygonal = present & np.isin(shapely.get_type_id(geoms), POLYGON_TYPE_IDS)
    if not polygonal.all():
        kinds = Counter(["empty"] * int((~present).sum()) + [g.geom_type for g in geoms[present & ~polygonal]])
        detail = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        notes.append(f"{int((~polygonal).sum())} label feature(s) left out: not polygons ({detail})")
    if not polygonal.any():
        raise InputError(
            f"the labels {file.name} hold no polygons (only points, lines or empty geometries): "
            "draw the targets as polygons"
        )
    invalid = polygonal & ~shapely.is_valid(geoms)
    if invalid.any():
        geoms[invalid] = [_repaired(g) for g in geoms[invalid]]
        notes.append(f"{int(invalid.sum())} invalid polygon(s) repaired (shapely make_valid, polygonal parts kept)")
        polygonal &= ~shapely.is_empty(geoms)
        if not polygonal.any():
            raise InputError(f"the polygons of {file.name} are all degenerate: check them (QGIS: Check Validity)")
    return geoms[polygonal], polygonal


def _repaired(geometry: BaseGeometry) -> BaseGeometry:
    """``geometry`` made valid, keeping only its polygonal parts (a MultiPolygon, maybe empty)."""
    fixed = shapely.make_valid(geometry)
    if fixed.geom_type in POLYGONAL:
        return fixed
    parts = [p for p in shapely.get_parts(fixed) if p.geom_type in POLYGONAL]
    return shapely.union_all(parts) if parts else shapely.MultiPolygon()


def class_masks(tile: Tile, frame: gpd.GeoDataFrame, classes: Sequence[ClassQuestions]) -> dict[str, np.ndarray]:
    """Per class name, the (H, W) bool mask over ``tile`` of its polygons in ``frame`` (in the tile's CRS).

    A pixel is in when its centre is inside a polygon (rasterio ``all_touched=False``) and it is valid.
    """
    hits = frame.iloc[frame.sindex.query(box(*tile.bounds), predicate="intersects")]
    masks = {}
    for cls in classes:
        shapes = list(hits.geometry[hits[CLASS_COLUMN] == cls.name])
        masks[cls.name] = _burn(shapes, tile) if shapes else np.zeros(tile.valid.shape, bool)
    return masks


def _burn(shapes: list[BaseGeometry], tile: Tile) -> np.ndarray:
    out_shape = (tile.height, tile.width)
    burnt = rasterize(
        shapes, out_shape, transform=tile.transform, fill=0, default_value=1, dtype="uint8", all_touched=False
    )
    return (burnt > 0) & tile.valid
