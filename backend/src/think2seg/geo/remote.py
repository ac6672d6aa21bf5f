"""Rasters that are not local files: COGs over HTTP(S), GDAL WMS/XYZ/WMTS services and STAC items.

:func:`locate` turns what the user gave (a path, an ``https://`` URL, a ``/vsicurl/`` or other
``/vsi`` path, a ``WMTS:`` connection string, a STAC Item JSON) into a :class:`RasterLocation`: the
exact string GDAL opens (a URL never goes through ``pathlib``, so ``//`` and query strings survive)
and the GDAL configuration its reads need, which the reader sets with ``rasterio.Env`` around the
open and every read, never globally. Web services (GDAL's WMS and WMTS drivers, e.g. an XYZ tile
``.xml``) have no ground resolution that suits us, so they are read on a grid chosen by
``resolution_m`` (:func:`read_grid`), which honestly converts ground metres into map units.
A STAC Item's asset is chosen by :mod:`think2seg.geo.stac` and then located like any other raster.
Failures become think2seg errors that name the URL and say what to do, never a GDAL traceback.
"""

from __future__ import annotations

import html
import math
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import pyproj
from affine import Affine
from rasterio.crs import CRS

from think2seg.errors import InputError, RasterError, RasterUnreachableError
from think2seg.geo.stac import HTTP_TIMEOUT_S, StacAsset, http_error, is_url, read_asset, status_error

SERVICE_DRIVERS = frozenset({"WMS", "WMTS"})
"""GDAL drivers of web services: tiles at every zoom level and no ground resolution of their own."""
HTTP_CONNECT_TIMEOUT_S = 10
RESOLUTION_RANGE_M = (0.01, 100_000.0)
_METRIC_TOLERANCE = 0.01  # a projected metre within 1% of a ground metre is taken as one (UTM, national grids)
_SAME_SCALE_TOLERANCE = 0.01  # x and y ground scales this close: square pixels in map units (web mercator)
_NATIVE_TOLERANCE = 1e-6
_MAX_STEP_M = 1000.0  # ground scale is measured over at most this distance around the centre
_LOST_SLASH = re.compile(r"^https?:/[^/]", re.IGNORECASE)
_CONNECTION = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:")  # WMTS:..., WMS:..., GPKG:...; not a drive letter (C:)
_CLOUD = {"s3://": "/vsis3/", "gs://": "/vsigs/"}
_NETWORK_VSI = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift", "/vsiwebhdfs")


def check_resolution_m(value: object) -> float:
    """``value`` as a ground resolution in metres per pixel; :class:`InputError` if it is not one."""
    low, high = RESOLUTION_RANGE_M
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise InputError(f"resolution_m must be a number from {low:g} to {high:g} (metres per pixel), got {value!r}")
    return float(value)


def is_remote(text: str) -> bool:
    """Whether ``text`` names no local file path but a URL, a GDAL ``/vsi`` path or a connection
    string (``WMTS:...``): such names must not be globbed, stat()ed or made absolute."""
    lowered = text.lower()
    return is_url(text) or lowered.startswith(("/vsi", *_CLOUD)) or bool(_CONNECTION.match(text))


def short_name(text: str) -> str:
    """A URL's last path segment (else its host), or a path's file name, for messages."""
    if is_remote(text):
        parts = urlsplit(text.removeprefix("/vsicurl/"))
        segment = parts.path.rstrip("/").rsplit("/", 1)[-1]
        return segment or parts.netloc or text
    return Path(text).name


