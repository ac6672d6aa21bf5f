import math

import numpy as np
import pyproj
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import Polygon, box

from think2seg.errors import InputError
from think2seg.geo.areas import areas_m2
from think2seg.geo.vectorize import mask_to_polygons, polygons_frame

T = Affine(0.5, 0, 512000.0, 0, -0.5, 5262000.0)


def ring_mask() -> np.ndarray:
    mask = np.zeros((20, 20), bool)
    mask[2:12, 3:13] = True
    mask[5:8, 6:9] = False  # a hole
    return mask


def test_polygon_with_hole_at_exact_pixel_corners():
    (polygon,) = mask_to_polygons(ring_mask(), transform=T)
    assert len(polygon.interiors) == 1
    outer = Polygon([T @ (3, 2), T @ (13, 2), T @ (13, 12), T @ (3, 12)])
    hole = Polygon([T @ (6, 5), T @ (9, 5), T @ (9, 8), T @ (6, 8)])
    assert polygon.symmetric_difference(outer.difference(hole)).area == pytest.approx(0, abs=1e-9)
    assert polygon.area == pytest.approx((100 - 9) * 0.25)
    assert polygon.is_valid and polygon.exterior.is_ccw and not polygon.interiors[0].is_ccw


def test_nodata_pixels_never_become_polygons():
    mask = np.ones((10, 10), bool)
    valid = np.ones((10, 10), bool)
    valid[:, 5:] = False
    (polygon,) = mask_to_polygons(mask, transform=Affine.identity(), valid=valid)
    assert polygon.equals(box(0, 0, 5, 10))


def test_diagonal_pixels_are_separate_valid_polygons():
    mask = np.eye(4, dtype=bool)
    polygons = mask_to_polygons(mask, transform=Affine.identity())
    assert len(polygons) == 4 and all(p.is_valid for p in polygons)


def test_simplification_in_pixels_reduces_vertices_and_stays_valid():
    yy, xx = np.mgrid[0:200, 0:200]
    disc = (xx - 100) ** 2 + (yy - 100) ** 2 < 80**2
    (exact,) = mask_to_polygons(disc, transform=T)
    (simple,) = mask_to_polygons(disc, transform=T, simplify_px=1.5)
    assert len(simple.exterior.coords) < len(exact.exterior.coords) / 4
    assert simple.is_valid
    assert simple.symmetric_difference(exact).area < exact.area * 0.02


def test_rotated_transform_is_applied_exactly():
    rotated = Affine.rotation(30) @ Affine.scale(2, -2)
    mask = np.zeros((4, 4), bool)
    mask[1, 2] = True
    (polygon,) = mask_to_polygons(mask, transform=rotated)
    expected = Polygon([rotated @ (2, 1), rotated @ (3, 1), rotated @ (3, 2), rotated @ (2, 2)])
    assert polygon.symmetric_difference(expected).area == pytest.approx(0, abs=1e-9)


def test_projected_area_in_square_metres_including_feet():
    square = box(0, 0, 100, 100)
    assert areas_m2([square], CRS.from_epsg(32633)) == [pytest.approx(10_000)]
    assert areas_m2([square], CRS.from_epsg(2263)) == [pytest.approx(10_000 * 0.3048006096**2, rel=1e-6)]


def test_geographic_area_is_geodesic():
    cell = box(10.0, 50.0, 10.01, 50.01)
    (area,) = areas_m2([cell], CRS.from_epsg(4326))
    expected, _ = pyproj.Geod(ellps="WGS84").geometry_area_perimeter(cell)
    assert area == pytest.approx(abs(expected))
    assert area == pytest.approx(1112.0 * 715.0, rel=0.01)


def test_web_mercator_area_is_true_area_not_planar():
    to_3857 = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
    cell = shapely.transform(
        box(10.0, 50.0, 10.01, 50.01), lambda xy: np.column_stack(to_3857.transform(xy[:, 0], xy[:, 1]))
    )
    (area,) = areas_m2([cell], CRS.from_epsg(3857))
    (geodesic,) = areas_m2([box(10.0, 50.0, 10.01, 50.01)], CRS.from_epsg(4326))
    assert area == pytest.approx(geodesic, rel=1e-6)
    assert cell.area > 2 * area  # planar pseudo-metres overstate by 1/cos²(50°)


def test_frame_min_area_and_pixel_coordinates():
    mask = np.zeros((20, 20), bool)
    mask[0:2, 0:2] = True  # 4 px = 1 m²
    mask[10:20, 10:20] = True  # 100 px = 25 m²
    frame = polygons_frame(mask, transform=T, crs=CRS.from_epsg(32633), min_area_m2=2)
    assert frame["area_m2"].tolist() == [25.0] and frame.crs.to_epsg() == 32633
    pixel = polygons_frame(mask, transform=Affine.identity(), crs=None)
    assert len(pixel) == 2 and all(math.isnan(a) for a in pixel["area_m2"])
    with pytest.raises(InputError):
        polygons_frame(mask, transform=Affine.identity(), crs=None, min_area_m2=1)


@pytest.mark.parametrize("simplify_px", [0.0, 0.7, 3.0])
def test_noisy_masks_give_valid_polygons_covering_the_mask(simplify_px):
    rng = np.random.default_rng(7)
    mask = rng.random((120, 140)) > 0.55
    valid = rng.random((120, 140)) > 0.1
    polygons = mask_to_polygons(mask, transform=T, valid=valid, simplify_px=simplify_px)
    assert all(p.is_valid and not p.is_empty and p.exterior.is_ccw for p in polygons)
    if simplify_px == 0:
        assert sum(p.area for p in polygons) == pytest.approx((mask & valid).sum() * 0.25)
