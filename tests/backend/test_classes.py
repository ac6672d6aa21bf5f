"""Several classes in one run: --question repeated or --classes FILE, a class column, one SAM
encoding per tile, overlaps kept and reported; output formats and masks for several classes."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio

from think2seg.classes import ClassQuestions, load_classes
from think2seg.cli import main
from think2seg.engine import Engine
from think2seg.errors import InputError
from think2seg.models.base import Generation
from think2seg.output.gpkg import result_layers, write_gpkg
from think2seg.testing.tiny_lvlm import question_for

from conftest import BoxSegmenter
from rasters import UTM_TRANSFORM, scene, write_raster

# 84x84 px tile: buildings 0..30 px, water 20..50 px (10x10 px shared), roads 60..80 px
ANSWERS = {
    "segment the buildings": '<think>Roofs.</think> <answer>[{"bbox_2d": [0, 0, 300, 300], "positive_points": [[10, 10], [20, 20]]}]</answer>',
    "segment the water": '<think>A pond.</think> <answer>[{"bbox_2d": [200, 200, 500, 500], "positive_points": [[300, 300], [400, 400]]}]</answer>',
    "segment the roads": '<think>A road.</think> <answer>[{"bbox_2d": [600, 600, 800, 800], "positive_points": [[700, 700], [710, 710]]}]</answer>',
}


class QuestionPrompter:
    """Answers each question with its own fixed text; records the batches it was given."""

    name = "question-prompter"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def generate(self, view, question, *, on_text=None) -> Generation:
        self.batches.append([question])
        return Generation(ANSWERS[question])

    def generate_batch(self, views, questions):
        questions = [questions] * len(views) if isinstance(questions, str) else list(questions)
        self.batches.append(questions)
        return [Generation(ANSWERS[q]) for q in questions]


class CountingSegmenter(BoxSegmenter):
    def __init__(self) -> None:
        super().__init__()
        self.encoded = 0

    def encode(self, image):
        self.encoded += 1
        return super().encode(image)


def tile():
    from think2seg.geo.arrays import tile_from_array

    return tile_from_array(np.full((84, 84, 3), 90, np.uint8), transform=UTM_TRANSFORM, crs=32633)


CLASSES = [
    ClassQuestions("buildings", ("segment the buildings",)),
    ClassQuestions("water", ("segment the water",)),
    ClassQuestions("roads", ("segment the roads",)),
]


def test_all_classes_of_a_tile_in_one_lvlm_batch_and_one_sam_encoding():
    prompter, segmenter = QuestionPrompter(), CountingSegmenter()
    results = Engine(prompter, segmenter).segment_classes(tile(), CLASSES)
    assert [r.class_name for r in results] == ["buildings", "water", "roads"]
    assert prompter.batches == [[q for c in CLASSES for q in c.questions]]
    assert segmenter.encoded == 1
    assert [r.mask.sum() for r in results] == [900, 900, 400]
    assert [r.reasoning for r in results] == ["Roofs.", "A pond.", "A road."]


def test_overlapping_classes_keep_their_polygons_and_the_overlap_is_reported(tmp_path):
    results = Engine(QuestionPrompter(), BoxSegmenter()).segment_classes(tile(), CLASSES)
    write_gpkg(results, tmp_path / "out.gpkg")
    segments = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="segments")
    assert sorted(segments["class"]) == ["buildings", "roads", "water"]
    by_class = segments.set_index("class")["area_m2"]
    assert by_class["buildings"] == pytest.approx(900 * 0.25) and by_class["water"] == pytest.approx(900 * 0.25)
    overlaps = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="class_overlaps")
    assert overlaps[["class_a", "class_b"]].values.tolist() == [["buildings", "water"]]
    assert overlaps["area_m2"].iloc[0] == pytest.approx(100 * 0.25)
    runs = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="runs", read_geometry=False)
    assert runs["class"].tolist() == ["buildings", "water", "roads"] and runs["reasoning"].iloc[1] == "A pond."
    boxes = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="prompt_boxes")
    assert sorted(boxes["class"]) == ["buildings", "roads", "water"]


def test_one_question_has_no_overlaps_layer_and_its_class_is_the_question():
    (result,) = Engine(QuestionPrompter(), BoxSegmenter()).segment_classes(
        tile(), [ClassQuestions("", ("segment the roads",))]
    )
    layers = result_layers(result)
    assert "class_overlaps" not in layers and set(layers["segments"]["class"]) == {"segment the roads"}


def test_class_files_refuse_a_repeated_name(tmp_path):
    path = tmp_path / "classes.yaml"
    path.write_text("buildings: segment the buildings\nwater: segment the water\nbuildings: segment the roofs\n")
    with pytest.raises(InputError, match="names the class 'buildings' more than once"):
        load_classes(path)
    path = tmp_path / "classes.json"
    path.write_text('{"water": "segment the water", "water": "segment the lakes"}')
    with pytest.raises(InputError, match="more than once"):
        load_classes(path)
    assert load_classes(_classes_file(tmp_path))[1] == ClassQuestions("water", ("segment the water",))


def _classes_file(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("buildings: segment the buildings\nwater: [segment the water]\n")
    return path


# --- the CLI with the tiny models -------------------------------------------------------------------


@pytest.mark.slow
def test_segment_with_repeated_questions_writes_a_class_column_and_a_band_per_class(cli, tmp_path):
    raster = write_raster(tmp_path / "scene.tif", scene(120, 160))
    out, mask = tmp_path / "out.fgb", tmp_path / "mask.tif"
    questions = [question_for("river"), question_for("ponds")]
    code, stdout, err = cli(
        "segment", raster, "--question", questions[0], "--question", questions[1], "-o", out, "--mask-out", mask
    )
    assert code == 0, err
    assert f"== {questions[0]}" in stdout and f"== {questions[1]}" in stdout and "overlaps" in stdout
    segments = pyogrio.read_dataframe(out)
    assert set(segments["class"]) <= set(questions) and pyogrio.read_info(out)["driver"] == "FlatGeobuf"
    with rasterio.open(mask) as src:
        assert src.count == 2 and list(src.descriptions) == questions
    code, stdout, _ = cli("segment", raster, "--question", questions[0], "--question", questions[1], "--json")
    lines = [json.loads(line) for line in stdout.strip().splitlines()]
    assert [line["question"] for line in lines] == questions


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["segment the river", "--question", "segment the ponds"], "say what to segment once"),
        (["--classes", "missing.yaml"], "does not exist"),
        (["segment the river", "-o", "out.kml"], "choose an output ending in .gpkg"),
        (["--classes", "dup.yaml"], "more than once"),
    ],
)
def test_bad_class_and_format_input_is_refused_before_the_models_load(tmp_path, capsys, monkeypatch, extra, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dup.yaml").write_text("a: segment the river\na: segment the ponds\n")
    raster = write_raster(tmp_path / "scene.tif", scene(40, 40))
    before = set(tmp_path.iterdir())
    code = main(["segment", str(raster), *extra, "--lvlm", "/no/such/model", "--json"])
    err = capsys.readouterr().err
    assert code == 1 and match in err, err
    assert set(tmp_path.iterdir()) == before


def _class_frame(masks: dict[str, list[np.ndarray]]):
    import geopandas as gpd

    from think2seg.geo.vectorize import pixel_polygons

    rows = [(name, polygon) for name, parts in masks.items() for mask in parts for polygon in pixel_polygons(mask)]
    return gpd.GeoDataFrame({"class": [n for n, _ in rows]}, geometry=[p for _, p in rows])


def test_class_overlaps_are_exact_and_fast_on_a_mask_riddled_with_holes():
    """Each overlap piece is where both classes' pixels are; a speckled disc (one polygon with
    thousands of holes, islands around it) against a thousand blobs takes seconds, not minutes."""
    import time

    import shapely

    from think2seg.geo.overlaps import class_overlaps

    rng = np.random.default_rng(7)
    rows, cols = np.indices((512, 512))
    disc = ((rows - 256) ** 2 + (cols - 256) ** 2 < 200**2) ^ (rng.random((512, 512)) < 0.08)
    blobs = rng.random((512, 512)) < 0.04  # thousands of specks, most inside the disc
    water_a, water_b = cols < 300, cols > 200  # one class asked twice: its own answers overlap
    frame = _class_frame({"speckle": [disc], "blobs": [blobs], "water": [water_a, water_b]})
    started = time.perf_counter()
    overlaps = class_overlaps(frame, crs=None)
    assert time.perf_counter() - started < 10.0
    assert shapely.is_valid(overlaps.geometry.to_numpy()).all() and overlaps["area_m2"].isna().all()  # no CRS
    water = water_a | water_b
    expected = {
        ("blobs", "speckle"): blobs & disc,
        ("speckle", "water"): disc & water,
        ("blobs", "water"): blobs & water,
    }
    for (a, b), both in expected.items():
        mine = overlaps[(overlaps["class_a"] == a) & (overlaps["class_b"] == b)]
        assert mine.geometry.area.sum() == pytest.approx(both.sum()), (a, b)  # pixels are 1 x 1
    assert not ((overlaps["class_a"] == "water") & (overlaps["class_b"] == "water")).any()
