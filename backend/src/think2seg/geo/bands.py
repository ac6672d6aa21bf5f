"""Band choice and conversion to 8-bit RGB (DESIGN.md section 3).

RGB by colour interpretation when present, else the first three bands; a single band (or two) is
shown as grey; a palette band is expanded through its colour table. Non-8-bit data is stretched
per band between the 2nd and 98th percentile of the valid pixels, so nodata, alpha and NaN never
shift the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.enums import ColorInterp

STRETCH_PERCENTILES = (2.0, 98.0)


@dataclass(frozen=True)
class BandChoice:
    """Which bands (1-based) become R, G and B, and which band is alpha, if any."""

    rgb: tuple[int, int, int]
    alpha: int | None = None
    palette: bool = False

    @property
    def unique(self) -> list[int]:
        """The distinct band indexes to read, in order."""
        return list(dict.fromkeys(self.rgb))


def choose_bands(colorinterp: tuple[ColorInterp, ...]) -> BandChoice:
    """Pick the display bands from a raster's colour interpretation."""
    interp = list(colorinterp)
    alpha = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
    wanted = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    if all(c in interp for c in wanted):
        r, g, b = (interp.index(c) + 1 for c in wanted)
        return BandChoice((r, g, b), alpha)
    if interp and interp[0] == ColorInterp.palette:
        return BandChoice((1, 1, 1), alpha, palette=True)
    data_bands = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha]
    if len(data_bands) >= 3:
        return BandChoice((data_bands[0], data_bands[1], data_bands[2]), alpha)
    first = data_bands[0] if data_bands else 1
    return BandChoice((first, first, first), alpha)


StretchLimits = dict[int, tuple[float, float]]
"""Per band index, the (low, high) values mapped to 0 and 255."""


def stretch_limits(bands: dict[int, np.ndarray], valid: np.ndarray) -> StretchLimits:
    """The 2nd and 98th percentile of each non-uint8 band over the ``valid`` pixels.

    Falls back to the min and max when the percentiles coincide; bands without valid pixels or
    with constant values get (0, 0), which maps everything to 0.
    """
    limits: StretchLimits = {}
    for index, band in bands.items():
        if band.dtype == np.uint8:
            continue
        values = band[valid].astype(np.float64)
        if values.size == 0:
            limits[index] = (0.0, 0.0)
            continue
        low, high = (float(v) for v in np.percentile(values, STRETCH_PERCENTILES))
        if high <= low:
            low, high = float(values.min()), float(values.max())
        limits[index] = (low, high)
    return limits


def stretch_to_uint8(band: np.ndarray, limits: tuple[float, float] | None) -> np.ndarray:
    """Map one band linearly from ``limits`` (low, high) to 0..255; uint8 data is returned as is."""
    if band.dtype == np.uint8 or limits is None:
        return band.astype(np.uint8, copy=False)
    low, high = limits
    if high <= low:
        return np.zeros(band.shape, dtype=np.uint8)
    scaled = (band.astype(np.float64) - low) * (255.0 / (high - low))
    out = np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255)
    return np.rint(out).astype(np.uint8)


def finite_mask(data: np.ndarray) -> np.ndarray:
    """(H, W) True where every band of a (bands, H, W) array is finite (always True for integers)."""
    if np.issubdtype(data.dtype, np.floating):
        return np.isfinite(data).all(axis=0)
    return np.ones(data.shape[1:], dtype=bool)


def to_rgb(
    bands: dict[int, np.ndarray],
    choice: BandChoice,
    valid: np.ndarray,
    *,
    colormap: dict | None = None,
    limits: StretchLimits | None = None,
) -> np.ndarray:
    """Compose the (H, W, 3) uint8 RGB image from the read bands; invalid pixels become 0.

    Non-uint8 bands are stretched with ``limits`` when given (e.g. computed once for a whole
    batch run), else with limits computed from these pixels.
    """
    if choice.palette and colormap:
        lut = np.zeros((256, 3), dtype=np.uint8)
        for value, rgba in colormap.items():
            if 0 <= value < 256:
                lut[value] = rgba[:3]
        rgb = lut[np.clip(bands[1], 0, 255).astype(np.intp)]
    else:
        limits = limits if limits is not None else stretch_limits(bands, valid)
        stretched = {index: stretch_to_uint8(data, limits.get(index)) for index, data in bands.items()}
        rgb = np.stack([stretched[i] for i in choice.rgb], axis=-1)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    rgb[~valid] = 0
    return rgb