@dataclass(frozen=True)
class RasterLocation:
    """Where a raster is. ``label`` names it in messages and tiles (an absolute path, or the URL or
    connection string exactly as given); ``gdal_path`` is what GDAL opens (``/vsicurl/`` + URL);
    ``is_local`` says whether it is a local file that can be stat()ed."""

    label: str
    gdal_path: str
    is_local: bool
    stac: StacAsset | None = None

    @property
    def name(self) -> str:
        return short_name(self.label)

    def gdal_options(self) -> dict[str, str]:
        """GDAL configuration for reading: timeouts and retries (a local ``.xml`` or VRT may fetch
        from the network too), and, for remote files, no directory listing (no sidecar probing).
        A setting in the environment wins. ``CPL_VSIL_CURL_ALLOWED_EXTENSIONS`` is left unset so
        URLs without an extension (signed links) stay readable."""
        options = {
            "GDAL_HTTP_TIMEOUT": str(HTTP_TIMEOUT_S),
            "GDAL_HTTP_CONNECTTIMEOUT": str(HTTP_CONNECT_TIMEOUT_S),
            "GDAL_HTTP_MAX_RETRY": "2",
            "GDAL_HTTP_RETRY_DELAY": "1",
        }
        if not self.is_local:
            options |= {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES"}
        return {key: value for key, value in options.items() if key not in os.environ}


def locate(raster: str | os.PathLike[str], *, stac_asset: str | None = None) -> RasterLocation:
    """Where ``raster`` is. A ``.json`` is read as a STAC Item and its asset located (``stac_asset``,
    default the first with role ``visual``, else one of :data:`~think2seg.geo.stac.RGB_ASSET_KEYS`).
    Raises :class:`InputError` for a URL that lost its ``//`` (passed through ``pathlib.Path``), a bad
    STAC Item or asset, and the errors of :func:`~think2seg.geo.stac.read_stac_item`."""
    text = os.fspath(raster)
    if _LOST_SLASH.match(text) or _LOST_SLASH.match(text.removeprefix("/vsicurl/")):
        raise InputError(f"{text} looks like a URL whose '//' was lost (pathlib.Path drops it): pass URLs as str")
    if urlsplit(text).path.lower().endswith(".json"):
        return _locate_stac(text, stac_asset)
    if stac_asset is not None:
        raise InputError(f"--stac-asset {stac_asset} applies to STAC items (.json) only, not to {text}: drop it")
    return _locate_raster(text)


def _locate_stac(text: str, key: str | None) -> RasterLocation:
    asset = read_asset(text, key)
    location = _locate_raster(asset.href)
    return replace(location, stac=replace(asset, href=location.label))


def _locate_raster(text: str) -> RasterLocation:
    if is_url(text):
        return RasterLocation(text, "/vsicurl/" + text, False)
    for scheme, prefix in _CLOUD.items():
        if text.lower().startswith(scheme):
            return RasterLocation(text, prefix + text[len(scheme) :], False)
    if is_remote(text) and not Path(text).exists():
        return RasterLocation(text, text, False)
    path = str(Path(text).expanduser().absolute())
    return RasterLocation(path, path, True)


def network_url(location: RasterLocation) -> str | None:
    """The http(s) URL a location reads from, if it names one (a ``.xml`` service: its ServerUrl)."""
    text = location.gdal_path.removeprefix("/vsicurl/")
    if is_url(text):
        return text
    if location.is_local and text.lower().endswith(".xml"):
        return _service_url(Path(text))
    found = re.search(r"https?://[^\s,]+", text)
    return found.group(0) if found else None


def _service_url(xml: Path) -> str | None:
    """The ServerUrl (or capabilities URL) of a GDAL WMS/WMTS description file."""
    try:
        text = xml.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None  # GDAL reports the unreadable file itself
    found = re.search(r"<(ServerUrl|GetCapabilitiesUrl)>\s*(.*?)\s*</\1>", text, re.DOTALL)
    return html.unescape(found.group(2)) if found else None


# --- errors -----------------------------------------------------------------------------------


def gdal_reason(exc: BaseException) -> str:
    """The most specific line GDAL gave: the deepest cause's ``error:`` part, else its first line."""
    reasons: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(reasons) < 8:
        reasons.append(str(current).strip())
        current = current.__cause__ or current.__context__
    text = next((r for r in reversed(reasons) if r), type(exc).__name__)
    found = re.search(r"error: (.+?)\.?(\n|$)", text)
    return found.group(1) if found else text.splitlines()[0]


def open_error(location: RasterLocation, exc: Exception) -> RasterError:
    """Why GDAL could not open a URL, a connection string or a service description, said plainly."""
    url = network_url(location)
    reason = gdal_reason(exc)
    if url is not None:
        probe = diagnose_url(url)
        if probe is not None:
            return probe
        return RasterError(
            f"{location.label} is reachable but GDAL cannot open it as a raster ({reason}): give a GeoTIFF/COG "
            "URL on a server that answers HTTP range requests, or a GDAL WMS/WMTS description"
        )
    return RasterError(f"GDAL cannot open {location.label} ({reason}): check the name, or use gdalinfo on it")


def diagnose_url(url: str, *, timeout_s: float = HTTP_CONNECT_TIMEOUT_S) -> RasterError | None:
    """Ask ``url`` for its first byte: the error that explains a failed open, or None if it answers."""
    request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):  # nosec B310 - http(s) URLs only
            return None
    except urllib.error.URLError as exc:
        return http_error(url, exc)
    except (OSError, ValueError) as exc:  # a timeout while reading, or a malformed URL
        return RasterUnreachableError(f"cannot reach {url} ({exc}): check the address and the network")


