"""Turn a request into a :class:`~think2seg.tile.Tile`: a window by reference, or an uploaded image."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyproj
from affine import Affine
from PIL import Image, UnidentifiedImageError
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from think2seg.geo.arrays import tile_from_array
from think2seg.geo.read import RasterSource, decimated_shape, decimation_note
from think2seg.server.errors import ApiError
from think2seg.server.paths import allowed_path
from think2seg.server.schemas import PromptIn, SegmentByReference, UploadMeta
from think2seg.server.settings import ServerSettings
from think2seg.think2seg_rs.answer import InstancePrompt
from think2seg.tile import Tile

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def parse_crs(given: str | int, what: str) -> CRS:
    """A request's CRS: an EPSG code (32633, "32633", "EPSG:32633") or WKT."""
    text = str(given).strip()
    try:
        return CRS.from_user_input(f"EPSG:{text}" if text.isdigit() else text)
    except CRSError as exc:
        raise ApiError(
            422, "invalid_input", f"cannot understand the {what} {text[:80]!r}: give an EPSG code or WKT"
        ) from exc


def tile_by_reference(request: SegmentByReference, settings: ServerSettings) -> tuple[Tile, CRS | None]:
    """The window of ``raster_path`` under ``bounds`` (in ``bounds_crs``), and the CRS of the prompts."""
    _check_side(request.max_side_px, settings)
    path = allowed_path(request.raster_path, settings, what="raster_path")
    with RasterSource(path) as source:
        prompts_crs = parse_crs(request.bounds_crs, "bounds_crs") if request.bounds_crs else source.crs
        bounds = request.bounds
        if bounds is not None and prompts_crs != source.crs:
            bounds = transform_bounds(prompts_crs, source.crs, *bounds, densify_pts=21)
        window, notes = source.window_for(bounds)
        pixels = int(window.width) * int(window.height)
        if pixels > settings.max_window_pixels:
            raise ApiError(
                413,
                "window_too_large",
                f"the window is {int(window.width)}x{int(window.height)} px, more than the "
                f"{settings.max_window_pixels / 1e6:.0f} Mpx this server reads per request: zoom in, "
                "or start a job (POST /v1/jobs) for big areas",
            )
        tile = source.read(window, max_side_px=request.max_side_px, notes=notes)
    return tile, prompts_crs


def tile_from_upload(data: bytes, meta: UploadMeta, settings: ServerSettings) -> Tile:
    """A tile from an uploaded GeoTIFF (its own georeference) or PNG/JPEG (``transform`` + ``crs``)."""
    if data[:4] in TIFF_MAGIC:
        return _geotiff(data, meta, settings)
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", f"{exc}: send a smaller tile, or start a job for big areas") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ApiError(422, "invalid_input", "the upload is neither a GeoTIFF nor a PNG or JPEG image") from exc
    _check_pixels(image.width, image.height, settings)
    _check_side(meta.max_side_px, settings)
    if meta.transform is None or meta.crs is None:
        raise ApiError(
            422,
            "missing_georeference",
            "a PNG or JPEG upload needs its georeference: add transform (a, b, c, d, e, f) and crs "
            "to the request part, or upload a GeoTIFF",
        )
    try:
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except OSError as exc:
        raise ApiError(422, "invalid_input", f"the image cannot be decoded: {exc}") from exc
    return _decimated(image, Affine(*meta.transform), parse_crs(meta.crs, "crs"), meta.max_side_px)


def _decimated(image: Image.Image, transform: Affine, crs: CRS, max_side_px: int) -> Tile:
    """The upload as a tile whose longer side is at most ``max_side_px`` (area-averaged, as
    rasters are read), with the transform of the pixels it keeps."""
    full = Window(0, 0, image.width, image.height)
    out_w, out_h = decimated_shape(full, max_side_px)
    if (out_w, out_h) == (image.width, image.height):
        return tile_from_array(np.asarray(image), transform=transform, crs=crs, source="<upload>")
    scale = (image.width / out_w, image.height / out_h)
    small = image.resize((out_w, out_h), Image.Resampling.BOX)
    tile = tile_from_array(np.asarray(small), transform=transform @ Affine.scale(*scale), crs=crs, source="<upload>")
    note = decimation_note("upload", full, (out_w, out_h), max_side_px)
    return replace(tile, window=full, scale_xy=scale, notes=tile.notes + (note,))


def _geotiff(data: bytes, meta: UploadMeta, settings: ServerSettings) -> Tile:
    with tempfile.TemporaryDirectory(prefix="think2seg-upload-") as folder:
        path = Path(folder) / "upload.tif"
        path.write_bytes(data)
        with RasterSource(path) as source:
            _check_pixels(source.width, source.height, settings)
            _check_side(meta.max_side_px, settings)
            tile = source.read(source.full_window, max_side_px=meta.max_side_px)
    return replace(tile, source="<upload>")


def _check_pixels(width: int, height: int, settings: ServerSettings) -> None:
    if width * height > settings.max_upload_pixels:
        raise ApiError(
            413,
            "image_too_large",
            f"the image is {width}x{height} px, more than the {settings.max_upload_pixels / 1e6:.1f} Mpx limit for "
            "uploads: send a smaller tile, the raster by reference, or start a job (POST /v1/jobs) for big areas",
        )


def _check_side(max_side_px: int, settings: ServerSettings) -> None:
    if max_side_px > settings.max_side_px:
        raise ApiError(
            422, "invalid_input", f"max_side_px is {max_side_px}; this server reads at most {settings.max_side_px}"
        )


def pixel_prompts(prompts: Sequence[PromptIn], tile: Tile, prompts_crs: CRS | None) -> list[InstancePrompt]:
    """Map-coordinate prompts (in ``prompts_crs``) as tile-pixel prompts, clamped to the tile."""
    to_tile = _transformer(prompts_crs, tile.crs)
    inverse: Affine = ~tile.transform
    result = []
    for prompt in prompts:
        box = None
        if prompt.box is not None:
            x1, y1, x2, y2 = prompt.box
            corners = [inverse @ to_tile(x, y) for x in (x1, x2) for y in (y1, y2)]
            cols, rows = zip(*corners)
            box = _clamped_box(min(cols), min(rows), max(cols), max(rows), tile)
        points = None
        if prompt.points is not None:
            points = tuple(_clamped_point(*(inverse @ to_tile(x, y)), tile) for x, y in prompt.points)
        result.append(InstancePrompt(box, points))
    return result


def _transformer(source: CRS | None, target: CRS | None) -> Callable[[float, float], tuple[float, float]]:
    if source is None or target is None or source == target:
        return lambda x, y: (x, y)
    transformer = pyproj.Transformer.from_crs(source.to_wkt(), target.to_wkt(), always_xy=True)
    return transformer.transform


def _clamped_box(x1: float, y1: float, x2: float, y2: float, tile: Tile) -> tuple[float, float, float, float]:
    box = (max(x1, 0.0), max(y1, 0.0), min(x2, float(tile.width)), min(y2, float(tile.height)))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ApiError(422, "invalid_input", "a prompt box lies outside the tile: send prompts inside the window")
    return box


def _clamped_point(col: float, row: float, tile: Tile) -> tuple[float, float]:
    if not (0 <= col <= tile.width and 0 <= row <= tile.height):
        raise ApiError(422, "invalid_input", "a prompt point lies outside the tile: send prompts inside the window")
    return (col, row)
