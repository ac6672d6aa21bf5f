"""Rasters that are not local files: a COG over HTTP, an XYZ service, STAC items, unreachable URLs
(also as the HTTP server answers them).

Everything is served by a small HTTP server on 127.0.0.1 that answers Range requests (GDAL's
/vsicurl/ needs them); nothing goes to the internet.
"""

from __future__ import annotations

import http.server
import json
import math
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from fastapi.testclient import TestClient
from PIL import Image
from rasterio.windows import Window

from think2seg.batch.inputs import check_rasters, expand_rasters
from think2seg.cli import main
from think2seg.engine import Engine
from think2seg.errors import InputError, RasterError, RasterNotFoundError, RasterUnreachableError
from think2seg.geo.read import RasterSource, read_tile
from think2seg.geo.remote import is_remote, locate, read_grid
from think2seg.server.app import create_app
from think2seg.server.errors import to_api_error
from think2seg.server.settings import ServerSettings
from think2seg.testing.tiny_lvlm import question_for

from conftest import BoxSegmenter, FixedPrompter, tiny_model_flags
from rasters import UTM_TRANSFORM, scene, write_raster

WORLD_M = 20037508.342789244  # half the side of the web-mercator world square
ZOOM = 12
TILES_XY = (2161, 1465)  # the top-left tile of the 2x2 served ones, near lon 10°, lat 45°
TILE_PX = 256


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves the files of ``server.root`` with HTTP Range support; records the status of every request."""

    server: _Server

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        path = self.server.root / self.path.split("?", 1)[0].lstrip("/")
        if not path.is_file():
            self.server.statuses.append(404)
            self.send_error(404)
            return
        data = path.read_bytes()
        start, end, status = 0, len(data) - 1, 200
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if asked:
            start, status = int(asked.group(1)), 206
            end = min(int(asked.group(2) or end), end)
        self.server.statuses.append(status)
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if body:
            self.wfile.write(data[start : end + 1])

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


class _Server(http.server.ThreadingHTTPServer):
    root: Path
    statuses: list[int]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(folder, base URL) of a Range-capable HTTP server on 127.0.0.1."""
    server = _Server(("127.0.0.1", 0), RangeHandler)
    server.root, server.statuses = tmp_path_factory.mktemp("served"), []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def cog(served) -> tuple[Path, str]:
    """A 3-band COG (UTM, 0.5 m pixels, tiled with overviews) in the served folder: (path, URL)."""
    server, base = served
    path = write_raster(
        server.root / "scene.tif", scene(300, 400, seed=3), driver="COG", blocksize=128, overview_resampling="average"
    )
    return path, f"{base}/scene.tif"


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_same_tile(remote, local) -> None:
    assert np.array_equal(remote.pixels, local.pixels) and np.array_equal(remote.valid, local.valid)
    assert remote.transform == local.transform and remote.crs == local.crs
    assert remote.window == local.window


# --- COG over HTTP ---------------------------------------------------------------------------


def test_cog_url_reads_like_the_local_file_with_range_requests(cog, served):
    path, url = cog
    left, top = UTM_TRANSFORM @ (37, 52)
    right, bottom = UTM_TRANSFORM @ (301, 250)
    bounds = (left, bottom, right, top)
    before = len(served[0].statuses)
    remote = read_tile(url + "?token=a//b", bounds=bounds)
    assert_same_tile(remote, read_tile(path, bounds=bounds))
    assert remote.source == url + "?token=a//b", "the URL must reach GDAL and the tile exactly as given"
    assert 206 in served[0].statuses[before:], "GDAL should have read the COG by HTTP range requests"


def test_vsicurl_path_given_directly(cog):
    path, url = cog
    assert_same_tile(read_tile("/vsicurl/" + url, max_side_px=100), read_tile(path, max_side_px=100))


