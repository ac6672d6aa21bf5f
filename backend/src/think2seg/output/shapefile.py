"""Shapefile outputs: short field names, text date-times, several files that appear together.

A Shapefile's field names are at most 10 bytes, so longer ones are shortened (uniquely, the same
way every time) and a note lists each change; it has no date-time type, so date-times become
ISO 8601 text, also noted. Its parts (.shp .shx .dbf .prj .cpg) are written in a temporary folder
beside the target and moved into place, the .shp last; the parts of an older shapefile are set
aside first and put back if a move fails, so the folder holds the old shapefile or the new one,
whole. The writer itself (GDAL, through pyogrio) is in :mod:`think2seg.output.formats`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from think2seg.errors import OutputError, OutputExistsError
from think2seg.output.atomic import fsync_path, replace_file

SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
STALE_SHAPEFILE_PARTS = (".qix", ".sbn", ".sbx", ".fix", ".shp.xml")  # indexes of an older file: removed with it
SHAPEFILE_NAME_BYTES = 10
SHAPEFILE_TEXT_BYTES = 254
_ISO_DATETIME = "%Y-%m-%dT%H:%M:%S"


def shapefile_field_names(names: Sequence[str]) -> dict[str, str]:
    """Each name -> a Shapefile field name: at most 10 bytes (UTF-8), unique regardless of case.

    Names that fit keep their place; the others, in order, are cut to fit, and those that would
    collide end in ``_1``, ``_2``, ...: ``window_col_off`` -> ``window_col``, ``window_col_width`` ->
    ``window_c_1``. The same names always give the same result.
    """
    taken: set[str] = set()
    result: dict[str, str] = {}
    fitting = [name for name in names if _fit(name, SHAPEFILE_NAME_BYTES) == name]
    for name in fitting + [name for name in names if name not in fitting]:
        candidate, number = _fit(name, SHAPEFILE_NAME_BYTES), 0
        while candidate.casefold() in taken:
            number += 1
            candidate = _fit(name, SHAPEFILE_NAME_BYTES - len(f"_{number}")) + f"_{number}"
        taken.add(candidate.casefold())
        result[name] = candidate
    return {name: result[name] for name in names}


def _fit(name: str, limit_bytes: int) -> str:
    return name.encode("utf-8")[:limit_bytes].decode("utf-8", errors="ignore")


def enumerate_names(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``: names for a note."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


# --- the layer's columns as a Shapefile takes them ------------------------------------------------------------------


def shapefile_reader(reader: Any, *, geometry_name: str | None) -> tuple[Any, list[str], set[str]]:
    """``reader`` (a pyarrow.RecordBatchReader; WKB geometries in ``geometry_name``) with Shapefile
    field names and date-times as ISO 8601 text; notes about both, and the set that collects (while
    it is read) the fields whose text is over 254 bytes, which the Shapefile cuts."""
    schema = reader.schema
    names = shapefile_field_names([f.name for f in schema if f.name != geometry_name])
    fields = [
        f
        if f.name == geometry_name
        else pa.field(names[f.name], pa.string() if pa.types.is_timestamp(f.type) else f.type)
        for f in schema
    ]
    shapefile_schema = pa.schema(fields)
    cut: set[str] = set()

    def batches() -> Iterator[Any]:
        for batch in reader:
            columns = [_shapefile_column(c, f, cut) for c, f in zip(batch.columns, shapefile_schema)]
            yield pa.RecordBatch.from_arrays(columns, schema=shapefile_schema)

    notes = []
    renamed = [f"{old} -> {new}" for old, new in names.items() if old != new]
    if renamed:
        notes.append(f"Shapefile field names are at most 10 characters: {', '.join(renamed)}")
    times = [names[f.name] for f in schema if pa.types.is_timestamp(f.type)]
    if times:
        notes.append(
            f"Shapefile has no date-time type: {enumerate_names(times)} {'is' if len(times) == 1 else 'are'} "
            "ISO 8601 text (2024-05-01T12:34:56.789+00:00)"
        )
    return pa.RecordBatchReader.from_batches(shapefile_schema, batches()), notes, cut


def _shapefile_column(column: Any, field: Any, cut: set[str]) -> Any:
    if pa.types.is_timestamp(column.type):
        zone = "%Ez" if column.type.tz is not None else ""
        return pc.strftime(column, format=_ISO_DATETIME + zone)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        longest = pc.max(pc.binary_length(column)).as_py()
        if longest is not None and longest > SHAPEFILE_TEXT_BYTES:
            cut.add(field.name)
    return column


# --- several files, moved into place together -----------------------------------------------------------------------


def shapefile_parts(target: Path) -> list[Path]:
    """Every file of the shapefile ``target`` (.shp): its parts and stale indexes, in both cases."""
    suffixes = SHAPEFILE_PARTS + STALE_SHAPEFILE_PARTS
    return [target.with_suffix(s) for s in suffixes] + [target.with_suffix(s.upper()) for s in suffixes]


def refuse_existing(parts: Sequence[Path]) -> None:
    """Raise OutputExistsError if any of ``parts`` exists."""
    existing = sorted({path.name for path in parts if path.exists()})
    if existing:
        raise OutputExistsError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''} in {parts[0].parent}: "
            "pass --overwrite to replace the shapefile, or choose another name"
        )


def make_workdir(target: Path, suffix: str) -> Path:
    """A new hidden folder beside ``target``, named after it and ending in ``suffix``."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent))
    except OSError as exc:
        raise OutputError(f"cannot write in {target.parent} ({exc.strerror}): choose a writable folder") from exc


def move_into_place(written: Sequence[Path], parts: Sequence[Path], target: Path) -> None:
    """Move ``written`` beside ``target``; the parts of an older shapefile are set aside first and
    put back if a move fails, so the folder has the old shapefile or the new one, whole."""
    existing = [path for path in parts if path.exists()]
    backup = make_workdir(target, ".previous") if existing else None
    aside: list[Path] = []
    placed: list[Path] = []
    try:
        for path in existing:
            if backup is not None and path.exists():  # on a case-insensitive disk OUT.DBF is OUT.dbf, moved already
                replace_file(path, backup / path.name)
                aside.append(path)
        for path in written:
            replace_file(path, target.parent / path.name)
            placed.append(target.parent / path.name)
    except OutputError:
        for path in placed:
            path.unlink(missing_ok=True)
        _put_back(aside, backup)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    fsync_path(target.parent)


def _put_back(aside: Sequence[Path], backup: Path | None) -> None:
    if backup is None:
        return
    try:
        for path in aside:
            os.replace(backup / path.name, path)
    except OSError as exc:
        raise OutputError(
            f"cannot put the previous shapefile back ({exc.strerror or exc}): its files are in {backup}, move them back"
        ) from exc
    shutil.rmtree(backup, ignore_errors=True)
