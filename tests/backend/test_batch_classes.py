"""Batch runs with several classes: one pass over the tiles (one read, one model batch and one SAM
encoding per tile for all questions), a result per tile and question, resume and retry per question,
and files written before classes existed."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import numpy as np
import pyogrio
import pytest
from test_batch import OPTIONS, OPTIONS_KW, ThresholdSegmenter, segments, tiles, write_scene
from test_server import AUTH, make_client, wait_job

from think2seg.batch.options import BatchOptions
from think2seg.batch.runner import run_batch
from think2seg.classes import ClassQuestions
from think2seg.engine import Engine
from think2seg.errors import InputError
from think2seg.models.base import Generation
from think2seg.output.gpkg import with_gpkg_functions
from think2seg.testing.tiny_lvlm import question_for

from conftest import FIXTURES
from rasters import scene, write_raster

WEST, EAST, MIDDLE = "segment the west half", "segment the east half", "segment the middle"
ANSWERS = {  # boxes in the 840x840 view: the tile's west or east half, or its middle (half of each)
    MIDDLE: '<think>Middle.</think> <answer>[{"bbox_2d": [210, 0, 630, 840], "positive_points": [[400, 100]]}]</answer>',
    WEST: '<think>West.</think> <answer>[{"bbox_2d": [0, 0, 420, 840], "positive_points": [[100, 100], [200, 200]]}]</answer>',
    EAST: '<think>East.</think> <answer>[{"bbox_2d": [420, 0, 840, 840], "positive_points": [[600, 100], [700, 200]]}]</answer>',
}
CLASSES = [ClassQuestions("west", (WEST,)), ClassQuestions("east", (EAST,))]


class HalfPrompter:
    """Answers each question with its half of the tile; ``broken`` questions get an unparseable answer."""

    name = "half-prompter"

    def __init__(self, broken: tuple[str, ...] = ()) -> None:
        self.batches: list[list[str]] = []
        self.broken = broken

    def _answer(self, question: str) -> Generation:
        return Generation("no idea" if question in self.broken else ANSWERS[question])

    def generate(self, view, question, *, on_text=None) -> Generation:
        self.batches.append([question])
        return self._answer(question)

    def generate_batch(self, views, questions):
        questions = [questions] * len(views) if isinstance(questions, str) else list(questions)
        self.batches.append(questions)
        return [self._answer(q) for q in questions]


class BoxedThreshold(ThresholdSegmenter):
    """The red > 128 pixels inside each prompt's box: each class gets its own, known part of the scene."""

    def predict(self, image: np.ndarray, prompts) -> np.ndarray:
        height, width = image.shape[:2]
        rows, cols = np.arange(height)[:, None] + 0.5, np.arange(width)[None, :] + 0.5
        masks = []
        for prompt in prompts:
            x1, y1, x2, y2 = prompt.box_xyxy
            masks.append((image[..., 0] > 128) & (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2))
        return np.array(masks)


def engine(prompter: HalfPrompter | None = None, segmenter: BoxedThreshold | None = None) -> Engine:
    return Engine(prompter or HalfPrompter(), segmenter or BoxedThreshold())


def _shapes(frame) -> list[str]:
    return sorted(g.normalize().wkt for g in frame.geometry)


