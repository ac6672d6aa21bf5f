"""XYZ / WMS / WMTS layers are fetched at a stated ground resolution, not the screen's, and their
attribution is kept on the results derived from them.

The web layer is an XYZ layer over a local folder of PNG tiles (``file://``, no network): 4 x 3 tiles of
zoom 18 near 48° N, 11° E in EPSG:3857, each of one known colour, so a test can tell where every tile
landed in the uploaded image.
"""

from __future__ import annotations

import itertools
import math

import pytest
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsRasterBlock,
    QgsRasterDataProvider,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
)
from qgis.PyQt.QtGui import QColor, QImage

from think2seg_qgis.attribution import CREDITS_KEY, credits, source_credit
from think2seg_qgis.errors import TileError
from think2seg_qgis.settings import WEB_RESOLUTION_DEFAULT_M, Settings
from think2seg_qgis.tile import RENDER, plan_tile, render_grid, render_plan, service_name
from think2seg_qgis.upload import TileRender

from qgis_helpers import wait_until

WGS84_A, WGS84_E2 = 6378137.0, 6.69437999014e-3  # semi-major axis (m), first eccentricity squared
ZOOM, TILE_PX = 18, 256
TILE_M = 2 * math.pi * WGS84_A / 2**ZOOM  # a zoom-18 tile's side in EPSG:3857 metres (about 152.9)
LATITUDE, LONGITUDE = math.radians(48.0), 11.0
FIRST_X = math.floor((LONGITUDE + 180) / 360 * 2**ZOOM)  # the folder's top-left tile (x, y), near 48° N, 11° E
FIRST_Y = math.floor((1 - math.asinh(math.tan(LATITUDE)) / math.pi) / 2 * 2**ZOOM)
COLUMNS, ROWS = 4, 3
INSIDE = (0.03, 0.5, 0.97)  # where the tiles' colours are checked, as fractions of a tile from its top-left
CREDIT = "© Test Tiles contributors"
RIGHTS = "CC BY 4.0, test tiles"


def tile_colour(column: int, row: int) -> QColor:
    return QColor(40 + 50 * column, 60 + 60 * row, 200)


def tile_extent(column: int, row: int) -> QgsRectangle:
    """The EPSG:3857 extent of the folder's tile (column, row), counted from its top-left tile."""
    x0 = -math.pi * WGS84_A + (FIRST_X + column) * TILE_M
    y1 = math.pi * WGS84_A - (FIRST_Y + row) * TILE_M
    return QgsRectangle(x0, y1 - TILE_M, x0 + TILE_M, y1)


def folder_extent() -> QgsRectangle:
    extent = tile_extent(0, 0)
    extent.combineExtentWith(tile_extent(COLUMNS - 1, ROWS - 1))
    return extent


@pytest.fixture(autouse=True)
def clean_settings():
    """The plugin's settings as new before each test, and afterwards."""
    QgsSettings().remove("think2seg")
    yield
    QgsSettings().remove("think2seg")


@pytest.fixture
def xyz(project, tmp_path, qgis_iface) -> QgsRasterLayer:
    """An XYZ layer over a local tile folder, in view on a canvas in EPSG:3857 (the middle of the folder)."""
    for column in range(COLUMNS):
        for row in range(ROWS):
            folder = tmp_path / "tiles" / str(ZOOM) / str(FIRST_X + column)
            folder.mkdir(parents=True, exist_ok=True)
            image = QImage(TILE_PX, TILE_PX, QImage.Format.Format_RGB32)
            image.fill(tile_colour(column, row))
            assert image.save(str(folder / f"{FIRST_Y + row}.png"))
    url = f"file://{tmp_path}/tiles/{{z}}/{{x}}/{{y}}.png"
    layer = QgsRasterLayer(f"type=xyz&url={url}&zmin={ZOOM}&zmax={ZOOM}", "test tiles", "wms")
    assert layer.isValid()
    project.addMapLayer(layer)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    inner = folder_extent()
    inner.scale(0.6)
    canvas.setExtent(inner)
    return layer


def radii(latitude: float) -> tuple[float, float]:
    """WGS 84's radii of curvature at ``latitude`` (radians): prime vertical N (a parallel's radius is
    N·cos φ) and meridian M, in metres."""
    sin2 = math.sin(latitude) ** 2
    return WGS84_A / math.sqrt(1 - WGS84_E2 * sin2), WGS84_A * (1 - WGS84_E2) / (1 - WGS84_E2 * sin2) ** 1.5


def ground_size_m(extent: QgsRectangle) -> tuple[float, float]:
    """An EPSG:3857 extent's width and height on the WGS 84 ellipsoid at its centre, computed here from
    the textbook radii (not by QGIS)."""
    latitude = 2 * math.atan(math.exp(extent.center().y() / WGS84_A)) - math.pi / 2  # spherical Mercator
    n, m = radii(latitude)
    scale = math.cos(latitude) / WGS84_A  # ground radians per EPSG:3857 metre, both ways (conformal)
    return extent.width() * scale * n, extent.height() * scale * m


