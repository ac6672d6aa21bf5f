"""Make the bundled sample raster: a synthetic 0.5 m aerial scene (fields, a river, a road, houses).

Everything is drawn here from a fixed seed, so the file has no licence doubts and can be rebuilt:

    .venv/bin/python resources/sample/make_sample.py

Writes ``resources/sample/riverside.tif`` (RGB uint8, EPSG:32633, JPEG-compressed GeoTIFF).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image, ImageDraw, ImageFilter

SIZE_PX = 768
PIXEL_M = 0.5
ORIGIN = (512000.0, 5262000.0)  # upper-left corner, UTM zone 33N (Austria/Czechia border region)
OUT = Path(__file__).with_name("riverside.tif")


def fields(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (SIZE_PX, SIZE_PX), (70, 92, 48))  # hedges between fields
    draw = ImageDraw.Draw(image)
    palette = [(96, 128, 62), (124, 146, 74), (150, 136, 90), (110, 120, 58), (170, 160, 110), (84, 112, 54)]
    step = 128
    for y in range(0, SIZE_PX, step):
        for x in range(0, SIZE_PX, step):
            w, h = step - rng.integers(2, 6), step - rng.integers(2, 6)
            colour = palette[rng.integers(len(palette))]
            draw.rectangle([x, y, x + w, y + h], fill=colour)
            for row in range(y, y + h, 6):  # plough lines
                shade = tuple(max(c - 12, 0) for c in colour)
                draw.line([x, row, x + w, row], fill=shade, width=2)
    return image


def river_polygon() -> list[tuple[float, float]]:
    ys = np.linspace(-20, SIZE_PX + 20, 80)
    centre = SIZE_PX * 0.45 + 90 * np.sin(ys / 140.0) + 30 * np.sin(ys / 47.0)
    width = 26 + 6 * np.sin(ys / 90.0)
    left = list(zip(centre - width, ys))
    right = list(zip(centre + width, ys))
    return left + right[::-1]


def draw_scene(rng: np.random.Generator) -> np.ndarray:
    image = fields(rng)
    draw = ImageDraw.Draw(image)
    river = river_polygon()
    draw.polygon([(x - 8, y) for x, y in river], fill=(176, 164, 128))  # sandy bank
    draw.polygon(river, fill=(52, 84, 92))
    draw.line([(0, 560), (SIZE_PX, 520)], fill=(128, 128, 124), width=14)  # road and bridge
    for i in range(9):  # houses with shadows
        x, y = 520 + (i % 3) * 60 + rng.integers(-6, 6), 120 + (i // 3) * 70 + rng.integers(-6, 6)
        draw.rectangle([x + 5, y + 5, x + 35, y + 30], fill=(60, 62, 58))
        draw.rectangle([x, y, x + 30, y + 25], fill=(168, 72, 56) if i % 2 else (150, 150, 156))
    for _ in range(40):  # trees
        x, y = rng.integers(0, SIZE_PX, 2)
        r = rng.integers(6, 14)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(40, 70, 36))
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    pixels = np.asarray(image).astype(np.int16)
    pixels += rng.normal(0, 6, pixels.shape).astype(np.int16)  # sensor noise and texture
    return np.clip(pixels, 0, 255).astype(np.uint8)


def main() -> None:
    pixels = draw_scene(np.random.default_rng(20261126))
    transform = Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1])
    profile = {
        "driver": "GTiff",
        "width": SIZE_PX,
        "height": SIZE_PX,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": transform,
        "photometric": "YCBCR",
        "compress": "JPEG",
        "jpeg_quality": 90,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.open(OUT, "w", **profile) as dst:
        dst.write(np.moveaxis(pixels, -1, 0))
        dst.update_tags(DESCRIPTION="think2seg synthetic sample: fields, a river, a road and houses")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
