"""Scores in batch runs: per piece, combined across seams, the minimum score, and resuming a run
stored before scores existed."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import numpy as np
import pyogrio
import pytest
import shapely
from test_batch import (
    OPTIONS,
    OPTIONS_KW,
    PIXEL,
    InterruptingSegmenter,
    ThresholdSegmenter,
    engine,
    segments,
    tiles,
    write_scene,
)

from think2seg.batch.options import BatchOptions
from think2seg.batch.runner import run_batch
from think2seg.batch.stitch import area_weighted, merge_seam_pieces
from think2seg.geo.vectorize import georeference


class ScoredThreshold(ThresholdSegmenter):
    """The threshold mask, scored by the tile's mean green / 100: a known score per tile window."""

    def predict_scored(self, image: np.ndarray, prompts):
        return self.predict(image, prompts), np.full(len(prompts), image[..., 1].mean() / 100, dtype=np.float32)


class InterruptingScored(InterruptingSegmenter, ScoredThreshold):
    """Scored, and interrupted (Ctrl-C) at the given encoding."""


def tile_scores(out, green: np.ndarray) -> dict[int, float]:
    """What ScoredThreshold gives each tile: the mean green of its (stretched) window / 100."""
    found = {}
    for _, t in tiles(out).iterrows():
        window = green[t["row_off"] : t["row_off"] + t["height"], t["col_off"] : t["col_off"] + t["width"]]
        found[int(t["tile_id"])] = float(window.mean()) / 100
    return found


def stretched_green(raster) -> np.ndarray:
    from think2seg.geo.read import read_tile

    return read_tile(raster, max_side_px=4096).pixels[..., 1].astype(np.float64)


def test_pieces_carry_their_tiles_score_and_stitched_objects_the_area_weighted_mean(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif")
    out = tmp_path / "out.gpkg"
    run_batch(raster, "segment", out, models=engine(ScoredThreshold()), options=OPTIONS)
    expected = tile_scores(out, stretched_green(raster))
    assert len(set(np.round(list(expected.values()), 4))) > 1  # the east half is darker: scores differ
    pieces = pyogrio.read_dataframe(out, layer="tile_pieces")
    assert np.allclose(pieces["score"], [expected[t] for t in pieces["tile_id"]], atol=1e-5)
    result = segments(out)
    assert result["score"].notna().all()
    ellipse = result.loc[result.geometry.area.idxmax()]
    assert ellipse["tiles"] == 9
    from rasters import UTM_TRANSFORM

    mapped = georeference(pieces.geometry.to_numpy(), UTM_TRANSFORM)
    inside = shapely.area(shapely.intersection(mapped, ellipse.geometry)) > 0.5 * shapely.area(mapped)
    weights = pieces.geometry.area.to_numpy()[inside]
    assert ellipse["score"] == pytest.approx(np.average(pieces["score"].to_numpy()[inside], weights=weights), abs=1e-6)
    boxes = pyogrio.read_dataframe(out, layer="prompt_boxes")
    assert np.allclose(boxes["score"], [expected[t] for t in boxes["tile_id"]], atol=1e-5)


def test_min_score_drops_the_weak_tiles_pieces(tmp_path):
    raster, mask = write_scene(tmp_path / "scene.tif")
    out = tmp_path / "out.gpkg"
    expected = None
    run_batch(raster, "segment", tmp_path / "all.gpkg", models=engine(ScoredThreshold()), options=OPTIONS)
    expected = tile_scores(tmp_path / "all.gpkg", stretched_green(raster))
    cut = float(np.median(list(expected.values())))
    run_batch(
        raster, "segment", out, models=engine(ScoredThreshold()), options=BatchOptions(**OPTIONS_KW, min_score=cut)
    )
    pieces = pyogrio.read_dataframe(out, layer="tile_pieces")
    assert len(pieces) and (pieces["score"] >= cut - 1e-6).all()
    weak = {t for t, s in expected.items() if s < cut - 1e-6}
    assert weak and not set(pieces["tile_id"]) & weak
    assert segments(out)["area_m2"].sum() < mask.sum() * PIXEL**2
    with pytest.raises(Exception, match="min_score"):  # a changed minimum is a changed run
        run_batch(
            raster, "segment", out, models=engine(ScoredThreshold()), options=BatchOptions(**OPTIONS_KW, resume=True)
        )


def test_a_run_stored_before_scores_resumes_with_unknown_scores_for_its_old_tiles(tmp_path):
    raster, mask = write_scene(tmp_path / "scene.tif")
    out = tmp_path / "out.gpkg"
    with pytest.raises(KeyboardInterrupt):
        run_batch(raster, "segment", out, models=engine(InterruptingScored(after=5)), options=OPTIONS)
    with closing(sqlite3.connect(out)) as connection, connection:  # as an older think2seg wrote it
        for layer in ("tile_pieces", "prompt_boxes", "prompt_points"):
            connection.execute(f'ALTER TABLE "{layer}" DROP COLUMN score')
    resumed = BatchOptions(**OPTIONS_KW, resume=True)
    summary = run_batch(raster, "segment", out, models=engine(ScoredThreshold()), options=resumed)
    assert summary.tiles_before == 5
    pieces = pyogrio.read_dataframe(out, layer="tile_pieces")
    assert pieces["score"].isna().any() and pieces["score"].notna().any()
    boxes = pyogrio.read_dataframe(out, layer="prompt_boxes")  # new rows' fields land in the old layout's order
    assert set(boxes["reasoning"]) == {"Everything."} and boxes["score"].notna().sum() == 7
    assert sum(g.area for g in segments(out).geometry) == pytest.approx(mask.sum() * PIXEL**2)


def test_area_weighted_mean_ignores_unknown_scores():
    assert area_weighted(np.array([0.8, np.nan, 0.2]), np.array([3.0, 5.0, 1.0])) == pytest.approx(0.65)
    assert np.isnan(area_weighted(np.array([np.nan]), np.array([1.0])))
    left, right = shapely.box(0, 0, 2, 2), shapely.box(2, 0, 3, 2)
    (merged,) = merge_seam_pieces([left, right], [0, 1], [0.9, 0.3])
    assert merged.tiles == 2 and merged.score == pytest.approx((0.9 * 4 + 0.3 * 2) / 6)