def assert_size_follows_resolution(plan, resolution_m: float) -> None:
    """Square EPSG:3857 pixels of ``resolution_m`` squared on the ground: each side within 0.34 % of it
    (spherical Mercator on the WGS 84 ellipsoid is not quite conformal: its two scales differ by
    e²·cos²φ / (1 - e²), 0.30 % here), and the pixel count right for the area."""
    width_m, height_m = ground_size_m(plan.bounds)
    width, height = plan.grid.width, plan.grid.height
    assert width == pytest.approx(width_m / resolution_m, rel=0.0017, abs=1.0)
    assert height == pytest.approx(height_m / resolution_m, rel=0.0017, abs=1.0)
    assert width * height == pytest.approx(width_m * height_m / resolution_m**2, rel=1e-4, abs=width + height)


def test_the_size_follows_the_ground_resolution_not_the_canvas(xyz, qgis_iface):
    canvas, settings = qgis_iface.mapCanvas(), Settings()
    assert settings.web_resolution_m == WEB_RESOLUTION_DEFAULT_M == 0.5
    visible = canvas.extent()
    plan = plan_tile(canvas, xyz, settings)
    assert plan.mode == RENDER and plan.crs.authid() == "EPSG:3857"
    assert_size_follows_resolution(plan, 0.5)
    assert plan.note == "fetched at 0.50 m/px from the XYZ service"
    # the grid covers the view, grown by less than a pixel, in square EPSG:3857 pixels
    size_x, size_y = plan.grid.pixel_size
    assert size_x == pytest.approx(size_y, rel=1e-12)
    assert plan.bounds.contains(visible) and plan.bounds == plan.grid.extent
    assert plan.bounds.width() - visible.width() < size_x and plan.bounds.height() - visible.height() < size_y
    assert (plan.grid.width * size_x, plan.grid.height * size_y) == pytest.approx(
        (plan.bounds.width(), plan.bounds.height()), rel=1e-9
    )

    canvas.zoomByFactor(0.5)  # zoomed in: half the ground in view, so half the pixels at the same resolution
    zoomed = plan_tile(canvas, xyz, settings)
    assert_size_follows_resolution(zoomed, 0.5)
    assert zoomed.grid.width == pytest.approx(plan.grid.width / 2, abs=1.0)
    assert zoomed.grid.pixel_size == pytest.approx(plan.grid.pixel_size, rel=1e-6)

    settings.web_resolution_m = 1.25
    coarse = plan_tile(canvas, xyz, settings)
    assert_size_follows_resolution(coarse, 1.25)
    assert coarse.note == "fetched at 1.25 m/px from the XYZ service"


def test_a_view_too_large_at_that_resolution_is_refused_with_what_to_do(xyz, qgis_iface):
    canvas, settings = qgis_iface.mapCanvas(), Settings()
    settings.web_resolution_m = 1.0
    fits = plan_tile(canvas, xyz, settings).grid
    settings.max_side_px = max(fits.width, fits.height) + 10
    settings.web_resolution_m = 0.5  # twice as many pixels each way: too many
    with pytest.raises(TileError) as refused:
        plan_tile(canvas, xyz, settings)
    message = str(refused.value)
    assert "test tiles" in message and "0.50 m per pixel" in message and f"{settings.max_side_px} px" in message
    for advice in ("zoom in", "coarser web layer resolution in Settings", "batch job"):
        assert advice in message
    canvas.zoomByFactor(0.5)  # zoomed in: fits again
    assert plan_tile(canvas, xyz, settings).grid.width <= settings.max_side_px


def test_a_geographic_crs_gets_pixels_square_on_the_ground():
    crs = QgsCoordinateReferenceSystem("EPSG:4326")
    bounds = QgsRectangle(10.0, 59.99, 10.02, 60.01)  # 0.02° x 0.02° at 60° N
    grid = render_grid(bounds, crs, 2.0)
    n, m = radii(math.radians(60.0))
    per_degree_lon, per_degree_lat = math.radians(n * math.cos(math.radians(60.0))), math.radians(m)
    assert grid.width == pytest.approx(0.02 * per_degree_lon / 2.0, abs=1.0)  # 558.00002 px: 558
    assert grid.height == pytest.approx(0.02 * per_degree_lat / 2.0, abs=1.0)
    assert grid.width >= 0.02 * per_degree_lon / 2.0 - 1e-3 and grid.height >= 0.02 * per_degree_lat / 2.0 - 1e-3
    size_x, size_y = grid.pixel_size  # 2 m across and 2 m down: twice as many degrees across at 60° N
    assert size_x * per_degree_lon == pytest.approx(2.0, rel=1e-3)
    assert size_y * per_degree_lat == pytest.approx(2.0, rel=1e-3)
    render_width, render_height = grid.render_size()  # QGIS draws square degrees: finer across, then scaled
    assert render_height == grid.height and render_width == pytest.approx(grid.width * size_x / size_y, abs=1.0)
    assert grid.transform == [size_x, 0.0, grid.extent.xMinimum(), 0.0, -size_y, grid.extent.yMaximum()]


