"""Seconds per outline of :func:`think2seg.geo.outline.clean_outlines` on a speckled window.

    .venv/bin/python bench/outline_speed.py               # a 768 x 768 window, every outline
    .venv/bin/python bench/outline_speed.py --size 512 --repeats 3

The window is a segmenter at its worst (what a SAM with random weights, or a noisy class, gives): a
disc over 80% of its width riddled with one-pixel holes, speckle all around it (8% of the pixels
flipped). Its pixel polygons (4-connected, as ``segment`` vectorizes them) are cleaned with each
outline's default tolerance; the time is the best of --repeats runs of ``clean_outlines`` alone
(vectorizing is timed once, apart). Each outline is also cleaned once more with the polygons
shuffled (unless --no-shuffle), and the two results are compared (``same``: the cleaned set does
not depend on the input's order, as ``batch`` and ``segment`` need).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import shapely

from think2seg.geo import outline as outline_module
from think2seg.geo.outline import OUTLINES, clean_outlines
from think2seg.geo.vectorize import pixel_polygons


def speckled_window(size: int, seed: int) -> np.ndarray:
    """A ``size`` x ``size`` mask: a disc of radius ``0.4 * size`` with 8% of all pixels flipped."""
    rows, cols = np.indices((size, size))
    disc = (rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (0.4 * size) ** 2
    return disc ^ (np.random.default_rng(seed).random((size, size)) < 0.08)


def cleaned_set(cleaned: np.ndarray) -> list[str]:
    return sorted(shapely.to_wkt(shapely.normalize(cleaned), rounding_precision=-1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=768, help="window side in pixels (default 768)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="runs per outline; the best is printed")
    parser.add_argument("--outline", choices=OUTLINES, action="append", help="default: all but pixel")
    parser.add_argument("--no-shuffle", action="store_true", help="skip the run on shuffled input")
    args = parser.parse_args()

    started = time.perf_counter()
    polygons = pixel_polygons(speckled_window(args.size, args.seed))
    vectorize_s = time.perf_counter() - started
    holes = int(shapely.get_num_interior_rings(polygons).sum())
    print(f"clean_outlines from {outline_module.__file__}")
    print(
        f"{args.size}x{args.size} speckled window: {len(polygons)} polygons, {holes} holes, "
        f"{int(shapely.get_num_coordinates(polygons).sum())} vertices (vectorized in {vectorize_s:.2f} s)"
    )
    shuffled = polygons[np.random.default_rng(0).permutation(len(polygons))]
    print(f"{'outline':<12}{'seconds':>9}{'results':>9}  shuffled input", flush=True)
    for outline in args.outline or [name for name in OUTLINES if name != "pixel"]:
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            cleaned, _index = clean_outlines(polygons, outline=outline)
            times.append(time.perf_counter() - started)
        same = "not run"
        if not args.no_shuffle:
            again, _index = clean_outlines(shuffled, outline=outline)
            same = "same" if cleaned_set(cleaned) == cleaned_set(again) else "DIFFERENT"
        print(f"{outline:<12}{min(times):>9.2f}{len(cleaned):>9}  {same}", flush=True)


if __name__ == "__main__":
    main()
