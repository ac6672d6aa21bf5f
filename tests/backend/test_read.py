import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from think2seg.errors import BoundsError, MissingCRSError, RasterError
from think2seg.geo.arrays import tile_from_array
from think2seg.geo.bands import choose_bands, stretch_limits, stretch_to_uint8
from think2seg.geo.read import RasterSource, read_tile

from rasters import UTM_TRANSFORM, scene, write_raster


def test_whole_raster_keeps_transform_and_crs(tmp_path):
    path = write_raster(tmp_path / "a.tif", scene(40, 60))
    tile = read_tile(path)
    assert (tile.height, tile.width) == (40, 60)
    assert tile.transform == UTM_TRANSFORM
    assert tile.crs.to_epsg() == 32633
    assert np.array_equal(tile.pixels, np.moveaxis(scene(40, 60), 0, -1))
    assert tile.valid.all() and not tile.is_decimated and tile.notes == ()


def test_the_source_is_recorded_as_an_absolute_path(tmp_path, monkeypatch):
    write_raster(tmp_path / "a.tif", scene(8, 8))
    monkeypatch.chdir(tmp_path)
    assert read_tile("a.tif").source == str(tmp_path / "a.tif")


def test_bounds_snap_outward_to_whole_pixels(tmp_path):
    path = write_raster(tmp_path / "a.tif", scene(100, 100))
    x0, y0 = UTM_TRANSFORM @ (10.3, 20.7)  # inside pixel (10, 20)
    x1, y1 = UTM_TRANSFORM @ (30.2, 45.1)
    tile = read_tile(path, bounds=(x0, y1, x1, y0))
    assert (tile.window.col_off, tile.window.row_off) == (10, 20)
    assert (tile.width, tile.height) == (21, 26)
    assert tile.transform == UTM_TRANSFORM @ Affine.translation(10, 20)
    assert np.array_equal(tile.pixels, np.moveaxis(scene(100, 100), 0, -1)[20:46, 10:31])


def test_exact_pixel_bounds_read_exactly_those_pixels(tmp_path):
    path = write_raster(tmp_path / "a.tif", scene(100, 100))
    left, top = UTM_TRANSFORM @ (10, 20)
    right, bottom = UTM_TRANSFORM @ (50, 60)
    tile = read_tile(path, bounds=(left, bottom, right, top))
    assert (tile.window.col_off, tile.window.row_off, tile.width, tile.height) == (10, 20, 40, 40)


def test_bounds_partly_outside_are_clipped_with_a_note(tmp_path):
    path = write_raster(tmp_path / "a.tif", scene(50, 50))
    left, top = UTM_TRANSFORM @ (-10, -10)
    right, bottom = UTM_TRANSFORM @ (20, 20)
    tile = read_tile(path, bounds=(left, bottom, right, top))
    assert (tile.width, tile.height) == (20, 20)
    assert "clipped" in tile.notes[0]


def test_bounds_outside_raster_refused_with_extent(tmp_path):
    path = write_raster(tmp_path / "a.tif", scene(50, 50))
    with pytest.raises(BoundsError, match="outside .*extent"):
        read_tile(path, bounds=(0, 0, 10, 10))


@pytest.mark.parametrize("bounds", [(1, 2, 3), (5, 0, 1, 10), (0, 5, 10, 1), (0, 0, float("nan"), 1)])
def test_malformed_bounds_refused(tmp_path, bounds):
    path = write_raster(tmp_path / "a.tif", scene(10, 10))
    with pytest.raises(BoundsError):
        read_tile(path, bounds=bounds)


def test_large_window_read_decimated_with_scaled_transform(tmp_path):
    path = write_raster(tmp_path / "a.tif", scene(300, 600))
    tile = read_tile(path, max_side_px=200)
    assert (tile.width, tile.height) == (200, 100)
    assert tile.scale_xy == (3.0, 3.0)
    assert tile.transform == UTM_TRANSFORM @ Affine.scale(3.0)
    assert tile.bounds == read_tile(path).bounds
    assert "decimated" in tile.notes[0]


def test_no_crs_refused_unless_pixel_coordinates(tmp_path):
    path = write_raster(tmp_path / "a.tif", scene(20, 30), crs=None, transform=Affine.identity())
    with pytest.raises(MissingCRSError, match="--pixel-coords"):
        read_tile(path)
    tile = read_tile(path, pixel_coords=True, bounds=(5, 2, 15, 12))
    assert tile.crs is None
    assert tile.transform == Affine.translation(5, 2)
    assert (tile.width, tile.height) == (10, 10)


def test_crs_without_geotransform_and_gcp_only_rasters_refused(tmp_path):
    path = write_raster(tmp_path / "a.tif", scene(20, 30), transform=Affine.identity())
    with pytest.raises(MissingCRSError, match="no geotransform"):
        read_tile(path)
    gcps = [GroundControlPoint(row, col, 512000 + col, 5262000 - row) for row, col in ((0, 0), (0, 30), (20, 0))]
    path = write_raster(tmp_path / "g.tif", scene(20, 30), crs=None, transform=Affine.identity())
    with rasterio.open(path, "r+") as dst:
        dst.gcps = (gcps, CRS.from_epsg(32633))
    with pytest.raises(MissingCRSError, match="gdalwarp"):
        read_tile(path)
    assert read_tile(path, pixel_coords=True).crs is None


def test_nodata_excluded_from_mask_and_zeroed(tmp_path):
    data = scene(20, 20)
    data[:, :5, :] = 0
    path = write_raster(tmp_path / "a.tif", data, nodata=0)
    tile = read_tile(path)
    assert not tile.valid[:5].any() and tile.valid[5:].all()
    assert (tile.pixels[:5] == 0).all()


