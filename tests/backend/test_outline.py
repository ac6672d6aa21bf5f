import math
import time

import numpy as np
import pytest
import shapely
from rasterio import features
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box

from think2seg.errors import InputError
from think2seg.geo.outline import AREA_TOLERANCE, DEFAULT_TOLERANCE_PX, OUTLINES, clean_outlines
from think2seg.geo.simplify import simplified
from think2seg.geo.vectorize import pixel_polygons

CLEANING = [outline for outline in OUTLINES if outline != "pixel"]
SIZE = 160


def drawn(geometry: Polygon, size: int = SIZE) -> np.ndarray:
    """The pixels whose centres ``geometry`` (pixel coordinates) covers."""
    return features.rasterize([geometry], out_shape=(size, size)).astype(bool)


def ragged(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """``mask`` with about 8% of its edge pixels dented and 8% of the pixels around it bumped out
    (but none next to a dent, which could close a hole): a building as a segmenter draws it."""
    rng = np.random.default_rng(seed)

    def touching(pixels: np.ndarray) -> np.ndarray:
        return np.roll(pixels, 1, 0) | np.roll(pixels, -1, 0) | np.roll(pixels, 1, 1) | np.roll(pixels, -1, 1)

    dents = mask & touching(~mask) & (rng.random(mask.shape) < 0.08)
    bumps = ~mask & touching(mask) & ~touching(dents) & (rng.random(mask.shape) < 0.08)
    return (mask & ~dents) | bumps


def blob_mask(size: int, *, sigma_px: float, threshold: float, seed: int) -> np.ndarray:
    """Smooth random blobs: white noise low-passed by a Gaussian (via the FFT), thresholded."""
    rng = np.random.default_rng(seed)
    frequency = np.fft.fftfreq(size)
    gain = np.exp(-(frequency[:, None] ** 2 + frequency[None, :] ** 2) * (2 * np.pi * sigma_px) ** 2 / 2)
    field = np.real(np.fft.ifft2(np.fft.fft2(rng.random((size, size))) * gain))
    return (field - field.mean()) / field.std() > threshold


RIVER = LineString([(x, 80 + 30 * math.sin(x / 25)) for x in np.linspace(5, 155, 60)]).buffer(4)
SHAPES = {
    "noisy rectangle": ragged(drawn(box(20, 30, 90, 80))),
    "L-shaped building": ragged(drawn(shapely.union(box(20, 20, 100, 50), box(20, 20, 50, 100))), seed=1),
    "rectangle at 30°": drawn(affinity.rotate(box(30, 40, 110, 90), 30)),
    "lake": drawn(shapely.union(Point(80, 80).buffer(40), Point(110, 100).buffer(25))),
    "river": drawn(RIVER),
    "ring": drawn(Point(80, 80).buffer(40).difference(Point(80, 80).buffer(20))),
}


def biggest(mask: np.ndarray) -> np.ndarray:
    polygons = pixel_polygons(mask)
    return polygons[[int(np.argmax(shapely.area(polygons)))]]


def check_guarantees(polygons: np.ndarray, cleaned: np.ndarray, index: np.ndarray) -> None:
    """Valid polygons, nothing dropped, each source's area kept, no two results overlapping."""
    assert len(cleaned) == len(index)
    assert (shapely.get_type_id(cleaned) == shapely.GeometryType.POLYGON).all()
    assert shapely.is_valid(cleaned).all()
    assert np.array_equal(np.unique(index), np.arange(len(polygons)))  # nothing dropped
    assert (np.diff(index) >= 0).all()
    kept = np.bincount(index, weights=shapely.area(cleaned), minlength=len(polygons))
    pixel = shapely.area(polygons)
    assert (np.abs(kept - pixel) <= AREA_TOLERANCE * pixel + 1e-9).all()
    left, right = shapely.STRtree(cleaned).query(cleaned, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(shapely.intersection(cleaned[left[pairs]], cleaned[right[pairs]]))
    assert overlap.max(initial=0.0) <= 1e-9


def corner_angles_deg(polygon: Polygon) -> np.ndarray:
    xy = np.asarray(polygon.exterior.coords)[:-1]
    before, after = xy - np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0) - xy
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    dot = (before * after).sum(axis=1)
    return np.degrees(np.abs(np.arctan2(cross, dot)))


def unit_steps(polygon: Polygon) -> float:
    """The share of the outline's edges that are one-pixel axis-aligned steps (a staircase)."""
    edges = np.concatenate(
        [np.diff(np.asarray(ring.coords), axis=0) for ring in [polygon.exterior, *polygon.interiors]]
    )
    step = np.isclose(np.abs(edges).max(axis=1), 1) & np.isclose(np.abs(edges).min(axis=1), 0)
    return float(step.mean())


def test_pixel_outline_is_unchanged():
    polygons = pixel_polygons(SHAPES["ring"] | blob_mask(SIZE, sigma_px=3, threshold=1.5, seed=2))
    cleaned, index = clean_outlines(polygons, outline="pixel")
    assert np.array_equal(index, np.arange(len(polygons)))
    assert all(shapely.equals_exact(cleaned, polygons, tolerance=0))
    assert cleaned is not polygons


@pytest.mark.parametrize("outline", CLEANING)
@pytest.mark.parametrize("name", list(SHAPES))
def test_realistic_shapes_are_cleaned_within_the_guarantees(name: str, outline: str):
    polygons = biggest(SHAPES[name])
    before = polygons.copy()
    cleaned, index = clean_outlines(polygons, outline=outline)
    check_guarantees(polygons, cleaned, index)
    assert all(shapely.equals_exact(polygons, before, tolerance=0))  # the input is left as it was
    (result,) = cleaned
    (pixels,) = polygons
    assert len(result.interiors) == len(pixels.interiors)  # the ring keeps its hole, nothing gains one
    assert unit_steps(pixels) > 0.3 and unit_steps(result) < 0.05  # the staircase is gone
    if outline != "regularize":  # regularize squares up whatever it gets (a lake too), by design
        assert shapely.hausdorff_distance(result, pixels) < 2.5 * DEFAULT_TOLERANCE_PX[outline]
    if outline == "simplify":
        assert shapely.get_num_coordinates(result) < shapely.get_num_coordinates(pixels) / 3


@pytest.mark.parametrize(
    ("name", "corners", "angle_deg"),
    [("noisy rectangle", 4, 0.0), ("L-shaped building", 6, 0.0), ("rectangle at 30°", 4, 30.0)],
)
def test_regularized_buildings_have_right_angles_along_their_direction(name: str, corners: int, angle_deg: float):
    polygons = biggest(SHAPES[name])
    (result,), _ = clean_outlines(polygons, outline="regularize")
    assert len(result.exterior.coords) - 1 == corners
    assert corner_angles_deg(result) == pytest.approx(np.full(corners, 90.0), abs=1e-6)
    xy = np.asarray(result.exterior.coords)
    edge_deg = np.degrees(np.arctan2(np.diff(xy[:, 1]), np.diff(xy[:, 0]))) % 90
    distance = np.minimum(np.abs(edge_deg - angle_deg % 90), 90 - np.abs(edge_deg - angle_deg % 90))
    assert distance.max() < 2.0
    truth = {"noisy rectangle": box(20, 30, 90, 80), "rectangle at 30°": affinity.rotate(box(30, 40, 110, 90), 30)}
    if name in truth:  # the true building is found again, better than its pixels match it
        iou = result.intersection(truth[name]).area / result.union(truth[name]).area
        assert iou > 0.97


def test_an_axis_aligned_building_gets_exactly_axis_aligned_edges():
    (result,), _ = clean_outlines(biggest(SHAPES["noisy rectangle"]), outline="regularize")
    xy = np.asarray(result.exterior.coords)
    assert len(np.unique(xy[:, 0])) == 2 and len(np.unique(xy[:, 1])) == 2


def test_simplify_keeps_topology_between_polygons_by_itself():
    """The joint Douglas-Peucker needs no cutting afterwards: neighbours one pixel apart stay apart."""
    polygons = pixel_polygons(np.random.default_rng(3).random((96, 96)) < 0.55)
    simple = simplified(polygons, 2.0)
    assert shapely.is_valid(simple).all()
    left, right = shapely.STRtree(simple).query(simple, predicate="intersects")
    pairs = left < right
    assert shapely.area(shapely.intersection(simple[left[pairs]], simple[right[pairs]])).max() <= 1e-9


def test_a_small_square_is_smoothed_without_losing_area():
    mask = np.zeros((14, 14), bool)
    mask[2:12, 2:12] = True
    (result,), _ = clean_outlines(pixel_polygons(mask), outline="smooth")
    assert len(result.exterior.coords) > 5 and corner_angles_deg(result).max() < 60
    assert result.area == pytest.approx(100, rel=0.01)  # the offset is first-order: 100.4 here


def test_smooth_rounds_corners_and_keeps_a_river_in_one_piece():
    polygons = biggest(SHAPES["river"])
    cleaned, index = clean_outlines(polygons, outline="smooth")
    check_guarantees(polygons, cleaned, index)
    (result,) = cleaned
    assert corner_angles_deg(result).max() < 60  # no sharp corner left
    assert result.intersection(RIVER).area / result.union(RIVER).area > 0.9


def corner_neighbours() -> np.ndarray:
    mask = np.zeros((40, 40), bool)
    mask[5:15, 5:15] = True
    mask[15:25, 15:25] = True  # touches the first only at the corner (15, 15)
    mask[5:15, 25:35] = True  # touches the second only at the corner (25, 15)
    mask[24, 16:24:2] = False  # a ragged edge
    return mask


def island_in_hole() -> np.ndarray:
    mask = np.zeros((50, 50), bool)
    mask[5:45, 5:45] = True
    mask[12:38, 12:38] = False  # the hole
    mask[12, 12] = True  # a pixel of the ring poking into the hole's corner
    mask[14:36, 14:36] = True  # an island, one pixel from the hole's edge
    mask[13, 13:15] = True  # a pixel of the island touching the poking pixel at the corner (13, 13)
    return mask


@pytest.mark.parametrize("outline", CLEANING)
@pytest.mark.parametrize(
    "mask",
    [
        pytest.param(corner_neighbours(), id="corner neighbours"),
        pytest.param(island_in_hole(), id="island in a hole"),
        pytest.param(np.indices((30, 30)).sum(axis=0) % 2 == 0, id="checkerboard"),
        pytest.param(np.random.default_rng(3).random((96, 96)) < 0.55, id="dense random"),
        pytest.param(blob_mask(256, sigma_px=3, threshold=0.3, seed=4), id="random blobs"),
    ],
)
def test_results_never_overlap(mask: np.ndarray, outline: str):
    polygons = pixel_polygons(mask)
    cleaned, index = clean_outlines(polygons, outline=outline, tolerance_px=2.0)
    check_guarantees(polygons, cleaned, index)


def test_island_stays_in_its_hole():
    polygons = pixel_polygons(island_in_hole())
    ring_at, island_at = np.argsort([-len(p.interiors) for p in polygons])
    assert len(polygons[ring_at].interiors) == 1 and len(polygons[island_at].interiors) == 0
    for outline in CLEANING:
        cleaned, index = clean_outlines(polygons, outline=outline, tolerance_px=2.0)
        ring, island = (shapely.union_all(cleaned[index == at]) for at in (ring_at, island_at))
        assert island.area > 400 and Polygon(ring.interiors[0]).contains(island)


def test_a_single_pixel_too_small_to_smooth_keeps_its_square():
    (pixel,) = pixel_polygons(np.eye(1, dtype=bool))
    (result,), index = clean_outlines(np.array([pixel]), outline="smooth")
    assert result.equals(pixel) and index.tolist() == [0]


def test_defaults_and_zero_tolerance():
    polygons = biggest(SHAPES["lake"])
    for outline in CLEANING:
        default, _ = clean_outlines(polygons, outline=outline)
        explicit, _ = clean_outlines(polygons, outline=outline, tolerance_px=DEFAULT_TOLERANCE_PX[outline])
        assert all(shapely.equals_exact(default, explicit, tolerance=0))
        same, _ = clean_outlines(polygons, outline=outline, tolerance_px=0)
        assert same[0].equals(polygons[0]) and not default[0].equals(polygons[0])
    fine, _ = clean_outlines(polygons, outline="simplify")
    coarse, _ = clean_outlines(polygons, outline="simplify", tolerance_px=3)
    assert shapely.get_num_coordinates(coarse[0]) < shapely.get_num_coordinates(fine[0])


def test_no_polygons():
    cleaned, index = clean_outlines(np.array([], dtype=object), outline="smooth")
    assert len(cleaned) == 0 and len(index) == 0


def test_unknown_outline_lists_the_choices():
    with pytest.raises(InputError, match="pixel, simplify, smooth, regularize.*'round'"):
        clean_outlines(biggest(SHAPES["lake"]), outline="round")


@pytest.mark.parametrize("tolerance", [-1, -0.1, math.nan, math.inf, "1", True])
def test_bad_tolerance_is_refused(tolerance: object):
    with pytest.raises(InputError, match="tolerance_px must be a number >= 0"):
        clean_outlines(biggest(SHAPES["lake"]), outline="simplify", tolerance_px=tolerance)  # type: ignore[arg-type]


def speckled_disc(size: int = 512, seed: int = 5) -> np.ndarray:
    """A segmenter at its worst: a big disc riddled with one-pixel holes, speckle all around it."""
    rows, cols = np.indices((size, size))
    disc = (rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (0.4 * size) ** 2
    return disc ^ (np.random.default_rng(seed).random((size, size)) < 0.08)


@pytest.mark.parametrize("outline", CLEANING)
def test_a_speckled_mask_is_cleaned_in_seconds(outline: str):
    """Thousands of holes and islands next to each other once took minutes (every ring compared
    with every other); now the work grows with the number of neighbours, not its square."""
    polygons = pixel_polygons(speckled_disc())
    assert len(polygons) > 1000 and max(len(p.interiors) for p in polygons) > 5000
    started = time.perf_counter()
    cleaned, index = clean_outlines(polygons, outline=outline)
    assert time.perf_counter() - started < 10.0
    check_guarantees(polygons, cleaned, index)
    disc = cleaned[index == int(np.argmax(shapely.area(polygons)))]
    assert shapely.get_num_interior_rings(disc).sum() > 5000  # the holes are kept, not swallowed


def restarted(polygon: Polygon, shift: int, *, reverse: bool, split_px: float | None) -> Polygon:
    """``polygon`` with each ring starting ``shift`` corners later (reversed if ``reverse``) and,
    with ``split_px``, its edges cut into pieces no longer than that by collinear vertices (what
    stitching pieces across a tile seam leaves)."""

    def ring(coords: object) -> np.ndarray:
        xy = np.asarray(coords)[:-1]
        xy = np.roll(xy[::-1] if reverse else xy, -(shift % len(xy)), axis=0)
        return np.vstack([xy, xy[:1]])

    moved = Polygon(ring(polygon.exterior.coords), [ring(hole.coords) for hole in polygon.interiors])
    return moved if split_px is None else shapely.segmentize(moved, split_px)


def normalized_wkts(geometries: np.ndarray) -> list[str]:
    return sorted(shapely.to_wkt(shapely.normalize(geometries), rounding_precision=-1))


@pytest.mark.parametrize("outline", CLEANING)
def test_the_result_depends_on_the_polygons_not_on_their_order_or_ring_starts(outline: str):
    """``batch`` gives the polygons of a raster in another order than ``segment``, stitched across
    seams (rings starting elsewhere, extra vertices on the seams): the cleaned set is the same."""
    mask = blob_mask(256, sigma_px=3, threshold=0.3, seed=4)
    mask[200:250, 10:60] = np.random.default_rng(6).random((50, 50)) < 0.5  # neighbours a pixel apart
    mask[:50, 200:250] = island_in_hole()
    polygons = pixel_polygons(mask)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(polygons))
    given = np.array(
        [
            restarted(
                polygons[k],
                int(rng.integers(1000)),
                reverse=bool(rng.integers(2)),
                split_px=3.0 if rng.random() < 0.5 else None,
            )
            for k in order
        ],
        dtype=object,
    )
    assert normalized_wkts(given) != normalized_wkts(polygons)  # the extra vertices are there
    cleaned, index = clean_outlines(polygons, outline=outline, tolerance_px=2.0)
    again, again_index = clean_outlines(given, outline=outline, tolerance_px=2.0)
    check_guarantees(given, again, again_index)
    assert normalized_wkts(again) == normalized_wkts(cleaned)
    for k in range(len(polygons)):  # each result goes back to the caller's index of its source
        assert normalized_wkts(again[again_index == np.flatnonzero(order == k)[0]]) == normalized_wkts(
            cleaned[index == k]
        )
