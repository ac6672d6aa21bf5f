"""STAC Items as rasters: reading one with pystac (a local file or an http(s) URL) and choosing its asset.

:func:`read_asset` gives the :class:`StacAsset` to read (its absolute href and ground sample distance);
:func:`think2seg.geo.remote.locate` then locates that href like any other raster. The HTTP helpers at
the end (:func:`http_error`, :func:`status_error`) turn failed requests into think2seg errors; they
live here, the lower module, so that :mod:`think2seg.geo.remote` can share them without an import cycle.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyproj

from think2seg.errors import InputError, RasterError, RasterNotFoundError, RasterUnreachableError

RGB_ASSET_KEYS = ("visual", "image", "rgb")
"""STAC asset keys taken for RGB imagery when no asset has the role ``visual``."""
HTTP_TIMEOUT_S = 30
_URL = re.compile(r"^https?://", re.IGNORECASE)


def is_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL (any case of the scheme)."""
    return bool(_URL.match(text))


@dataclass(frozen=True)
class StacAsset:
    """The asset of a STAC Item that is read: its key, resolved href and ground sample distance."""

    item_href: str
    item_id: str
    key: str
    href: str
    gsd_m: float | None

    @property
    def note(self) -> str:
        gsd = f", gsd {self.gsd_m:g} m" if self.gsd_m else ""
        return f"read the asset '{self.key}' of the STAC item '{self.item_id}' ({self.href}{gsd})"


def read_asset(text: str, key: str | None) -> StacAsset:
    """The asset to read of the STAC Item at ``text`` (a path, made absolute, or an http(s) URL):
    ``key``, else as :func:`choose_asset` picks it; ``href`` is the asset's absolute href, ``gsd_m``
    the asset's ground sample distance (else the item's). Raises the errors of :func:`read_stac_item`
    and :func:`choose_asset`."""
    href = text if is_url(text) else str(Path(text).expanduser().absolute())
    item = read_stac_item(href)
    chosen = choose_asset(item, key)
    asset = item.assets[chosen]
    gsd = _gsd_m(asset.extra_fields) or _gsd_m(item.properties)
    return StacAsset(href, str(item.id), chosen, asset.get_absolute_href() or asset.href, gsd)


def read_stac_item(href: str, *, timeout_s: float = HTTP_TIMEOUT_S) -> Any:
    """The ``pystac.Item`` at ``href`` (a local path or an http(s) URL), relative hrefs resolvable.

    Raises :class:`RasterNotFoundError`, :class:`RasterUnreachableError` or :class:`InputError`
    (not JSON, or not a STAC Item)."""
    import pystac

    data = _read_json(href, timeout_s)
    kind = data.get("type") if isinstance(data, dict) else None
    if kind != "Feature":
        what = f"a STAC {kind}" if isinstance(kind, str) else "no STAC Item"
        raise InputError(f"{href} is {what}: give the JSON of one STAC Item (type Feature), e.g. item.json")
    try:
        return pystac.Item.from_dict(data, href=href, preserve_dict=False)
    except (pystac.STACError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{href} is not a valid STAC Item ({exc}): check it with stac-validator") from exc


def _read_json(href: str, timeout_s: float) -> Any:
    try:
        if is_url(href):
            with urllib.request.urlopen(href, timeout=timeout_s) as response:  # nosec B310 - http(s) only
                text = response.read().decode("utf-8-sig")
        else:
            text = Path(href).read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise RasterNotFoundError(f"{href} does not exist: check the path of the STAC item") from exc
    except urllib.error.URLError as exc:
        raise http_error(href, exc) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RasterError(f"cannot read the STAC item {href} ({exc}): check the file") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{href} is not JSON ({exc}): give a STAC Item JSON file or URL") from exc


def choose_asset(item: Any, key: str | None) -> str:
    """The key of the asset to read: ``key``, else the first with role ``visual``, else the first of
    :data:`RGB_ASSET_KEYS` (any case); :class:`InputError` listing the assets when none fits."""
    assets = item.assets
    if key is not None:
        if key not in assets:
            raise InputError(f"the STAC item '{item.id}' has no asset '{key}': its assets are {_listing(assets)}")
        return key
    visual = [name for name, asset in assets.items() if "visual" in (asset.roles or ())]
    named = [name for wanted in RGB_ASSET_KEYS for name in assets if name.lower() == wanted]
    if visual or named:
        return (visual or named)[0]
    raise InputError(
        f"the STAC item '{item.id}' has no asset with the role 'visual' nor one named "
        f"{'/'.join(RGB_ASSET_KEYS)}: choose one with --stac-asset NAME among {_listing(assets)}"
    )


def _listing(assets: dict[str, Any]) -> str:
    if not assets:
        return "none (the item has no assets)"
    return "; ".join(_described(name, asset) for name, asset in assets.items())


def _described(name: str, asset: Any) -> str:
    roles = ", ".join(asset.roles or ()) or "none"
    return f"{name} ({asset.media_type or 'no media type'}; roles {roles})"


def _gsd_m(fields: dict[str, Any]) -> float | None:
    """``gsd``, else the pixel size of ``proj:transform`` when ``proj:epsg``/``proj:code`` is metric."""
    gsd = fields.get("gsd")
    if isinstance(gsd, (int, float)) and gsd > 0:
        return float(gsd)
    transform, code = fields.get("proj:transform"), fields.get("proj:code") or fields.get("proj:epsg")
    if not (isinstance(transform, list) and len(transform) >= 6 and code):
        return None
    try:
        crs = pyproj.CRS.from_user_input(f"EPSG:{code}" if isinstance(code, int) else code)
    except pyproj.exceptions.CRSError:
        return None  # the item's CRS is unknown to PROJ: no resolution from it
    metric = crs.is_projected and all(axis.unit_name in ("metre", "meter") for axis in crs.axis_info)
    return float(math.hypot(transform[0], transform[3])) if metric else None


# --- HTTP errors (shared with think2seg.geo.remote) --------------------------------------------


def http_error(url: str, exc: urllib.error.URLError) -> RasterError:
    """Our error for a failed HTTP request to ``url``."""
    if isinstance(exc, urllib.error.HTTPError):
        return status_error(url, exc.code, str(exc.reason))
    return RasterUnreachableError(
        f"cannot reach {url} ({exc.reason}): check the address, that the server is up and that this machine "
        "can reach it (network, proxy, VPN), or download the file and give its local path"
    )


def status_error(url: str, code: int, reason: str) -> RasterError:
    """Our error for the HTTP status ``code`` (with ``reason``) answered for ``url``."""
    if code == 404:
        return RasterNotFoundError(f"the server answers 404 Not Found for {url}: check the URL")
    if code in (401, 403):
        return RasterError(
            f"the server refuses {url} ({code} {reason}): the link may have expired or need credentials "
            "(GDAL_HTTP_HEADERS, GDAL_HTTP_AUTH or your cloud credentials)"
        )
    return RasterError(f"the server answers {code} {reason} for {url}: try again later, or check the URL")