def test_resolution_m_resamples_a_projected_raster_on_its_origin(cog):
    path, _ = cog
    with RasterSource(path, resolution_m=2.0) as source:
        assert source.transform == UTM_TRANSFORM @ Affine.scale(4, 4)
        assert (source.width, source.height) == (100, 75)
        tile = source.read(Window(10, 5, 30, 20))
    assert tile.transform == UTM_TRANSFORM @ Affine.scale(4, 4) @ Affine.translation(10, 5)
    assert (tile.width, tile.height) == (30, 20)
    full = np.moveaxis(scene(300, 400, seed=3), 0, -1).astype(float)
    blocks = full[20:100, 40:160].reshape(20, 4, 30, 4, 3).mean(axis=(1, 3))
    assert np.abs(tile.pixels - blocks).max() <= 1, "each pixel should be the mean of its 4x4 source pixels"
    assert "read at 2 m per pixel" in tile.notes[0]


def test_native_resolution_m_reads_the_native_grid(cog):
    path, _ = cog
    tile = read_tile(path, resolution_m=0.5, max_side_px=4096)
    assert tile.transform == UTM_TRANSFORM and tile.notes == ()


def test_unreachable_url_fails_quickly_with_our_error(closed_port, monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "3")
    monkeypatch.setenv("GDAL_HTTP_CONNECTTIMEOUT", "2")
    url = f"http://127.0.0.1:{closed_port}/missing/scene.tif"
    started = time.perf_counter()
    with pytest.raises(RasterUnreachableError, match=re.escape(f"cannot reach {url}")) as caught:
        read_tile(url)
    assert time.perf_counter() - started < 10
    assert "check the address" in str(caught.value) and "Traceback" not in str(caught.value)


def test_missing_url_is_not_found(served):
    url = f"{served[1]}/nothing-here.tif"
    with pytest.raises(RasterNotFoundError, match=re.escape(f"404 Not Found for {url}")):
        read_tile(url)


def test_a_url_that_lost_its_slashes_is_refused():
    with pytest.raises(InputError, match="'//' was lost"):
        RasterSource(Path("https://example.com/a.tif"))


# --- XYZ tiles through a GDAL WMS description ------------------------------------------------


def _tile_origin(col: int, row: int) -> tuple[float, float]:
    size = 2 * WORLD_M / 2**ZOOM
    return -WORLD_M + col * size, WORLD_M - row * size


def known_image() -> np.ndarray:
    """(H, W, 3) uint8 of the 2x2 served tiles: waves of 20 px period, steep enough to show a shift."""
    yy, xx = np.mgrid[0 : 2 * TILE_PX, 0 : 2 * TILE_PX].astype(float)
    red = 128 + 100 * np.sin(2 * np.pi * xx / 20)
    green = 128 + 100 * np.sin(2 * np.pi * yy / 20)
    blue = 128 + 60 * np.sin(2 * np.pi * (xx + yy) / 50)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


KNOWN_TRANSFORM = Affine(2 * WORLD_M / 2**ZOOM / TILE_PX, 0, _tile_origin(*TILES_XY)[0], 0, 0, 0)
KNOWN_TRANSFORM = Affine(KNOWN_TRANSFORM.a, 0, KNOWN_TRANSFORM.c, 0, -KNOWN_TRANSFORM.a, _tile_origin(*TILES_XY)[1])


def write_xyz(folder: Path) -> None:
    """The known image cut into z/x/y.png tiles (zoom ZOOM only)."""
    image = known_image()
    for dx in (0, 1):
        for dy in (0, 1):
            tile = folder / str(ZOOM) / str(TILES_XY[0] + dx) / f"{TILES_XY[1] + dy}.png"
            tile.parent.mkdir(parents=True, exist_ok=True)
            block = image[dy * TILE_PX : (dy + 1) * TILE_PX, dx * TILE_PX : (dx + 1) * TILE_PX]
            Image.fromarray(block).save(tile)


