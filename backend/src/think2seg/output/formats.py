"""Vector outputs in the format their extension names: GeoPackage, FlatGeobuf, GeoJSON, GeoParquet, Shapefile.

A GeoPackage holds every layer; the other formats hold one layer (``segments``), and the writers
return notes that say what they left out or changed. Coordinates stay in the layer's own CRS in
every format (never reprojected). Every layer goes to GDAL (or, for GeoParquet, to pyarrow) as an
Arrow stream, so :func:`export_layer` copies a batch run's layer without holding it in memory.
Outputs are written beside the target and moved into place whole, or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import geopandas as gpd
import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pyogrio
from pyogrio.errors import DataSourceError
from pyproj import CRS
from shapely.geometry import MultiLineString, MultiPoint, MultiPolygon
from shapely.geometry.base import BaseGeometry

from think2seg.errors import InputError, OutputError
from think2seg.output.atomic import atomic_output, check_output_path, fsync_path
from think2seg.output.gpkg import GPKG_DATASET_OPTIONS, write_layer
from think2seg.output.shapefile import (
    enumerate_names,
    make_workdir,
    move_into_place,
    refuse_existing,
    shapefile_parts,
    shapefile_reader,
)


class VectorFormat(NamedTuple):
    driver: str
    multi_layer: bool
    description: str


VECTOR_FORMATS: dict[str, VectorFormat] = {
    ".gpkg": VectorFormat("GPKG", True, "GeoPackage 1.2"),  # the default
    ".fgb": VectorFormat("FlatGeobuf", False, "FlatGeobuf"),  # features in the order of its spatial index
    ".geojson": VectorFormat("GeoJSON", False, "GeoJSON"),  # in the layer's own CRS, named in a crs member
    ".parquet": VectorFormat("Parquet", False, "GeoParquet 1.0"),  # WKB geometries, CRS as PROJJSON
    ".shp": VectorFormat("ESRI Shapefile", False, "ESRI Shapefile"),  # .shp .shx .dbf .prj .cpg (UTF-8)
}
"""Extension -> (GDAL driver, holds several layers?, description). GeoJSON keeps the layer's CRS (the
2008 ``crs`` member) rather than reproject to the WGS 84 of RFC 7946: outputs are never reprojected
silently; a note says so. GeoParquet is written with pyarrow: pyogrio's GDAL has no Parquet driver."""
EXPORT_BATCH_FEATURES = 20_000
LAYER_GEOMETRY = {"segments": "Polygon", "prompt_boxes": "Polygon", "prompt_points": "Point"}  # when a layer is empty
_MULTI = {"Point": "MultiPoint", "LineString": "MultiLineString", "Polygon": "MultiPolygon"}
_MULTI_CLASS: dict[str, Callable[[list[Any]], BaseGeometry]] = {
    "MultiPoint": MultiPoint,
    "MultiLineString": MultiLineString,
    "MultiPolygon": MultiPolygon,
}


@dataclass(frozen=True)
class _Stream:
    """One layer as Arrow record batches: geometries as WKB in ``geometry_name`` (None: a plain table),
    declared as ``geometry_type`` (an OGR name such as "Polygon"), in ``crs`` (None: unknown)."""

    name: str
    reader: Any  # a pyarrow.RecordBatchReader
    geometry_name: str | None
    geometry_type: str | None
    crs: CRS | None
    bounds: tuple[float, float, float, float] | None