def test_classes_in_one_pass_equal_one_run_per_question(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif")
    prompter, segmenter = HalfPrompter(), BoxedThreshold()
    summary = run_batch(raster, CLASSES, tmp_path / "both.gpkg", models=engine(prompter, segmenter), options=OPTIONS)
    grid = len(tiles(tmp_path / "both.gpkg")) // 2
    assert summary.questions == 2 and summary.tiles_total == 2 * grid and summary.counts == {"ok": 2 * grid}
    assert segmenter.encoded == grid  # one SAM encoding per tile for both questions
    assert all(sorted(batch) == sorted([WEST, EAST]) for batch in prompter.batches)  # asked together
    both = segments(tmp_path / "both.gpkg")
    assert set(both["class"]) == {"west", "east"}
    for name, question in (("west", WEST), ("east", EAST)):
        alone = tmp_path / f"{name}.gpkg"
        run_batch(raster, question, alone, models=engine(), options=OPTIONS)
        mine = both[both["class"] == name]
        assert set(mine["question"]) == {question}
        assert _shapes(mine) == _shapes(segments(alone))
        assert mine["area_m2"].sum() == pytest.approx(segments(alone)["area_m2"].sum())
    west, east = (both[both["class"] == n].union_all() for n in ("west", "east"))
    assert west.intersection(east).area == pytest.approx(0)  # the halves share only edges here


def test_overlaps_between_classes_are_kept_and_measured_per_raster(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif")
    out = tmp_path / "out.gpkg"
    classes = [ClassQuestions("west", (WEST,)), ClassQuestions("middle", (MIDDLE,))]
    summary = run_batch(raster, classes, out, models=engine(), options=OPTIONS)
    both = segments(out)
    west, middle = (both[both["class"] == n].union_all() for n in ("west", "middle"))
    shared = west.intersection(middle).area
    assert shared > 0 and summary.class_polygons == both.groupby("class").size().to_dict()
    overlaps = pyogrio.read_dataframe(out, layer="class_overlaps")
    assert set(overlaps["source"]) == {str(raster)} and set(zip(overlaps["class_a"], overlaps["class_b"])) == {
        ("middle", "west")
    }
    assert overlaps["area_m2"].sum() == pytest.approx(shared) == pytest.approx(overlaps.geometry.area.sum())
    assert summary.class_overlaps == {("middle", "west"): pytest.approx(shared)}
    run_batch(raster, CLASSES, tmp_path / "apart.gpkg", models=engine(), options=OPTIONS)
    assert len(pyogrio.read_dataframe(tmp_path / "apart.gpkg", layer="class_overlaps")) == 0  # halves touch only


def test_every_layer_says_the_class_and_runs_has_a_row_per_question(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif")
    out = tmp_path / "out.gpkg"
    run_batch(raster, CLASSES, out, models=engine(), options=OPTIONS)
    runs = pyogrio.read_dataframe(out, layer="runs", read_geometry=False)
    assert runs["class"].tolist() == ["west", "east"] and runs["question"].tolist() == [WEST, EAST]
    assert json.loads(runs["params"][0])["classes"] == [["west", WEST], ["east", EAST]]
    for layer in ("tiles", "tile_pieces", "prompt_boxes", "prompt_points", "segments"):
        frame = pyogrio.read_dataframe(out, layer=layer)
        assert set(frame["class"]) == {"west", "east"}, layer
    boxes = pyogrio.read_dataframe(out, layer="prompt_boxes")
    assert set(boxes.loc[boxes["class"] == "east", "reasoning"]) == {"East."}


class InterruptingBoxed(BoxedThreshold):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def encode(self, image):
        if self.encoded == self.after:
            raise KeyboardInterrupt
        return super().encode(image)


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif")
    run_batch(raster, CLASSES, tmp_path / "whole.gpkg", models=engine(), options=OPTIONS)
    out = tmp_path / "out.gpkg"
    with pytest.raises(KeyboardInterrupt):
        run_batch(raster, CLASSES, out, models=engine(segmenter=InterruptingBoxed(after=4)), options=OPTIONS)
    assert len(tiles(out)) == 8  # both questions of the 4 finished tiles
    segmenter = BoxedThreshold()
    resumed = BatchOptions(**OPTIONS_KW, resume=True)
    summary = run_batch(raster, CLASSES, out, models=engine(segmenter=segmenter), options=resumed)
    assert summary.tiles_before == 8 and segmenter.encoded == len(tiles(out)) // 2 - 4
    for name in ("west", "east"):
        got, want = (segments(p) for p in (out, tmp_path / "whole.gpkg"))
        assert _shapes(got[got["class"] == name]) == _shapes(want[want["class"] == name])


def test_retry_failed_asks_only_the_questions_that_failed(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif")
    out = tmp_path / "out.gpkg"
    first = run_batch(raster, CLASSES, out, models=engine(HalfPrompter(broken=(EAST,))), options=OPTIONS)
    grid = first.tiles_total // 2
    assert first.counts == {"ok": grid, "unparseable": grid}
    prompter = HalfPrompter()
    retried = BatchOptions(**OPTIONS_KW, retry_failed=True)
    summary = run_batch(raster, CLASSES, out, models=engine(prompter), options=retried)
    assert summary.counts == {"ok": grid} and summary.tiles_before == grid
    assert {q for batch in prompter.batches for q in batch} == {EAST}  # west was not asked again
    statuses = tiles(out).groupby("class")["status"].agg(set).to_dict()
    assert statuses == {"west": {"ok"}, "east": {"ok"}}
    assert set(segments(out)["class"]) == {"west", "east"}


def test_changed_classes_are_refused_on_resume(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif")
    out = tmp_path / "out.gpkg"
    run_batch(raster, CLASSES, out, models=engine(), options=OPTIONS)
    with pytest.raises(InputError, match="classes"):
        run_batch(raster, CLASSES[:1], out, models=engine(), options=BatchOptions(**OPTIONS_KW, resume=True))


def test_a_class_asked_twice_is_refused_before_any_work(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif")
    with pytest.raises(InputError, match="twice"):
        run_batch(raster, [CLASSES[0], CLASSES[0]], tmp_path / "out.gpkg", models=engine(), options=OPTIONS)
    assert not (tmp_path / "out.gpkg").exists()


def test_a_run_stored_before_classes_resumes_with_its_question_as_class(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif")
    out = tmp_path / "out.gpkg"
    with pytest.raises(KeyboardInterrupt):
        run_batch(raster, WEST, out, models=engine(segmenter=InterruptingBoxed(after=5)), options=OPTIONS)
    with closing(sqlite3.connect(out)) as connection, connection:  # as an older think2seg wrote it
        for layer, columns in {
            "tiles": ("class", "question"),
            "tile_pieces": ("class", "question"),
            "prompt_boxes": ("class",),
            "prompt_points": ("class",),
            "runs": ("class",),
        }.items():
            for column in columns:
                connection.execute(f'ALTER TABLE "{layer}" DROP COLUMN "{column}"')
    summary = run_batch(raster, WEST, out, models=engine(), options=BatchOptions(**OPTIONS_KW, resume=True))
    assert summary.tiles_before == 5
    done = tiles(out)
    assert set(done["class"]) == {WEST} and set(done["question"]) == {WEST} and done["tile_id"].is_unique
    alone = tmp_path / "alone.gpkg"
    run_batch(raster, WEST, alone, models=engine(), options=OPTIONS)
    assert _shapes(segments(out)) == _shapes(segments(alone)) and set(segments(out)["class"]) == {WEST}


def test_gpkg_functions_let_an_update_through_the_rtree_triggers(tmp_path):
    out = tmp_path / "out.gpkg"
    raster, _ = write_scene(tmp_path / "scene.tif")
    run_batch(raster, WEST, out, models=engine(), options=OPTIONS)
    with closing(with_gpkg_functions(sqlite3.connect(out))) as connection, connection:
        blob, message = connection.execute("SELECT geom, message FROM tiles LIMIT 1").fetchone()
        connection.execute("UPDATE tiles SET message = 'checked'")  # prepares GDAL's triggers
        (empty, *bounds) = connection.execute(
            "SELECT ST_IsEmpty(geom), ST_MinX(geom), ST_MinY(geom), ST_MaxX(geom), ST_MaxY(geom) FROM tiles LIMIT 1"
        ).fetchone()
    first = tiles(out).sort_index().geometry.iloc[0]
    assert empty == 0 and bounds == pytest.approx(list(first.bounds))
    assert set(tiles(out)["message"]) == {"checked"}


# --- the CLI (tiny models) and the HTTP API -------------------------------------------------------


@pytest.mark.slow
def test_cli_batch_with_a_classes_file(cli, tmp_path):
    raster = write_raster(tmp_path / "scene.tif", scene(160, 160))
    classes = tmp_path / "classes.yaml"
    classes.write_text(f"river: {question_for('river')}\nponds: {question_for('ponds')}\n")
    out = tmp_path / "out.gpkg"
    code, stdout, err = cli(
        "batch", raster, "--classes", classes, "-o", out, "--tile-size-px", "128", "--overlap-px", "16", "--quiet"
    )
    assert code == 0, err
    assert "4 tiles x 2 questions = 8 results" in stdout and "segmented now 8 (ok 8)" in stdout
    runs = pyogrio.read_dataframe(out, layer="runs", read_geometry=False)
    assert runs["class"].tolist() == ["river", "ponds"]
    done = tiles(out)
    assert sorted(done["class"].value_counts().to_dict().items()) == [("ponds", 4), ("river", 4)]
    assert set(segments(out)["class"]) <= {"river", "ponds"}
    code, _, err = cli("batch", raster, "segment the river", "--question", "segment x", "-o", tmp_path / "b.gpkg")
    assert code == 1 and "say what to segment once" in err


def test_http_job_with_classes_and_repeated_keys_refused(tmp_path):
    raster, _ = write_scene(tmp_path / "scene.tif")
    with make_client(tmp_path, engine()) as client:
        request = {
            "raster_path": str(raster),
            "output_path": str(tmp_path / "out.gpkg"),
            "classes": {"west": WEST, "east": EAST},
            **OPTIONS_KW,
        }
        started = client.post("/v1/jobs", json=request, headers=AUTH)
        assert started.status_code == 202, started.text
        status = wait_job(client, started.json()["id"])
        assert status["state"] == "done" and status["tiles_done"] == status["tiles_total"] == 24, status
        assert status["question"] == "2 classes: west, east" and status["classes"] == ["west", "east"]
        assert status["message"].endswith("from 12 tiles x 2 questions = 24 results"), status["message"]
        golden = json.loads((FIXTURES / "api" / "job_classes_status.reply.json").read_text())
        assert set(status) == set(golden) and golden["classes"]
        assert set(segments(tmp_path / "out.gpkg")["class"]) == {"west", "east"}
        repeated = f'{{"raster_path": "{raster}", "output_path": "x.gpkg", "classes": {{"a": "q", "a": "r"}}}}'
        for route in ("/v1/jobs", "/v1/segment"):
            reply = client.post(route, content=repeated, headers={**AUTH, "content-type": "application/json"})
            assert reply.status_code == 422, reply.text
            assert reply.json()["error"]["code"] == "invalid_input" and "'a' twice" in reply.json()["error"]["message"]
        both = client.post("/v1/jobs", json={**request, "question": "q", "overwrite": True}, headers=AUTH)
        assert both.status_code == 422 and "question or classes" in both.json()["error"]["message"]