def test_a_geographic_layer_is_rendered_and_scaled_to_its_grid(project, tmp_path):
    """A layer without pixels of its own in EPSG:4326 (a virtual raster: dark west half, bright east half)
    is rendered square in degrees, then scaled to pixels square on the ground: the edge stays in place."""
    crs, extent = QgsCoordinateReferenceSystem("EPSG:4326"), QgsRectangle(10.0, 59.99, 10.02, 60.01)
    source = tmp_path / "halves.tif"
    provider = QgsRasterFileWriter(str(source)).createOneBandRaster(Qgis.DataType.Byte, 100, 100, extent, crs)
    block = QgsRasterBlock(Qgis.DataType.Byte, 100, 100)
    block.setData(bytes(([0] * 50 + [200] * 50) * 100))  # the edge at 10.01° E
    assert provider.writeBlock(block, 1, 0, 0)
    del provider  # written and closed
    parameters = QgsRasterDataProvider.VirtualRasterParameters()
    parameters.crs, parameters.extent, parameters.width, parameters.height = crs, extent, 100, 100
    parameters.formula = '"halves@1"'
    halves = QgsRasterDataProvider.VirtualRasterInputLayers()
    halves.name, halves.uri, halves.provider = "halves", str(source), "gdal"
    parameters.rInputLayers = [halves]
    uri = QgsRasterDataProvider.encodeVirtualRasterProviderUri(parameters)
    layer = QgsRasterLayer(uri, "virtual halves", "virtualraster")
    assert layer.isValid() and layer.providerType() != "gdal"
    project.addMapLayer(layer)
    settings = Settings()
    settings.web_resolution_m = 2.0
    plan = render_plan(layer, extent, settings)
    assert plan.note == "fetched at 2.00 m/px from the virtualraster layer"
    grid = plan.grid
    assert grid.render_size()[0] > 1.9 * grid.width  # drawn twice as fine across at 60° N, then scaled
    got: list[tuple[bytes, dict]] = []
    errors: list[str] = []
    render = TileRender(plan, lambda data, meta: got.append((data, meta)), errors.append)
    render.start()
    assert wait_until(lambda: got or errors, 20) and not errors
    data, meta = got[0]
    assert meta == {"transform": pytest.approx(grid.transform), "crs": "EPSG:4326"}
    image = QImage.fromData(data, "PNG")
    assert (image.width(), image.height()) == (grid.width, grid.height)
    row = image.height() // 2
    brightness = [QColor(image.pixel(x, row)).red() for x in range(image.width())]
    edge = next(x for x, value in enumerate(brightness) if value > 100)
    assert edge == pytest.approx((10.01 - grid.extent.xMinimum()) / grid.pixel_size[0], abs=1.0)
    assert max(brightness[: edge - 2]) < 20 and min(brightness[edge + 2 :]) > 180


def test_the_upload_is_the_rendered_tiles_with_the_extent_as_georeference(plugin, fake_backend, xyz, qgis_iface):
    plugin.dock.layer_box.setLayer(xyz)
    plugin.dock.question.setEditText("segment the fields")
    plugin.controller.ask()
    assert wait_until(lambda: plugin.dock.run_button.isEnabled() and fake_backend.uploads, 20)
    meta, data = fake_backend.uploads[0]
    plan = plugin.controller.segment.plan
    grid = plan.grid
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and meta["crs"] == "EPSG:3857"
    extent = plan.bounds  # the georeference is the planned extent exactly, at the grid's pixel size
    assert meta["transform"] == pytest.approx(
        [extent.width() / grid.width, 0.0, extent.xMinimum(), 0.0, -extent.height() / grid.height, extent.yMaximum()]
    )
    image = QImage.fromData(data, "PNG")
    assert (image.width(), image.height()) == (grid.width, grid.height)
    size_x, size_y = grid.pixel_size
    seen = 0
    for column, row, fx, fy in itertools.product(range(COLUMNS), range(ROWS), INSIDE, INSIDE):
        tile = tile_extent(column, row)  # a point 3 % of a tile (about 3 px) in from its edges, or its middle
        x_3857, y_3857 = tile.xMinimum() + fx * tile.width(), tile.yMaximum() - fy * tile.height()
        x, y = (x_3857 - extent.xMinimum()) / size_x, (extent.yMaximum() - y_3857) / size_y
        if 0 <= x < image.width() and 0 <= y < image.height():
            got = QColor(image.pixel(int(x), int(y)))
            assert got.getRgb() == tile_colour(column, row).getRgb(), (column, row, fx, fy)
            seen += 1
    assert seen >= 4 * len(INSIDE) ** 2, "the view covers several tiles"