def check_vector_output(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Validate a vector output path before any work is done; returns it as an absolute Path.

    Accepts exactly the extensions of :data:`VECTOR_FORMATS`; refuses an existing file (for a
    shapefile: any of its parts) without ``overwrite``, and a missing or read-only folder.
    """
    target = Path(path).expanduser().absolute()
    if not target.is_dir() and target.suffix.lower() not in VECTOR_FORMATS:
        *others, last = VECTOR_FORMATS
        raise OutputError(f"{target.name}: choose an output ending in {', '.join(others)} or {last}")
    target = check_output_path(target, overwrite=overwrite, suffixes=tuple(VECTOR_FORMATS))
    if target.suffix.lower() == ".shp" and not overwrite:
        refuse_existing(shapefile_parts(target))
    return target


def write_vector(
    layers: Mapping[str, pd.DataFrame | gpd.GeoDataFrame],
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    main: str = "segments",
) -> list[str]:
    """Write ``layers`` (name -> frame; GeoDataFrames in their own CRS) to ``path`` in the format its
    extension names, whole or not at all; returns notes for the user (empty for a GeoPackage).

    A GeoPackage gets every layer (plain DataFrames as tables); the other formats get the ``main``
    layer with all its columns, and the notes say which layers were left out and what the format
    changed (shortened Shapefile field names, date-times as text, cut text, the GeoJSON CRS).
    """
    target = check_vector_output(path, overwrite=overwrite)
    form = VECTOR_FORMATS[target.suffix.lower()]
    if not layers:
        raise InputError(f"there are no layers to write to {target.name}")
    if form.multi_layer:
        _write_gpkg_layers(layers, target, overwrite=overwrite)
        return []
    if main not in layers:
        raise InputError(f"there is no layer {main!r} to write: the layers are {', '.join(layers)}")
    frame = layers[main]
    if not isinstance(frame, gpd.GeoDataFrame):
        raise InputError(f"the layer {main} has no geometry: write it to a .gpkg")
    left_out = [name for name in layers if name != main]
    notes = [f"{enumerate_names(left_out)} {'is' if len(left_out) == 1 else 'are'} kept only in GeoPackage outputs"]
    try:
        stream = _frame_stream(main, frame)
    except pa.ArrowException as exc:  # a column Arrow has no type for (mixed Python objects)
        raise OutputError(
            f"cannot write {main} to {target.name} ({exc}): write a .gpkg, which takes any column"
        ) from exc
    return notes[: bool(left_out)] + _write_stream(stream, target, form, overwrite=overwrite)


def export_layer(
    source_gpkg: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    layer: str = "segments",
    overwrite: bool = False,
) -> list[str]:
    """Copy ``layer`` of the GeoPackage ``source_gpkg`` to ``target`` in the format its extension names
    (in the layer's own CRS), whole or not at all; returns notes as :func:`write_vector` does.

    The layer is streamed in batches of :data:`EXPORT_BATCH_FEATURES` features, so memory stays flat
    however large it is (a FlatGeobuf's spatial index takes some bytes per feature).
    """
    source = _check_source(Path(source_gpkg).expanduser().absolute(), layer)
    destination = check_vector_output(target, overwrite=overwrite)
    if destination.exists() and destination.samefile(source):
        raise OutputError(f"{destination} is the GeoPackage to export from: choose another output path")
    form = VECTOR_FORMATS[destination.suffix.lower()]
    with _gpkg_stream(source, layer) as stream:
        return _write_stream(stream, destination, form, overwrite=overwrite)


# --- layers as Arrow streams ---------------------------------------------------------------------------------------


def _frame_stream(name: str, frame: gpd.GeoDataFrame) -> _Stream:
    """``frame`` as one Arrow batch; mixed single and multi geometries become multi geometries."""
    geometries, geometry_type = _uniform(frame.geometry, default=LAYER_GEOMETRY.get(name, "Unknown"))
    frame = frame.set_geometry(geometries)
    table = pa.table(frame.to_arrow(index=False, geometry_encoding="WKB"))
    bounds = _bounds([float(v) for v in frame.total_bounds])
    return _Stream(name, table.to_reader(), str(frame.geometry.name), geometry_type, frame.crs, bounds)


def _uniform(geometries: gpd.GeoSeries, *, default: str) -> tuple[gpd.GeoSeries, str]:
    """The geometries and the one OGR type they declare; ``default`` for no geometries."""
    types = set(geometries.geom_type.dropna())
    if len(types) <= 1:
        return geometries, types.pop() if types else default
    multi = {_MULTI.get(kind, kind) for kind in types}
    if len(multi) > 1:
        return geometries, "Unknown"
    (kind,) = multi
    values = geometries.to_numpy().copy()
    single = geometries.geom_type.isin(list(_MULTI)).to_numpy()
    values[single] = [_MULTI_CLASS[kind]([part]) for part in values[single]]
    return gpd.GeoSeries(values, index=geometries.index, crs=geometries.crs), kind


@contextmanager
def _gpkg_stream(source: Path, layer: str) -> Iterator[_Stream]:
    info = pyogrio.read_info(source, layer=layer, force_total_bounds=True)
    with pyogrio.open_arrow(source, layer=layer, use_pyarrow=True, batch_size=EXPORT_BATCH_FEATURES) as (meta, reader):
        name = meta["geometry_name"] or None
        kind = info["geometry_type"] if name else None
        crs = CRS.from_user_input(meta["crs"]) if meta["crs"] else None
        yield _Stream(layer, reader, name, kind, crs, _bounds(info.get("total_bounds")))


def _bounds(values: Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """(x_min, y_min, x_max, y_max), or None for an empty layer (no bounds, or NaN ones)."""
    if values is None or len(values) != 4 or any(v != v for v in values):
        return None
    return float(values[0]), float(values[1]), float(values[2]), float(values[3])


def _check_source(source: Path, layer: str) -> Path:
    if not source.is_file():
        raise InputError(f"{source} does not exist: give the GeoPackage a batch run wrote")
    try:
        names = [str(row[0]) for row in pyogrio.list_layers(source)]
    except DataSourceError as exc:
        raise InputError(f"cannot read {source} ({exc}): give the GeoPackage a batch run wrote") from exc
    if layer not in names:
        raise InputError(f"{source.name} has no layer {layer!r}: choose one of {', '.join(names)}")
    return source


# --- writers -------------------------------------------------------------------------------------------------------


def _write_stream(stream: _Stream, target: Path, form: VectorFormat, *, overwrite: bool) -> list[str]:
    if not form.multi_layer:
        _geometry_name(stream)
    if form.driver == "ESRI Shapefile":
        return _write_shapefile(stream, target, overwrite=overwrite)
    if form.driver == "GeoJSON" and stream.crs is None:
        raise OutputError(
            f"{target.name}: a GeoJSON cannot say that its layer has no CRS (pixel coordinates), readers would take "
            "them for WGS 84 degrees: write a .gpkg, .fgb, .parquet or .shp"
        )
    with atomic_output(target, overwrite=overwrite) as temporary, _output_errors(target, form):
        if form.driver == "Parquet":
            _write_parquet(stream, temporary)
        else:
            _write_ogr(stream, temporary, form.driver)
        if form.driver == "GeoJSON":
            _check_geojson_crs(temporary, stream.crs, target)
    if form.driver == "GeoJSON" and stream.crs is not None and not _is_wgs84(stream.crs):
        label = _crs_label(stream.crs)
        return [
            f"{target.name} is in {label}, the layer's own CRS (named in its crs member), not WGS 84 as RFC 7946 "
            "asks: reproject it explicitly for tools that assume WGS 84"
        ]
    return []


def _write_ogr(stream: _Stream, path: Path, driver: str) -> None:
    """Write the stream with GDAL; an error of the stream itself is raised as it is (pyogrio's own
    RuntimeError would only say that a batch could not be read)."""
    failures: list[Exception] = []

    def batches() -> Iterator[Any]:
        try:
            yield from stream.reader
        except Exception as exc:  # recorded for the message, and raised on to GDAL, which stops
            failures.append(exc)
            raise

    try:
        with warnings.catch_warnings():
            # Shapefile text cut to 254 bytes: _write_shapefile notes it; pixel coordinates have no CRS on purpose
            warnings.filterwarnings("ignore", message=".*has been truncated to 254", category=RuntimeWarning)
            warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
            pyogrio.write_arrow(
                pa.RecordBatchReader.from_batches(stream.reader.schema, batches()),
                path,
                layer=stream.name,
                driver=driver,
                geometry_name=stream.geometry_name,
                geometry_type=stream.geometry_type,
                crs=stream.crs.to_wkt() if stream.crs is not None else None,
                dataset_options=GPKG_DATASET_OPTIONS if driver == "GPKG" else None,
            )
    except RuntimeError as exc:
        if failures:
            raise failures[0] from exc
        raise


def _write_gpkg_layers(layers: Mapping[str, pd.DataFrame], target: Path, *, overwrite: bool) -> None:
    form = VECTOR_FORMATS[".gpkg"]
    with atomic_output(target, overwrite=overwrite) as temporary, _output_errors(target, form):
        with warnings.catch_warnings():  # a layer in pixel coordinates has no CRS on purpose
            warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
            for name, frame in layers.items():
                if isinstance(frame, gpd.GeoDataFrame):
                    geometries, kind = _uniform(frame.geometry, default=LAYER_GEOMETRY.get(name, "Unknown"))
                    write_layer(frame.set_geometry(geometries), temporary, layer=name, geometry_type=kind)
                else:
                    write_layer(frame, temporary, layer=name)


def _write_parquet(stream: _Stream, path: Path) -> None:
    """GeoParquet 1.0: the WKB column ``geometry`` and the ``geo`` metadata (CRS as PROJJSON, bbox)."""
    geometry = _geometry_name(stream)
    source = stream.reader.schema
    name = "geometry" if "geometry" not in source.names else geometry
    fields = [pa.field(name, pa.binary()) if f.name == geometry else f for f in source]
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": [] if stream.geometry_type in (None, "Unknown") else [stream.geometry_type],
        "crs": stream.crs.to_json_dict() if stream.crs is not None else None,  # null: unknown (absent: OGC:CRS84)
    }
    if stream.bounds is not None:
        column["bbox"] = list(stream.bounds)
    geo = {"version": "1.0.0", "primary_column": name, "columns": {name: column}}
    schema = pa.schema(fields, metadata={**(source.metadata or {}), b"geo": json.dumps(geo)})
    with pq.ParquetWriter(path, schema) as writer:
        for batch in stream.reader:
            writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))


def _geometry_name(stream: _Stream) -> str:
    if stream.geometry_name is None:
        raise InputError(f"the layer {stream.name} has no geometry: write it to a .gpkg")
    return stream.geometry_name


@contextmanager
def _output_errors(target: Path, form: VectorFormat) -> Iterator[None]:
    """GDAL, Arrow and OS errors while writing ``target`` as OutputError."""
    try:
        yield
    except OutputError:
        raise
    except (RuntimeError, pa.ArrowException, OSError) as exc:  # pyogrio's errors are RuntimeErrors
        raise OutputError(
            f"cannot write {target} as {form.description} ({exc}): nothing was written; check the free space of "
            "its folder, or write a .gpkg, which takes any column"
        ) from exc


# --- GeoJSON: the CRS must survive -----------------------------------------------------------------------------------


def _check_geojson_crs(written: Path, crs: CRS | None, target: Path) -> None:
    """Refuse a GeoJSON whose readers would see another CRS than the layer's (GDAL names only
    CRSs with an authority code; a file without a crs member is read as WGS 84)."""
    declared = pyogrio.read_info(written)["crs"]
    seen = CRS.from_user_input(declared) if declared else CRS.from_epsg(4326)
    if crs is not None and not seen.equals(crs, ignore_axis_order=True):
        raise OutputError(
            f"{target.name}: GeoJSON can name only a CRS with an authority code (such as EPSG:32633), not "
            f"{_crs_label(crs)}; readers would take it for {_crs_label(seen)}: write a .gpkg, .fgb, .parquet or .shp"
        )


def _is_wgs84(crs: CRS) -> bool:
    return crs.equals(CRS.from_epsg(4326), ignore_axis_order=True)


def _crs_label(crs: CRS) -> str:
    authority = crs.to_authority()
    return f"{authority[0]}:{authority[1]}" if authority else crs.name


# --- Shapefile: its columns and parts are prepared in think2seg.output.shapefile -----------------------------------


def _write_shapefile(stream: _Stream, target: Path, *, overwrite: bool) -> list[str]:
    """Write every part in a folder beside ``target``, then move each into place (the .shp last)."""
    parts = shapefile_parts(target)
    if not overwrite:
        refuse_existing(parts)
    reader, notes, cut = shapefile_reader(stream.reader, geometry_name=stream.geometry_name)
    prepared = replace(stream, reader=reader)
    workdir = make_workdir(target, ".partial")
    try:
        with _output_errors(target, VECTOR_FORMATS[".shp"]):
            _write_ogr(prepared, workdir / target.name, "ESRI Shapefile")
        written = sorted(workdir.iterdir(), key=lambda path: path.suffix.lower() == ".shp")
        for path in written:
            fsync_path(path)
        move_into_place(written, parts, target)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if cut:
        notes.append(
            f"Shapefile text is at most 254 bytes: values of {enumerate_names(sorted(cut))} were cut; "
            "write a .gpkg to keep them whole"
        )
    return notes
