"""Explicit reprojection of output geometries (``batch --target-crs``); inputs are never reprojected silently."""

from __future__ import annotations

import numpy as np
import shapely
from pyproj import Transformer
from rasterio.crs import CRS

from think2seg.errors import InputError


def parse_target_crs(value: str) -> CRS:
    """The CRS a user named (EPSG code, ``EPSG:XXXX``, WKT or PROJ string)."""
    try:
        return CRS.from_user_input(value)
    except Exception as exc:  # rasterio raises CRSError, and others for odd input types
        raise InputError(f"--target-crs {value!r} is not a CRS: give an EPSG code like EPSG:32633 or a WKT") from exc


def crs_label(crs: CRS | None) -> str:
    """A short, readable name of a CRS (``EPSG:32633``), for messages and the ``runs`` layer."""
    if crs is None:
        return "pixel coordinates"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_string()


class Reprojection:
    """Maps geometries from ``source`` to ``target``; the identity when they are the same CRS."""

    def __init__(self, source: CRS | None, target: CRS | None) -> None:
        self.source, self.target = source, target
        self.identity = source is None or target is None or source == target
        self._transformer: Transformer | None = None
        if source is not None and target is not None and not self.identity:
            self._transformer = Transformer.from_crs(source.to_wkt(), target.to_wkt(), always_xy=True)

    def __call__(self, geometries: np.ndarray) -> np.ndarray:
        if self._transformer is None or not len(geometries):
            return geometries
        transformer = self._transformer

        def transform(xy: np.ndarray) -> np.ndarray:
            x, y = transformer.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        return np.asarray(shapely.transform(geometries, transform), dtype=object)