def test_the_attribution_reaches_the_results_layer(plugin, fake_backend, xyz, qgis_iface):
    xyz.setAttribution(CREDIT)
    metadata = xyz.metadata()
    metadata.setRights([RIGHTS])
    xyz.setMetadata(metadata)
    assert source_credit(xyz) == f"{CREDIT}; {RIGHTS}"
    plugin.dock.layer_box.setLayer(xyz)
    plugin.dock.question.setEditText("segment the fields")
    plugin.controller.ask()
    assert wait_until(lambda: plugin.dock.run_button.isEnabled() and plugin.store.results_layers(), 20)
    (results,) = plugin.store.results_layers()
    assert results.featureCount() > 0
    assert results.attribution() == f"{CREDIT}; {RIGHTS}"
    assert credits(results) == {"test tiles": f"{CREDIT}; {RIGHTS}"}
    assert CREDIT in results.customProperty(CREDITS_KEY)
    assert results.metadata().rights() == [f"{CREDIT}; {RIGHTS}"]
    assert f"test tiles: {CREDIT}; {RIGHTS}" in results.metadata().abstract()


def test_a_source_without_attribution_adds_none(plugin, fake_backend, xyz):
    plugin.dock.layer_box.setLayer(xyz)
    plugin.dock.question.setEditText("segment the fields")
    plugin.controller.ask()
    assert wait_until(lambda: plugin.dock.run_button.isEnabled() and plugin.store.results_layers(), 20)
    (results,) = plugin.store.results_layers()
    assert results.featureCount() > 0 and results.attribution() == "" and credits(results) == {}


def test_a_render_stopped_before_it_ends_reports_nothing(xyz, qgis_iface):
    plan = plan_tile(qgis_iface.mapCanvas(), xyz, Settings())
    got: list[object] = []
    render = TileRender(plan, lambda data, meta: got.append(data), got.append)
    render.start()
    render.stop()
    assert not wait_until(lambda: got, 2)
    finished = TileRender(plan, lambda data, meta: got.append(meta), got.append)  # and a second one ends
    finished.start()
    assert wait_until(lambda: got, 20) and got[0]["crs"] == "EPSG:3857"


def test_an_area_the_service_has_no_tiles_for_is_an_error_not_a_blank_upload(xyz, qgis_iface, project):
    canvas = qgis_iface.mapCanvas()
    far = folder_extent()
    far.grow(2000)  # beyond the folder: no tile there
    canvas.setExtent(QgsRectangle(far.xMaximum() - 300, far.yMaximum() - 200, far.xMaximum(), far.yMaximum()))
    plan = plan_tile(canvas, xyz, Settings())
    errors: list[str] = []
    render = TileRender(plan, lambda data, meta: errors.append("uploaded"), errors.append)
    render.start()
    assert wait_until(lambda: errors, 20)
    assert errors[0].startswith("QGIS rendered nothing for this area from the XYZ service")


def test_web_service_names(project):
    wms = QgsRasterLayer(
        "contextualWMSLegend=0&crs=EPSG:4326&format=image/png&layers=a&styles=&url=http://x", "w", "wms"
    )
    wmts = QgsRasterLayer(
        "crs=EPSG:3857&format=image/png&layers=a&styles=default&tileMatrixSet=g&url=http://x/WMTSCapabilities.xml",
        "t",
        "wms",
    )
    xyz = QgsRasterLayer("type=xyz&url=file:///nowhere/{z}/{x}/{y}.png", "x", "wms")
    assert [service_name(layer) for layer in (xyz, wms, wmts)] == ["XYZ service", "WMS service", "WMTS service"]


def test_the_settings_dialog_saves_the_web_resolution(project):
    from think2seg_qgis.dialogs import SettingsDialog

    settings = Settings()
    dialog = SettingsDialog(settings)
    assert dialog.web_resolution.value() == 0.5 and "XYZ" in dialog.web_resolution.toolTip()
    dialog.web_resolution.setValue(0.3)
    dialog.accept()
    assert Settings().web_resolution_m == pytest.approx(0.3)
    with pytest.raises(ValueError, match="0.01 to 1000"):
        settings.web_resolution_m = 0.0
    QgsSettings().setValue("think2seg/web_resolution_m", "1e9")  # edited by hand: brought inside the limits
    assert Settings().web_resolution_m == 1000.0
