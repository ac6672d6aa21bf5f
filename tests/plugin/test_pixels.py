"""Issue 11, item 1: a loaded raster is segmented at its own pixel grid whatever folder it is in.

A raster the backend may not read is read here at its own grid and uploaded as a GeoTIFF (not a
screen render); the result line says at which resolution every answer was made; a backend started
from QGIS may use any folder; Windows options keep their paths whole."""

from __future__ import annotations

import shutil

from qgis.core import Qgis, QgsRasterLayer, QgsRectangle

from think2seg_qgis.backend import split_arguments
from think2seg_qgis.controller import resolution_note
from think2seg_qgis.tile import PIXELS, REFERENCE, RENDER, pixel_window, plan_tile

from qgis_helpers import ROOT, wait_until

SAMPLE = ROOT / "resources" / "sample" / "riverside.tif"
VIEW = QgsRectangle(512100.2, 5261700.3, 512300.1, 5261900.4)  # not on the 0.5 m grid on purpose


def test_a_raster_the_backend_may_not_read_is_uploaded_at_its_own_pixel_grid(
    plugin, fake_backend, raster, qgis_iface, tmp_path
):
    fake_backend.refuse_paths = True  # e.g. a raster outside the backend's --data-root folders
    qgis_iface.mapCanvas().setExtent(VIEW)
    plugin.dock.layer_box.setLayer(raster)
    plugin.dock.question.setEditText("segment the river")
    plugin.controller.ask()
    assert wait_until(lambda: plugin.dock.run_button.isEnabled() and fake_backend.uploads, 20)
    meta, data = fake_backend.uploads[0]
    assert data[:4] == b"II*\x00", "the raster's own pixels are uploaded as a GeoTIFF, not a rendered PNG"
    assert "transform" not in meta and "crs" not in meta  # a GeoTIFF carries its own georeference
    uploaded = tmp_path / "uploaded.tif"
    uploaded.write_bytes(data)
    tile = QgsRasterLayer(str(uploaded), "uploaded")
    plan = plugin.controller.segment.plan
    window = plan.window
    assert plan.mode == PIXELS and "may not read this folder" in plan.note
    assert (tile.width(), tile.height()) == (window.width, window.height)
    assert tile.rasterUnitsPerPixelX() == raster.rasterUnitsPerPixelX() == 0.5
    assert tile.extent() == window.extent and tile.crs() == raster.crs()
    for edge in (tile.extent().xMinimum() - 512000, 5262000 - tile.extent().yMaximum()):
        assert edge / 0.5 == round(edge / 0.5)  # on the raster's own pixel corners
    assert window.extent.contains(plan.bounds)  # snapped outward: the whole visible part is read
    source = QgsRasterLayer(str(SAMPLE), "source")
    for band in (1, 2, 3):  # the very pixels of the raster, not a resampled picture of them
        expected = source.dataProvider().block(band, window.extent, window.width, window.height)
        got = tile.dataProvider().block(band, window.extent, window.width, window.height)
        assert bytes(got.data()) == bytes(expected.data())
    assert plan.note in plugin.dock.result.text()


def test_plans_by_reference_pixels_or_render(qgis_iface, project, tmp_path):
    from think2seg_qgis.settings import Settings

    canvas = qgis_iface.mapCanvas()
    layer = QgsRasterLayer(str(shutil.copy(SAMPLE, tmp_path / "riverside.tif")), "riverside")
    project.addMapLayer(layer)
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(VIEW)
    settings = Settings()
    assert plan_tile(canvas, layer, settings).mode == REFERENCE
    settings.backend_url = "http://gpu-box:8765"  # a remote backend cannot read this machine's files
    plan = plan_tile(canvas, layer, settings)
    assert plan.mode == PIXELS and plan.window == pixel_window(layer, plan.bounds)
    settings.backend_url = "http://127.0.0.1:8765"
    xyz = QgsRasterLayer(f"type=xyz&url=file://{tmp_path}/{{z}}/{{x}}/{{y}}.png&zmax=19&crs=EPSG:32633", "xyz", "wms")
    assert xyz.isValid()  # a layer without pixels of its own is rendered, and the result line says so
    plan = plan_tile(canvas, xyz, settings)
    assert plan.mode == RENDER
    reply = {"window": {"transform": [0.7, 0.0, 512100.0, 0.0, -0.7, 5261900.0]}}
    assert resolution_note(plan, reply) == "fetched at 0.50 m/px from the XYZ service"


