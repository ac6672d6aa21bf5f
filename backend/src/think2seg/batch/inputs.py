"""The rasters of a batch run: the CLI's RASTER arguments expanded, checked, and grouped by CRS.

Arguments are files, folders (their rasters, not recursive) or quoted globs; ``--from-list`` adds a
text file of them. URLs, ``/vsi`` paths, connection strings (``WMTS:...``) are kept exactly as given,
never globbed, stat()ed or made absolute (see :mod:`think2seg.geo.remote`). Every raster is opened before any model loads and all problems are reported in
one error, so a long list is fixed in one go. Rasters in different CRSs need an explicit
``--target-crs``: think2seg never reprojects silently.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyproj
from rasterio.crs import CRS

from think2seg.errors import InputError, RasterError, Think2SegError
from think2seg.geo.read import RasterSource
from think2seg.geo.remote import is_remote, short_name
from think2seg.geo.reproject import crs_label, parse_target_crs

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".png", ".jpg", ".jpeg", ".ecw", ".sid", ".nc")
SIDECAR_SUFFIXES = (".aux.xml", ".ovr", ".msk")  # GDAL's companions of a raster, never rasters themselves
_MAX_LISTED_FAILURES = 5
_MAX_NAMES_PER_CRS = 3

RasterRef = Path | str
"""A raster of a run: a local file (an absolute Path), or a URL or connection string as given (a str)."""


def raster_ref(raster: str | os.PathLike[str]) -> RasterRef:
    """``raster`` as a run keeps it: a URL or connection string as the str given, else a Path."""
    return raster if isinstance(raster, str) and is_remote(raster) else Path(raster)


def raster_name(ref: RasterRef) -> str:
    """The short name of a raster in messages: its file name, or a URL's last segment."""
    return ref.name if isinstance(ref, Path) else short_name(ref)


def expand_rasters(arguments: Sequence[str | os.PathLike[str]], *, from_list: Path | None = None) -> list[RasterRef]:
    """Absolute raster paths from files, folders and globs (then the entries of ``from_list``); URLs
    and connection strings as given (str).

    Order is kept and duplicates (same resolved path, same URL) dropped. A missing file is kept, so that
    :func:`check_rasters` reports it with every other problem. Raises :class:`InputError` for a
    glob or folder that holds no raster, a bad list file, or when no raster is given at all.
    """
    found = [path for argument in arguments for path in _expand(os.fspath(argument))]
    if from_list is not None:
        found += [path for entry, where in _list_entries(from_list) for path in _expand(entry, where)]
    if not found:
        raise InputError("no raster given: give at least one raster file, folder or quoted glob, or --from-list FILE")
    unique: dict[str, RasterRef] = {}
    for ref in found:
        unique.setdefault(str(ref.resolve()) if isinstance(ref, Path) else ref, ref)
    return list(unique.values())


def _expand(argument: str, where: str = "") -> list[RasterRef]:
    """One argument's rasters; ``where`` says where it came from (a list file's line) in messages."""
    if is_remote(argument) and not os.path.exists(argument):
        return [argument]
    path = Path(argument).expanduser()
    if path.is_dir():
        return list(_folder_rasters(path.absolute(), argument, where))
    if path.exists() or not glob.has_magic(argument):  # a file named like "a[1].tif" is a file
        return [path.absolute()]
    matches = sorted(glob.glob(os.path.expanduser(argument), recursive=True))
    rasters: list[RasterRef] = [Path(m).absolute() for m in matches if not Path(m).is_dir() and not _is_sidecar(m)]
    if not rasters:
        raise InputError(
            f"no raster matches '{argument}'{where}: check the pattern (quote it so the shell does not expand it)"
        )
    return rasters


def _folder_rasters(folder: Path, argument: str, where: str) -> list[Path]:
    rasters = sorted(
        (p for p in folder.iterdir() if p.is_file() and _is_raster_name(p.name)),
        key=lambda p: p.name,
    )
    if not rasters:
        suffixes = ", ".join(RASTER_SUFFIXES[:3])
        raise InputError(
            f"the folder {argument}{where} holds no raster files ({suffixes}, ...): "
            "give a folder of rasters, the raster files themselves, or a quoted glob like 'tiles/**/*.tif'"
        )
    return rasters


def _is_raster_name(name: str) -> bool:
    return name.lower().endswith(RASTER_SUFFIXES) and not _is_sidecar(name)


def _is_sidecar(name: str) -> bool:
    return name.lower().endswith(SIDECAR_SUFFIXES)


def _list_entries(list_file: Path) -> list[tuple[str, str]]:
    """(entry, where) of every path or glob in a list file, relative entries made relative to its folder."""
    list_file = Path(list_file).expanduser()
    if not list_file.is_file():
        raise InputError(f"the list {list_file} does not exist: give a text file with one raster path per line")
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the list {list_file} ({exc}): save it as UTF-8 text, one path per line") from exc
    folder = list_file.absolute().parent
    entries = [
        (
            text if is_remote(text) else os.path.join(folder, os.path.expanduser(text)),
            f" (line {number} of {list_file.name})",
        )
        for number, text in _numbered(lines)
    ]
    if not entries:
        raise InputError(f"the list {list_file} names no rasters: write one raster path or glob per line")
    return entries


