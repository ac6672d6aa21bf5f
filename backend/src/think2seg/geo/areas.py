"""Areas in square metres, the way an analyst expects them.

Projected CRSs: planar area converted to metres. Geographic CRSs: geodesic area on the CRS's
ellipsoid (pyproj.Geod). Mercator-family CRSs (Web Mercator included) are conformal, not
equal-area: their planar "metres" overstate areas by 1/cos²(latitude), so they are measured
geodesically too. Geometries are in the raster's traditional GIS axis order (x = longitude).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyproj
import shapely
from pyproj import CRS as ProjCRS
from rasterio.crs import CRS
from shapely.geometry.base import BaseGeometry


def areas_m2(geometries: Sequence[BaseGeometry], crs: CRS | None) -> list[float]:
    """Area of each geometry in m²; NaN for every geometry when ``crs`` is None (pixel coordinates)."""
    if not geometries:
        return []
    if crs is None:
        return [math.nan] * len(geometries)
    proj_crs = ProjCRS.from_user_input(crs.to_wkt())
    if proj_crs.is_geographic:
        return _geodesic(geometries, proj_crs)
    geodetic = proj_crs.geodetic_crs  # a projected CRS always has one
    if _is_mercator(proj_crs) and geodetic is not None:
        return _geodesic(_to_lonlat(geometries, proj_crs), geodetic)
    factor = proj_crs.axis_info[0].unit_conversion_factor if proj_crs.axis_info else 1.0
    return [float(g.area) * factor * factor for g in geometries]


def _geodesic(lonlat_geometries: Sequence[BaseGeometry], geographic: ProjCRS) -> list[float]:
    geod = geographic.get_geod() or pyproj.Geod(ellps="WGS84")
    return [abs(float(geod.geometry_area_perimeter(g)[0])) for g in lonlat_geometries]


def _is_mercator(crs: ProjCRS) -> bool:
    operation = crs.coordinate_operation
    name = operation.method_name.lower() if operation else ""
    return "mercator" in name and "transverse" not in name


def _to_lonlat(geometries: Sequence[BaseGeometry], crs: ProjCRS) -> list[BaseGeometry]:
    transformer = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)

    def project(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))

    return [shapely.transform(g, project) for g in geometries]