def test_pixel_windows_snap_outward_to_whole_pixels_and_stay_inside_the_raster(project, tmp_path):
    layer = QgsRasterLayer(str(shutil.copy(SAMPLE, tmp_path / "riverside.tif")), "riverside")
    window = pixel_window(layer, QgsRectangle(511990, 5261700.3, 512100.2, 5262010))
    assert (window.col_off, window.row_off, window.width) == (0, 0, 201)  # 100.2 m → 201 columns, clipped at 0
    assert window.extent == QgsRectangle(512000, 5261700, 512100.5, 5262000)
    big = window.__class__(0, 0, 10000, 5000, window.extent, (0.5, 0.5))
    assert big.output_size() == (4096, 2048)  # larger views are read at most 4096 px a side


def test_a_backend_started_from_qgis_may_use_any_folder_unless_told_otherwise(plugin):
    plugin.settings.backend_arguments = '--lvlm "/models/my model" --device cpu'
    arguments = plugin.backend.serve_arguments()
    assert "--any-path" in arguments and arguments[-4:] == ["--lvlm", "/models/my model", "--device", "cpu"]
    plugin.settings.backend_arguments = "--data-root /data"
    assert "--any-path" not in plugin.backend.serve_arguments()


def test_windows_options_keep_quoted_paths_whole():
    text = '--lvlm "C:\\My Models\\t2s-3b" --device cuda:1 --data-root D:\\rasters'
    assert split_arguments(text, windows=True) == [
        "--lvlm",
        "C:\\My Models\\t2s-3b",
        "--device",
        "cuda:1",
        "--data-root",
        "D:\\rasters",
    ]
    assert split_arguments('--lvlm "/a b/c"', windows=False) == ["--lvlm", "/a b/c"]
    try:
        split_arguments('--lvlm "C:\\x', windows=True)
        raise AssertionError("an unclosed quote must be refused")
    except ValueError as exc:
        assert "not closed" in str(exc)


def test_uploads_keep_what_the_backend_reads_from_the_bands(project, tmp_path):
    from qgis.core import QgsRasterBlock, QgsRasterFileWriter

    from think2seg_qgis import compat
    from think2seg_qgis.upload import _creation_options

    red, green, blue, alpha = compat.RED_BAND, compat.GREEN_BAND, compat.BLUE_BAND, compat.ALPHA_BAND
    assert _creation_options([red, green, blue, alpha]) == ["PHOTOMETRIC=RGB", "ALPHA=YES"]
    assert _creation_options([red, green, blue]) == ["PHOTOMETRIC=RGB"]
    assert _creation_options([compat.PALETTE_BAND]) == [] and _creation_options([1, 1, 1, 1]) == []

    path = tmp_path / "rgba16.tif"  # 16-bit RGBA with a nodata value: read through as it is
    writer = QgsRasterFileWriter(str(path))
    writer.setCreateOptions(["PHOTOMETRIC=RGB", "ALPHA=YES"])
    extent = QgsRectangle(512000, 5261900, 512050, 5262000)
    crs = QgsRasterLayer(str(SAMPLE), "s").crs()
    provider = writer.createMultiBandRaster(Qgis.DataType.UInt16, 50, 100, extent, crs, 4)
    for band in range(1, 5):
        block = QgsRasterBlock(Qgis.DataType.UInt16, 50, 100)
        block.setData(bytes([7, 1]) * 5000)
        provider.writeBlock(block, band, 0, 0)
        provider.setNoDataValue(band, 0)
    del provider
    layer = QgsRasterLayer(str(path), "rgba16")
    project.addMapLayer(layer)
    plan = plan_tile_for(layer)
    done: list = []
    from think2seg_qgis.upload import PixelRead

    read = PixelRead(plan, lambda data, meta: done.append(data), done.append)
    read.start()
    assert wait_until(lambda: done, 20)
    uploaded = tmp_path / "up.tif"
    uploaded.write_bytes(done[0])
    up = QgsRasterLayer(str(uploaded), "up")
    got = up.dataProvider()
    assert [got.colorInterpretation(b) for b in range(1, 5)] == [red, green, blue, alpha]
    assert got.dataType(1) == Qgis.DataType.UInt16 and got.sourceNoDataValue(1) == 0


def plan_tile_for(layer: QgsRasterLayer):
    from think2seg_qgis.tile import TilePlan

    return TilePlan(layer, layer.extent(), layer.crs(), PIXELS, window=pixel_window(layer, layer.extent()))