def read_error(location: RasterLocation, exc: Exception) -> RasterError:
    """Our error for a failed read of a network raster or service (a tile download that failed)."""
    text = "\n".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)
    status = re.search(r"HTTP status code: (\d+)", text)
    code = int(status.group(1)) if status else None
    reason = gdal_reason(exc)
    url = network_url(location) or location.label
    if code == 0 or (code is None and re.search(r"connect|resolve|timed? ?out", reason, re.IGNORECASE)):
        return RasterUnreachableError(
            f"cannot download from {url} ({reason}): check that the service is up and that this machine can "
            "reach it (network, proxy, VPN), then run again"
        )
    if code == 404 and location.gdal_path.lower().endswith(".xml"):
        return RasterError(
            f"the service {url} has no tile for part of the window (HTTP 404): read another area, or add "
            f"<ZeroBlockHttpCodes>204,404</ZeroBlockHttpCodes> to {location.name} so missing tiles read as empty"
        )
    if code is not None:
        return status_error(url, code, reason)
    return RasterError(f"cannot read {location.label} ({reason}): run again, or download it and give its path")


# --- resolution -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadGrid:
    """The grid a raster is read at: ``scale_xy`` source pixels per grid pixel along x and y (the
    grid's transform is the source's ``@ Affine.scale(*scale_xy)``); ``note`` says how it was chosen."""

    scale_xy: tuple[float, float]
    note: str

    @property
    def is_native(self) -> bool:
        return self.scale_xy == (1.0, 1.0)


NATIVE_GRID = ReadGrid((1.0, 1.0), "")