def wms_xml(path: Path, server_url: str) -> Path:
    """A GDAL WMS description of an XYZ (TMS minidriver) service in EPSG:3857 down to zoom ZOOM."""
    path.write_text(
        f"""<GDAL_WMS>
  <Service name="TMS"><ServerUrl>{server_url}/${{z}}/${{x}}/${{y}}.png</ServerUrl></Service>
  <DataWindow>
    <UpperLeftX>{-WORLD_M}</UpperLeftX><UpperLeftY>{WORLD_M}</UpperLeftY>
    <LowerRightX>{WORLD_M}</LowerRightX><LowerRightY>{-WORLD_M}</LowerRightY>
    <TileLevel>{ZOOM}</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY><YOrigin>top</YOrigin>
  </DataWindow>
  <Projection>EPSG:3857</Projection>
  <BlockSizeX>{TILE_PX}</BlockSizeX><BlockSizeY>{TILE_PX}</BlockSizeY><BandsCount>3</BandsCount>
</GDAL_WMS>
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def xyz(served, tmp_path_factory) -> Path:
    server, base = served
    write_xyz(server.root / "xyz")
    return wms_xml(tmp_path_factory.mktemp("wms") / "xyz.xml", f"{base}/xyz")


def inner_bounds(margin_m: float) -> tuple[float, float, float, float]:
    """Bounds inside the served tiles, ``margin_m`` map units from their edge."""
    left, top = KNOWN_TRANSFORM @ (0, 0)
    right, bottom = KNOWN_TRANSFORM @ (2 * TILE_PX, 2 * TILE_PX)
    return left + margin_m, bottom + margin_m, right - margin_m, top - margin_m


def sample_known(transform: Affine, height: int, width: int) -> np.ndarray:
    """The known image bilinearly sampled at the pixel centres of a grid (its georeference taken as true)."""
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    xs, ys = transform @ (cols, rows)
    c, r = ~KNOWN_TRANSFORM @ (xs, ys)
    c, r = c - 0.5, r - 0.5
    c0, r0 = np.floor(c).astype(int), np.floor(r).astype(int)
    fc, fr = (c - c0)[..., None], (r - r0)[..., None]
    image = known_image().astype(float)
    at = lambda dr, dc: image[np.clip(r0 + dr, 0, 511), np.clip(c0 + dc, 0, 511)]  # noqa: E731
    return (at(0, 0) * (1 - fc) + at(0, 1) * fc) * (1 - fr) + (at(1, 0) * (1 - fc) + at(1, 1) * fc) * fr


def test_xyz_read_at_resolution_m_has_the_expected_grid_and_geography(xyz):
    bounds = inner_bounds(3000)
    centre_lat = math.degrees(math.atan(math.sinh((bounds[1] + bounds[3]) / 2 / 6378137.0)))
    tile = read_tile(xyz, bounds=bounds, resolution_m=40.0)
    pixel = tile.transform.a
    assert pixel == pytest.approx(40.0 / math.cos(math.radians(centre_lat)), rel=1e-4)
    assert tile.transform.e == -pixel and tile.transform.b == tile.transform.d == 0
    cols, rows = (tile.transform.c + WORLD_M) / pixel, (WORLD_M - tile.transform.f) / pixel
    assert cols == pytest.approx(round(cols), abs=1e-6) and rows == pytest.approx(round(rows), abs=1e-6)
    minx, miny, maxx, maxy = tile.bounds
    assert minx <= bounds[0] < minx + pixel and maxx - pixel < bounds[2] <= maxx
    assert miny <= bounds[1] < miny + pixel and maxy - pixel < bounds[3] <= maxy
    assert tile.crs.to_epsg() == 3857 and tile.valid.all()
    expected = sample_known(tile.transform, tile.height, tile.width)
    error = np.abs(tile.pixels - expected).mean()
    shifted = np.abs(tile.pixels - sample_known(tile.transform @ Affine.translation(0.5, 0), *tile.pixels.shape[:2]))
    assert error < 4 and shifted.mean() > 3 * error, "the pixels must sit where the transform says"
    assert any("latitude" in note and "map units" in note for note in tile.notes), tile.notes


def test_xyz_without_resolution_m_asks_for_it(xyz):
    with pytest.raises(InputError, match="add --resolution-m"):
        read_tile(xyz, bounds=inner_bounds(3000))


def test_unreachable_service_says_which_url(tmp_path, closed_port):
    server = f"http://127.0.0.1:{closed_port}/tiles"
    xml = wms_xml(tmp_path / "down.xml", server)
    started = time.perf_counter()
    with pytest.raises(RasterUnreachableError, match=re.escape(f"cannot download from {server}/")):
        read_tile(xml, bounds=inner_bounds(3000), resolution_m=40.0)
    assert time.perf_counter() - started < 10


def test_web_mercator_and_geographic_grids_are_square_on_the_ground():
    mercator = read_grid(KNOWN_TRANSFORM, rasterio.crs.CRS.from_epsg(3857), resolution_m=10, at_xy=(0.0, 8399737.9))
    assert mercator.scale_xy[0] == pytest.approx(mercator.scale_xy[1])  # 60° N: square map pixels, 20 units
    assert KNOWN_TRANSFORM.a * mercator.scale_xy[0] == pytest.approx(20.0, rel=2e-3)
    degrees = Affine(1e-4, 0, 10, 0, -1e-4, 61)
    geographic = read_grid(degrees, rasterio.crs.CRS.from_epsg(4326), resolution_m=10, at_xy=(10.0, 60.0))
    x_deg, y_deg = (s * 1e-4 for s in geographic.scale_xy)
    assert x_deg == pytest.approx(2 * y_deg, rel=1e-2) and y_deg * 111_400 == pytest.approx(10, rel=1e-2)
    assert "not in metres" in geographic.note


# --- STAC items ------------------------------------------------------------------------------


def stac_item(assets: dict[str, dict], **properties: object) -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "scene-1",
        "geometry": None,
        "properties": {"datetime": "2024-05-01T10:00:00Z", **properties},
        "links": [],
        "assets": assets,
    }


def write_item(folder: Path, name: str, item: dict) -> Path:
    path = folder / name
    path.write_text(json.dumps(item), encoding="utf-8")
    return path


def test_stac_item_over_http_reads_its_visual_asset(served, cog):
    server, base = served
    assets = {
        "thumbnail": {"href": "./thumb.png", "type": "image/png", "roles": ["thumbnail"]},
        "rendered": {"href": "./scene.tif", "type": "image/tiff; application=geotiff", "roles": ["visual"]},
    }
    write_item(server.root, "item.json", stac_item(assets, gsd=0.5))
    tile = read_tile(f"{base}/item.json", max_side_px=128)
    assert_same_tile(tile, read_tile(cog[0], max_side_px=128))
    assert tile.source == cog[1], "the relative href is resolved against the item's URL"
    assert "asset 'rendered' of the STAC item 'scene-1'" in tile.notes[0] and "gsd 0.5 m" in tile.notes[0]


def test_stac_asset_by_key_and_the_error_that_lists_assets(tmp_path, cog):
    band = write_raster(tmp_path / "b04.tif", scene(40, 50)[:1])
    assets = {
        "B04": {"href": str(band), "type": "image/tiff", "roles": ["data"]},
        "B03": {"href": "b03.tif", "type": "image/tiff", "roles": ["data"]},
    }
    item = write_item(tmp_path, "item.json", stac_item(assets))
    with pytest.raises(InputError, match=r"--stac-asset NAME among B04 \(image/tiff; roles data\); B03"):
        read_tile(item)
    assert read_tile(item, stac_asset="B04").pixels.shape == (40, 50, 3)
    with pytest.raises(InputError, match="has no asset 'B02': its assets are B04"):
        read_tile(item, stac_asset="B02")
    with pytest.raises(RasterNotFoundError, match="the STAC asset .*b03.tif does not exist"):
        read_tile(item, stac_asset="B03")
    with pytest.raises(InputError, match="applies to STAC items"):
        read_tile(cog[0], stac_asset="B04")


def test_stac_collection_is_refused(tmp_path):
    path = write_item(tmp_path, "collection.json", {"type": "Collection", "id": "c"})
    with pytest.raises(InputError, match="is a STAC Collection: give the JSON of one STAC Item"):
        read_tile(path)


# --- batch inputs ----------------------------------------------------------------------------


def test_batch_inputs_keep_urls_and_services_as_given(tmp_path, cog, xyz):
    url = cog[1]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{url}?v=2\n/vsicurl/{url}\nWMTS:http://127.0.0.1:9/caps.xml,layer=a\n", encoding="utf-8")
    rasters = expand_rasters([url, str(xyz), url], from_list=listing)
    assert rasters == [url, xyz, f"{url}?v=2", f"/vsicurl/{url}", "WMTS:http://127.0.0.1:9/caps.xml,layer=a"]
    assert is_remote(url) and not is_remote("C:/data/a.tif") and not locate(str(cog[0])).gdal_path.startswith("/vsi")
    infos = check_rasters([url, xyz], resolution_m=40.0)
    assert [info.path for info in infos] == [url, xyz]
    assert infos[0].crs.to_epsg() == 32633 and infos[1].crs.to_epsg() == 3857


def test_batch_check_names_every_unusable_remote_raster(tmp_path, closed_port, xyz):
    down = f"http://127.0.0.1:{closed_port}/a.tif"
    with pytest.raises(InputError) as caught:  # not all raster errors: one lacks an option
        check_rasters([down, xyz, tmp_path / "gone.tif"])
    message = str(caught.value)
    assert message.startswith("3 of 3 rasters cannot be used")
    assert f"cannot reach {down}" in message and "add --resolution-m" in message and "gone.tif" in message


# --- the HTTP server ------------------------------------------------------------------------


def test_an_unreachable_raster_is_a_502_not_an_unreadable_one():
    unreachable = to_api_error(RasterUnreachableError("cannot reach http://x/a.tif (refused): check the address"))
    assert (unreachable.status, unreachable.code) == (502, "raster_unreachable")
    assert unreachable.message == "cannot reach http://x/a.tif (refused): check the address"
    unreadable = to_api_error(RasterError("cannot read a.tif"))
    assert (unreadable.status, unreadable.code) == (422, "raster_unreadable")
    assert to_api_error(RasterNotFoundError("gone")).status == 404


def test_segment_by_reference_to_a_stac_item_whose_asset_is_unreachable(tmp_path, closed_port, monkeypatch):
    """raster_path cannot be a URL (the data-root guard wants an absolute path), but a STAC item inside
    the data roots can point at one: the server then answers 502 raster_unreachable, naming the URL."""
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "3")
    monkeypatch.setenv("GDAL_HTTP_CONNECTTIMEOUT", "2")
    down = f"http://127.0.0.1:{closed_port}/scene.tif"
    item = write_item(tmp_path, "item.json", stac_item({"visual": {"href": down, "roles": ["visual"]}}))
    settings = ServerSettings(data_roots=(tmp_path,), token_file=tmp_path / "token")
    app = create_app(settings, Engine(FixedPrompter("<answer>[]</answer>"), BoxSegmenter()), token="t" * 24)
    with TestClient(app, base_url="http://127.0.0.1:8765", headers={"Authorization": "Bearer " + "t" * 24}) as client:
        refused = client.post("/v1/segment", json={"raster_path": down, "question": "the fields"})
        assert refused.status_code == 422 and "absolute path" in refused.json()["error"]["message"]
        started = time.perf_counter()
        reply = client.post("/v1/segment", json={"raster_path": str(item), "question": "the fields"})
    assert time.perf_counter() - started < 10
    assert reply.status_code == 502, reply.json()
    error = reply.json()["error"]
    assert error["code"] == "raster_unreachable" and f"cannot reach {down}" in error["message"]


# --- the command line ------------------------------------------------------------------------


@pytest.mark.slow
def test_segment_a_url_end_to_end(cog, tmp_path, tiny_lvlm_dir, tiny_sam2_dir, capsys):
    out = tmp_path / "out.gpkg"
    code = main(
        ["segment", cog[1], question_for("ponds"), "-o", str(out), "--resolution-m", "1"]
        + tiny_model_flags(tiny_lvlm_dir, tiny_sam2_dir)
    )
    stdout = capsys.readouterr().out
    assert code == 0 and "status     ok" in stdout and "EPSG:32633" in stdout
    runs = pyogrio.read_dataframe(out, layer="segments")
    assert len(runs) > 0 and set(runs["source"]) == {cog[1]}


def test_segment_a_service_without_resolution_is_refused(xyz, capsys):
    code = main(["segment", str(xyz), "the fields", "--json", "--lvlm", "none", "--segmenter", "none"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("think2seg: error: ") and "add --resolution-m" in err
