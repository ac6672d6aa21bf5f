"""/v1/segment with several classes, scores and outlines: one model batch, a class per polygon,
overlaps reported, bad classes refused with the envelope."""

from __future__ import annotations

import pytest
from test_classes import QuestionPrompter
from test_server import AUTH, make_client

from think2seg.engine import Engine
from think2seg.server.schemas import SegmentReply

from conftest import ScoredBoxSegmenter
from rasters import scene, write_raster

CLASSES = {"buildings": "segment the buildings", "water": "segment the water", "roads": "segment the roads"}


@pytest.fixture
def served(tmp_path):
    prompter, segmenter = QuestionPrompter(), ScoredBoxSegmenter((0.9, 0.4, 0.7))
    raster = write_raster(tmp_path / "scene.tif", scene(84, 84))
    with make_client(tmp_path, Engine(prompter, segmenter)) as client:
        yield client, raster, prompter


def test_classes_in_one_request_one_batch_with_a_class_on_every_feature(served):
    client, raster, prompter = served
    reply = client.post("/v1/segment", json={"raster_path": str(raster), "classes": CLASSES}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    body = SegmentReply.model_validate(reply.json()).model_dump()
    assert prompter.batches == [list(CLASSES.values())]
    assert sorted(f["properties"]["class"] for f in body["features"]) == ["buildings", "roads", "water"]
    assert {f["properties"]["class"] for f in body["prompts"]["features"]} == set(CLASSES)
    assert [c["name"] for c in body["classes"]] == list(CLASSES)
    assert [c["reasoning"] for c in body["classes"]] == ["Roofs.", "A pond.", "A road."]
    (overlap,) = body["class_overlaps"]
    assert (overlap["class_a"], overlap["class_b"]) == ("buildings", "water")
    assert overlap["area_m2"] == pytest.approx(100 * 0.25)
    assert all(f["properties"]["score"] == pytest.approx(0.9) for f in body["features"])  # each its first instance


def test_one_question_reply_lists_itself_as_its_class_and_min_score_filters(served):
    client, raster, _ = served
    request = {"raster_path": str(raster), "question": "segment the water", "min_score": 0.95}
    body = client.post("/v1/segment", json=request, headers=AUTH).json()
    assert body["classes"][0]["name"] == "segment the water" and body["class_overlaps"] == []
    assert body["features"] == [] and body["classes"][0]["polygons"] == 0  # its one instance scored 0.9
    body = client.post("/v1/segment", json={**request, "min_score": 0.5, "outline": "regularize"}, headers=AUTH).json()
    assert len(body["features"]) == 1 and body["features"][0]["properties"]["score"] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"classes": {"a": "segment x"}, "question": "segment y"}, "one of a question, classes"),
        ({"classes": {"a": " "}}, "empty question"),
        ({"classes": {}}, "classes"),
        ({"question": "q", "outline": "wobbly"}, "outline"),
        ({"question": "q", "min_score": 2}, "min_score must be a number from 0 to 1"),
    ],
)
def test_bad_classes_and_options_get_the_envelope(served, extra, match):
    client, raster, _ = served
    reply = client.post("/v1/segment", json={"raster_path": str(raster), **extra}, headers=AUTH)
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "invalid_input"
    assert match in reply.json()["error"]["message"], reply.json()
