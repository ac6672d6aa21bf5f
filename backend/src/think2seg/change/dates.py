"""Each date's acquisition date: given by the user, else from the raster's metadata, else unknown.

Metadata read, first found wins: ``ACQUISITIONDATETIME`` (GDAL's IMAGERY domain, then the default
one: the time the scene was taken) and ``TIFFTAG_DATETIME`` (the TIFF's own date, often when the
file was made; used only when nothing better is there). A date given explicitly wins over both,
because it is the way to correct a file whose metadata says the processing date.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import date

import rasterio
from rasterio.errors import RasterioError

from think2seg.errors import InputError, RasterError

log = logging.getLogger(__name__)

_SOURCES = (("IMAGERY", "ACQUISITIONDATETIME"), ("", "ACQUISITIONDATETIME"), ("", "TIFFTAG_DATETIME"))
_DATE = re.compile(r"^\s*(\d{4})[-:/](\d{2})[-:/](\d{2})")


@dataclass(frozen=True)
class AcquiredDate:
    """``value`` is YYYY-MM-DD or "" (unknown); ``origin`` says where it came from ("option",
    a metadata item's name, or "")."""

    value: str = ""
    origin: str = ""


def parse_date(text: str) -> str:
    """``text`` (YYYY-MM-DD) as an ISO date; :class:`InputError` otherwise."""
    try:
        return date.fromisoformat(text.strip()).isoformat()
    except ValueError as exc:
        raise InputError(f"{text!r} is not a date: write it as YYYY-MM-DD, e.g. 2021-06-30") from exc


def acquired_date(path: str | os.PathLike[str], *, given: str | None = None) -> AcquiredDate:
    """The date of the raster at ``path``: ``given`` (YYYY-MM-DD) when set, else its metadata's."""
    if given:
        return AcquiredDate(parse_date(given), "option")
    try:
        with rasterio.open(path) as dataset:
            tags = {(domain, key): dataset.tags(ns=domain or None).get(key) for domain, key in _SOURCES}
    except RasterioError as exc:
        raise RasterError(f"cannot read the metadata of {path} ({exc}): check it with gdalinfo") from exc
    for (_domain, key), text in tags.items():
        if text:
            found = _metadata_date(text)
            if found:
                return AcquiredDate(found, key)
            log.warning("%s: the %s metadata %r is not a date; ignored", path, key, text)
    return AcquiredDate()


def _metadata_date(text: str) -> str:
    """YYYY-MM-DD of a metadata date-time ("2021:06:30 10:00:00", "2021-06-30T10:00:00Z"); "" if none."""
    match = _DATE.match(text)
    if match is None:
        return ""
    try:
        return date(*(int(part) for part in match.groups())).isoformat()
    except ValueError:
        return ""
