import json

import pytest

from think2seg.think2seg_rs.answer import AnswerStatus, InstancePrompt, parse_answer

from conftest import FIXTURES

CASES = json.loads((FIXTURES / "answers" / "cases.json").read_text())


def _plain(instance: InstancePrompt) -> dict:
    return {
        "box_xyxy": list(instance.box_xyxy) if instance.box_xyxy else None,
        "points_xy": [list(p) for p in instance.points_xy] if instance.points_xy else None,
    }


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden(case):
    parsed = parse_answer(case["text"])
    assert parsed.status.value == case["status"]
    assert [_plain(i) for i in parsed.instances] == case["instances"]
    assert parsed.reasoning == case["reasoning"]
    assert parsed.raw_text == case["text"]
    assert bool(parsed.message) == (parsed.status is AnswerStatus.UNPARSEABLE)


def test_scaled_prompt_scales_x_and_y_separately():
    prompt = InstancePrompt((84.0, 42.0, 420.0, 840.0), ((84.0, 84.0), (0.0, 840.0)))
    scaled = prompt.scaled(2.0, 0.5)
    assert scaled.box_xyxy == (168.0, 21.0, 840.0, 420.0)
    assert scaled.points_xy == ((168.0, 42.0), (0.0, 420.0))


def test_never_raises_on_arbitrary_text():
    for text in [
        "",
        "[",
        "]",
        "[[[[",
        "<answer>[{]</answer>",
        '<answer>```json[{"bbox_2d": [1e999,0,5,5]}]```',
        "\x00\xff",
    ]:
        assert parse_answer(text).status in set(AnswerStatus)


@pytest.mark.parametrize(
    "text",
    [
        "<answer>" + "[" * 3000 + "</answer>",  # a decoding loop: nesting deeper than the recursion limit
        "<answer>" + "[" * 3000 + "]" * 3000 + "</answer>",
        '<answer>[{"bbox_2d": [' + "9" * 5000 + ", 0, 5, 5]}]</answer>",  # past Python's digit limit
    ],
    ids=["open-brackets", "balanced-brackets", "huge-number"],
)
def test_runaway_answers_are_unparseable_not_crashes(text):
    parsed = parse_answer(text)
    assert parsed.status is AnswerStatus.UNPARSEABLE and parsed.instances == ()
