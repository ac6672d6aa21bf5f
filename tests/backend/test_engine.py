import numpy as np
import pytest
from affine import Affine
from shapely.geometry import box

from think2seg.engine import Engine
from think2seg.errors import InputError, QuestionError
from think2seg.result import ResultStatus
from think2seg.testing.tiny_lvlm import TEST_ANSWERS, question_for

from conftest import FixedPrompter
from rasters import UTM_TRANSFORM, scene, write_raster

ONE_BOX = '<think>A field.</think> <answer>```json[{"bbox_2d": [84, 84, 420, 840], "positive_points": [[200, 400], [300, 500]]}]```</answer>'


def test_fixed_answer_scales_prompts_to_the_tile_and_georeferences_them(box_segmenter):
    prompter = FixedPrompter(ONE_BOX)
    engine = Engine(prompter, box_segmenter)
    pixels = np.moveaxis(scene(300, 600), 0, -1)
    result = engine.segment_array(pixels, "segment the field", transform=UTM_TRANSFORM, crs=32633)
    assert result.status is ResultStatus.OK
    (instance,) = result.instances
    assert instance.view.box_xyxy == (84, 84, 420, 840)
    assert instance.pixel.box_xyxy == pytest.approx((60, 30, 300, 300))  # x * 600/840, y * 300/840
    assert np.ravel(instance.pixel.points_xy) == pytest.approx([142.857142, 142.857142, 214.285714, 178.571428])
    assert box_segmenter.calls == [[instance.pixel]]
    expected = box(*(UTM_TRANSFORM @ (60, 300)), *(UTM_TRANSFORM @ (300, 30)))
    assert instance.box_map.equals(expected)
    (polygon,) = result.polygons.geometry
    assert polygon.symmetric_difference(expected).area == pytest.approx(0, abs=1e-6)
    assert result.polygons["area_m2"].iloc[0] == pytest.approx(240 * 270 * 0.25)
    assert result.mask.sum() == 240 * 270
    assert {"prepare", "parse", "sam_encode", "sam_decode", "vectorize"} <= set(result.timings_s)


def test_mask_is_union_of_instances_and_excludes_nodata(box_segmenter):
    answer = (
        '<answer>[{"bbox_2d": [0, 0, 420, 420], "positive_points": [[1, 1], [2, 2]]},'
        ' {"bbox_2d": [420, 420, 840, 840], "positive_points": [[500, 500], [600, 600]]}]</answer>'
    )
    engine = Engine(FixedPrompter(answer), box_segmenter)
    valid = np.ones((84, 84), bool)
    valid[:, :21] = False
    result = engine.segment_array(np.full((84, 84), 9, np.uint8), "q", transform=UTM_TRANSFORM, crs=32633, valid=valid)
    assert result.mask.sum() == 42 * 42 - 42 * 21 + 42 * 42
    assert not result.mask[:, :21].any()
    assert len(result.polygons) == 2


def test_all_nodata_window_makes_no_model_call(tmp_path, box_segmenter):
    prompter = FixedPrompter(ONE_BOX)
    path = write_raster(tmp_path / "empty.tif", np.zeros((3, 16, 16), np.uint8), nodata=0)
    result = Engine(prompter, box_segmenter).segment_raster(path, "segment the field")
    assert result.status is ResultStatus.NO_DATA and "nodata" in result.message
    assert prompter.calls == 0 and box_segmenter.calls == []
    assert len(result.polygons) == 0 and not result.mask.any()


def test_unparseable_answer_is_a_normal_outcome(box_segmenter):
    text = "<think>Hmm.</think> <answer>no idea</answer>"
    result = Engine(FixedPrompter(text), box_segmenter).segment_array(
        np.zeros((8, 8, 3), np.uint8) + 5, "q", transform=UTM_TRANSFORM, crs=32633
    )
    assert result.status is ResultStatus.UNPARSEABLE
    assert result.raw_answer == text and result.reasoning == "Hmm." and result.message
    assert len(result.polygons) == 0 and box_segmenter.calls == []


def test_bad_options_refused_before_any_model_call(box_segmenter):
    prompter = FixedPrompter(ONE_BOX)
    engine = Engine(prompter, box_segmenter)
    pixels = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(QuestionError):
        engine.segment_array(pixels, " ", transform=UTM_TRANSFORM, crs=32633)
    with pytest.raises(InputError):
        engine.segment_array(pixels, "q", transform=UTM_TRANSFORM, crs=32633, simplify_px=-1)
    with pytest.raises(InputError):
        engine.segment_array(pixels, "q", transform=Affine.identity(), crs=None, pixel_coords=True, min_area_m2=5)
    assert prompter.calls == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("trigger", "status", "count"),
    [
        ("river", ResultStatus.OK, 1),
        ("ponds", ResultStatus.OK, 2),
        ("airport", ResultStatus.NO_TARGET, 0),
        ("garbled", ResultStatus.UNPARSEABLE, 0),
    ],
)
def test_tiny_models_run_the_real_path(tiny_engine, tiny_lvlm_dir, trigger, status, count):
    pixels = np.moveaxis(scene(200, 300), 0, -1)
    chunks: list[str] = []
    result = tiny_engine.segment_array(
        pixels, question_for(trigger), transform=UTM_TRANSFORM, crs=32633, on_text=chunks.append
    )
    assert result.raw_answer == TEST_ANSWERS[trigger]
    assert "".join(chunks) == TEST_ANSWERS[trigger]
    assert result.status is status and len(result.instances) == count
    assert result.model == str(tiny_lvlm_dir)
    assert result.new_tokens > 10 and result.timings_s["lvlm_decode"] > 0
    if count:
        assert result.mask.shape == (200, 300) and result.timings_s["sam_encode"] > 0
        assert all(geometry.is_valid for geometry in result.polygons.geometry)