def read_grid(
    transform: Affine, crs: CRS, *, resolution_m: float, at_xy: tuple[float, float], service: bool = False
) -> ReadGrid:
    """The grid whose pixels are ``resolution_m`` ground metres at ``at_xy`` (map coordinates in ``crs``).

    A projected metre within 1% of a ground metre is taken as one. Otherwise the ground length of a
    source pixel is measured geodesically at ``at_xy``: where x and y scales agree (web mercator,
    conformal projections) pixels stay square in map units, scaled by the one ground scale (cos
    latitude in EPSG:3857); else (geographic CRSs) each axis is scaled on its own. Raises
    :class:`InputError` where the ground scale cannot be measured (outside the projection's area)."""
    resolution_m = check_resolution_m(resolution_m)
    units = (math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e))
    ground, lat = _ground_pixel_m(transform, crs, at_xy)
    scales = (ground[0] / units[0], ground[1] / units[1])  # ground metres per map unit
    pcrs = pyproj.CRS.from_wkt(crs.to_wkt())
    metric = pcrs.is_projected and all(axis.unit_name in ("metre", "meter") for axis in pcrs.axis_info)
    source = "the service's zoom levels" if service else f"the raster's {_shown(ground)} m pixels"
    if metric and all(abs(k - 1) < _METRIC_TOLERANCE for k in scales):
        scale_xy = (resolution_m / units[0], resolution_m / units[1])
        note = f"read at {resolution_m:g} m per pixel from {source}"
    elif abs(scales[0] / scales[1] - 1) < _SAME_SCALE_TOLERANCE:
        k = math.sqrt(scales[0] * scales[1])
        scale_xy = (resolution_m / (k * units[0]), resolution_m / (k * units[1]))
        note = (
            f"read at {resolution_m:g} m per pixel from {source}: map units of {_crs_name(pcrs)} are not ground "
            f"metres; at latitude {lat:.2f}° (the window centre) one is {k:.4g} m, so pixels are "
            f"{resolution_m / k:.6g} map units (exact at the centre, finer toward the poles)"
        )
    else:
        scale_xy = (resolution_m / ground[0], resolution_m / ground[1])
        sizes = " x ".join(f"{s * u:.6g}" for s, u in zip(scale_xy, units))
        note = (
            f"read at {resolution_m:g} m per pixel from {source}: {_crs_name(pcrs)} is not in metres; at latitude "
            f"{lat:.2f}° (the window centre) that is {sizes} map units per pixel (x, y)"
        )
    if all(abs(s - 1) < _NATIVE_TOLERANCE for s in scale_xy):
        return NATIVE_GRID
    return ReadGrid(scale_xy, note)


def _ground_pixel_m(transform: Affine, crs: CRS, at_xy: tuple[float, float]) -> tuple[tuple[float, float], float]:
    """Ground metres of one source pixel along its columns and rows at ``at_xy``, and its latitude."""
    pcrs = pyproj.CRS.from_wkt(crs.to_wkt())
    geod = pcrs.get_geod()
    if geod is None:
        raise InputError(f"the CRS {_crs_name(pcrs)} has no ellipsoid, so --resolution-m cannot be measured")
    to_lonlat = pyproj.Transformer.from_crs(pcrs, pcrs.geodetic_crs, always_xy=True)
    lengths = []
    lat = math.nan
    for step in ((transform.a, transform.d), (transform.b, transform.e)):
        metres, lat = _ground_length(geod, to_lonlat, at_xy, step)
        if metres > _MAX_STEP_M:  # a coarse pixel: measure over a shorter step, the scale is local
            shrink = _MAX_STEP_M / metres
            metres = _ground_length(geod, to_lonlat, at_xy, (step[0] * shrink, step[1] * shrink))[0] / shrink
        lengths.append(metres)
    if not all(math.isfinite(v) and v > 0 for v in lengths):
        raise InputError(
            f"cannot measure ground metres at {at_xy} in {_crs_name(pcrs)}: give --bounds inside the area the CRS covers"
        )
    return (lengths[0], lengths[1]), lat


def _ground_length(
    geod: pyproj.Geod, to_lonlat: pyproj.Transformer, at_xy: tuple[float, float], step: tuple[float, float]
) -> tuple[float, float]:
    """Geodesic length in metres of ``step`` (map units) centred on ``at_xy``, and the latitude there."""
    xs = (at_xy[0] - step[0] / 2, at_xy[0] + step[0] / 2, at_xy[0])
    ys = (at_xy[1] - step[1] / 2, at_xy[1] + step[1] / 2, at_xy[1])
    lons, lats = to_lonlat.transform(xs, ys, errcheck=False)
    if not all(math.isfinite(v) for v in (*lons, *lats)):
        return math.nan, math.nan
    return float(geod.inv(lons[0], lats[0], lons[1], lats[1])[2]), float(lats[2])


def _crs_name(crs: pyproj.CRS) -> str:
    code = crs.to_epsg()
    return f"EPSG:{code}" if code is not None else str(crs.name)


def _shown(pair: tuple[float, float]) -> str:
    x, y = (f"{v:.3g}" for v in pair)
    return x if x == y else f"{x} x {y}"