def test_all_nodata_window_has_no_data(tmp_path):
    path = write_raster(tmp_path / "a.tif", np.zeros((3, 10, 10), np.uint8), nodata=0)
    assert not read_tile(path).has_data


def test_alpha_band_masks_pixels(tmp_path):
    rgba = np.concatenate([scene(10, 10), np.full((1, 10, 10), 255, np.uint8)])
    rgba[3, :, :3] = 0
    path = write_raster(tmp_path / "a.tif", rgba, photometric="RGB", alpha="YES")
    tile = read_tile(path)
    assert not tile.valid[:, :3].any() and tile.valid[:, 3:].all()


def test_16bit_four_band_uses_first_three_and_stretches_valid_pixels_only(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(1000, 5000, (4, 32, 32)).astype(np.uint16)
    data[:, 0, :] = 0  # nodata row with extreme values must not move the stretch
    path = write_raster(tmp_path / "a.tif", data, nodata=0)
    tile = read_tile(path)
    assert tile.pixels.dtype == np.uint8
    valid = data[0] > 0
    for band in range(3):
        low, high = np.percentile(data[band][valid], [2, 98])
        expected = np.rint(np.clip((data[band].astype(float) - low) * 255 / (high - low), 0, 255))
        assert np.array_equal(tile.pixels[..., band][valid], expected[valid].astype(np.uint8))
    assert (tile.pixels[0] == 0).all()


def test_single_band_float_with_nan_replicated_and_nan_invalid(tmp_path):
    data = np.linspace(0, 1, 400, dtype=np.float32).reshape(1, 20, 20)
    data[0, 3, 4] = np.nan
    path = write_raster(tmp_path / "a.tif", data)
    tile = read_tile(path)
    assert not tile.valid[3, 4] and tile.valid.sum() == 399
    assert np.array_equal(tile.pixels[..., 0], tile.pixels[..., 2])


def test_rgb_chosen_by_colour_interpretation():
    interp = (ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.alpha)
    choice = choose_bands(interp)
    assert choice.rgb == (3, 2, 1) and choice.alpha == 4
    assert choose_bands((ColorInterp.gray,)).rgb == (1, 1, 1)
    assert choose_bands((ColorInterp.gray, ColorInterp.undefined, ColorInterp.undefined)).rgb == (1, 2, 3)


def test_palette_raster_expanded_through_colour_table(tmp_path):
    data = np.array([[[0, 1], [1, 0]]], dtype=np.uint8)
    path = write_raster(tmp_path / "p.tif", data, photometric="palette")
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, {0: (10, 20, 30, 255), 1: (200, 100, 50, 255)})
    tile = read_tile(path)
    assert tile.pixels[0, 1].tolist() == [200, 100, 50] and tile.pixels[0, 0].tolist() == [10, 20, 30]


def test_constant_band_stretches_to_zero():
    band = np.full((4, 4), 7, dtype=np.uint16)
    limits = stretch_limits({1: band}, np.ones((4, 4), bool))
    assert limits == {1: (7.0, 7.0)}
    assert (stretch_to_uint8(band, limits[1]) == 0).all()


def test_shared_limits_make_tiles_consistent(tmp_path):
    data = np.tile(np.arange(64, dtype=np.uint16) * 100, (1, 64, 1))  # brighter to the east
    path = write_raster(tmp_path / "a.tif", data)
    with RasterSource(path) as source:
        limits = source.stretch_limits(source.full_window)
        left = source.read(Window(0, 0, 32, 64), limits=limits)
        right = source.read(Window(32, 0, 32, 64), limits=limits)
        whole = source.read(source.full_window, limits=limits)
    assert np.array_equal(np.concatenate([left.pixels, right.pixels], axis=1), whole.pixels)
    assert left.pixels.max() < 200 and right.pixels.min() > 40  # one stretch, not one per tile


@pytest.mark.parametrize("size", [1, 20])
def test_tiny_rasters_read(tmp_path, size):
    path = write_raster(tmp_path / "a.tif", scene(size, size))
    tile = read_tile(path)
    assert (tile.width, tile.height) == (size, size)


def test_missing_corrupt_and_non_raster_files_refused(tmp_path):
    with pytest.raises(RasterError, match="does not exist"):
        read_tile(tmp_path / "missing.tif")
    corrupt = write_raster(tmp_path / "c.tif", scene(64, 64))
    corrupt.write_bytes(corrupt.read_bytes()[:300])
    with pytest.raises(RasterError):
        read_tile(corrupt)
    text = tmp_path / "notes.txt"
    text.write_text("not a raster")
    with pytest.raises(RasterError, match="not a raster"):
        read_tile(text)
    with pytest.raises(RasterError, match="folder"):
        read_tile(tmp_path)


def test_array_tile_channels_last_with_nodata_and_alpha():
    rgba = np.moveaxis(np.concatenate([scene(8, 8), np.full((1, 8, 8), 255, np.uint8)]), 0, -1).copy()
    rgba[0, 0, 3] = 0
    tile = tile_from_array(rgba, transform=UTM_TRANSFORM, crs="EPSG:32633")
    assert not tile.valid[0, 0] and tile.valid.sum() == 63
    grey = np.arange(64, dtype=np.float64).reshape(8, 8)
    tile = tile_from_array(grey, transform=UTM_TRANSFORM, crs=32633, nodata=0)
    assert not tile.valid[0, 0] and tile.crs.to_epsg() == 32633
    with pytest.raises(MissingCRSError):
        tile_from_array(grey, transform=UTM_TRANSFORM, crs=None)