def _numbered(lines: list[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield number, text


@dataclass(frozen=True)
class RasterInfo:
    """What the run needs to know of a raster before reading it (``crs`` None: pixel coordinates)."""

    path: RasterRef
    crs: CRS | None
    width: int
    height: int


def check_rasters(
    paths: Sequence[RasterRef],
    *,
    pixel_coords: bool = False,
    resolution_m: float | None = None,
    stac_asset: str | None = None,
) -> list[RasterInfo]:
    """Open every raster and return what the run needs of each; raise one error naming every problem.

    ``resolution_m`` and ``stac_asset`` are those of :class:`~think2seg.geo.read.RasterSource` (a web
    service without ``resolution_m`` is a problem). One unusable raster raises its own error. Several raise :class:`RasterError` when all are
    raster errors, else :class:`InputError`, with every failure (the first five) in one line.
    """
    infos: list[RasterInfo] = []
    failures: list[tuple[RasterRef, Think2SegError]] = []
    for path in paths:
        ref = path if isinstance(path, str) and is_remote(path) else Path(path).expanduser().absolute()
        try:
            with RasterSource(path, pixel_coords=pixel_coords, resolution_m=resolution_m, stac_asset=stac_asset) as src:
                infos.append(RasterInfo(ref, src.crs, src.width, src.height))
        except Think2SegError as exc:  # RasterError, RasterNotFoundError, MissingCRSError, InputError
            failures.append((ref, exc))
    if len(failures) == 1:
        raise failures[0][1]
    if failures:
        raise _several_failures(failures, len(paths))
    return infos


def _several_failures(failures: list[tuple[RasterRef, Think2SegError]], total: int) -> Think2SegError:
    names = _display_names([path for path, _ in failures])
    shown = [_describe(path, exc, names[path]) for path, exc in failures[:_MAX_LISTED_FAILURES]]
    more = len(failures) - len(shown)
    listed = "; ".join(shown) + (f"; and {more} more" if more else "")
    message = f"{len(failures)} of {total} rasters cannot be used: {listed} — fix them or leave them out of the list"
    all_raster = all(isinstance(exc, RasterError) for _, exc in failures)
    return RasterError(message) if all_raster else InputError(message)


def _describe(path: RasterRef, exc: Exception, name: str) -> str:
    """The error's message about ``path``, with the path shortened to ``name``."""
    text = str(exc)
    if isinstance(path, str):  # a URL: its messages keep it whole, so it can be checked
        return text if path in text else f"{name}: {text}"
    full = str(path.expanduser().absolute())
    if text.startswith(full):
        return name + text[len(full) :].replace(full, name)
    return f"{name}: {text.replace(full, name)}"


def _display_names(paths: Sequence[RasterRef]) -> dict[RasterRef, str]:
    """Each path's file name (a URL's last segment), or its whole path where two of ``paths`` share a name."""
    names = {path: raster_name(path) for path in paths}
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {path: name if counts[name] == 1 else str(path) for path, name in names.items()}


def crs_groups(infos: Sequence[RasterInfo]) -> dict[str, list[RasterInfo]]:
    """The rasters grouped by CRS (compared with ``==``), keyed by a readable label, in order of appearance."""
    groups: dict[str, list[RasterInfo]] = {}
    for info in infos:
        label = next((key for key, group in groups.items() if group[0].crs == info.crs), None)
        if label is None:
            label = _unique_label(_group_label(info.crs), groups)
            groups[label] = []
        groups[label].append(info)
    return groups


def _group_label(crs: CRS | None) -> str:
    if crs is None or crs.to_epsg() is not None:
        return crs_label(crs)
    try:
        return str(pyproj.CRS(crs.to_wkt()).name)
    except pyproj.exceptions.CRSError:
        return str(crs.to_string())


def _unique_label(label: str, groups: dict[str, list[RasterInfo]]) -> str:
    """``label``, numbered when another CRS of the run already has it (two unnamed custom CRSs)."""
    number, unique = 1, label
    while unique in groups:
        number += 1
        unique = f"{label} ({number})"
    return unique


def check_one_crs(infos: Sequence[RasterInfo], *, target_crs: str | None) -> CRS | None:
    """The CRS every polygon of the run is written in: ``target_crs``, else the rasters' one CRS.

    None means pixel coordinates. Raises :class:`InputError` for a bad ``target_crs``, a target
    with pixel-coordinate rasters, or rasters in several CRSs without a target.
    """
    if target_crs is not None:
        target = parse_target_crs(target_crs)
        if any(info.crs is None for info in infos):
            raise InputError(
                f"--target-crs {target_crs} cannot be used with --pixel-coords: pixel-coordinate rasters "
                "have no CRS to reproject from, so drop one of the two options"
            )
        return target
    groups = crs_groups(infos)
    if len(groups) > 1:
        raise InputError(_mixed_crs_message(groups))
    return infos[0].crs if infos else None


def _mixed_crs_message(groups: dict[str, list[RasterInfo]]) -> str:
    names = _display_names([info.path for group in groups.values() for info in group])
    listed = "; ".join(f"{label}: {_some_names(group, names)}" for label, group in groups.items())
    return (
        f"these rasters are in {len(groups)} CRSs ({listed}) and think2seg never reprojects them silently: "
        f"pass --target-crs {_suggested_target(groups)} to write every polygon in one CRS "
        "(areas are still measured in each raster's own CRS)"
    )


def _suggested_target(groups: dict[str, list[RasterInfo]]) -> str:
    """The EPSG code of the largest group (the first of equals), else a hint at what to give."""
    largest = sorted(groups.values(), key=len, reverse=True)  # stable: ties keep their order
    codes = [group[0].crs.to_epsg() for group in largest if group[0].crs is not None]
    return next((f"EPSG:{code}" for code in codes if code is not None), "with an EPSG code like EPSG:32633 or a WKT")


def _some_names(group: list[RasterInfo], names: dict[RasterRef, str]) -> str:
    shown = ", ".join(names[info.path] for info in group[:_MAX_NAMES_PER_CRS])
    more = len(group) - _MAX_NAMES_PER_CRS
    return shown + (f" and {more} more" if more > 0 else "")
