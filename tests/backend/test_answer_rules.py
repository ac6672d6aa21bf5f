"""The answer parser, rule by rule, in both modes.

Each table row is one answer text with its expected outcome in ``reference`` mode (the verdict and
instances of the reference test-time parser of Think2Seg-RS, values as written) and in ``product``
mode (the default). An outcome is a status and the instances as ``(box_xyxy, points_xy)``.
"""

from __future__ import annotations

import pytest

from think2seg import parse_answer
from think2seg.errors import InputError
from think2seg.think2seg_rs.answer import AnswerStatus, InstancePrompt, ParsedAnswer, numeric_prompts

OK, EMPTY, BAD = "ok", "no_target", "unparseable"
BOX = (10, 20, 110, 220)
POINTS = ((30, 40), (50, 60))
UNPARSEABLE = (BAD, [])


def answer(items: str) -> str:
    """An answer laid out as the model writes it, around the JSON list ``items``."""
    return f"<think>Two ponds.</think> <answer>```json{items}```</answer>"


def ok(*instances: tuple) -> tuple[str, list]:
    return OK, list(instances)


def cases(*rows: tuple) -> list:
    """Rows (name, text, reference outcome, product outcome) as one test per mode."""
    return [
        pytest.param(text, mode, expected, id=f"{mode}-{name}")
        for name, text, reference, product in rows
        for mode, expected in (("reference", reference), ("product", product))
    ]


def check(text: str, mode: str, expected: tuple[str, list]) -> None:
    parsed = parse_answer(text, mode="reference") if mode == "reference" else parse_answer(text)
    status, instances = expected
    assert parsed.status.value == status, parsed.message
    assert [(i.box_xyxy, i.points_xy) for i in parsed.instances] == instances
    assert bool(parsed.message) == (parsed.status is AnswerStatus.UNPARSEABLE)
    assert parsed.raw_text == text


TAGS = cases(
    (
        "inside-the-tags",
        '<think>I see [a pond].</think> <answer>```json[{"bbox_2d": [10, 20, 110, 220]}]```</answer> [done]',
        ok((BOX, None)),
        ok((BOX, None)),
    ),
    ("no-tags-whole-text", '[{"bbox_2d": [10, 20, 110, 220]}]', ok((BOX, None)), ok((BOX, None))),
    (  # a product fix: this was read as an empty answer part (unparseable)
        "tags-in-the-wrong-order-whole-text",
        '</answer> [{"bbox_2d": [10, 20, 110, 220]}] <answer>',
        ok((BOX, None)),
        ok((BOX, None)),
    ),
    (
        "first-opening-and-first-closing-after-it",
        '<answer>[{"bbox_2d": [10, 20, 110, 220]}]</answer> <answer>[{"bbox_2d": [500, 500, 600, 600]}]</answer>',
        ok((BOX, None)),
        ok((BOX, None)),
    ),
    (
        "a-closing-tag-before-the-pair",
        '</answer> <answer>[{"bbox_2d": [10, 20, 110, 220]}]</answer> [{"bbox_2d": [1, 2, 3, 4]}]',
        ok((BOX, None)),
        ok((BOX, None)),
    ),
    (
        "tags-are-case-sensitive",
        '<Answer>[{"bbox_2d": [10, 20, 110, 220]}]</Answer>',
        ok((BOX, None)),
        ok((BOX, None)),
    ),
    (  # product: a cut-off answer is read from <answer> on; the reference reads the whole text
        "cut-off-answer",
        '<think>Two [ponds].</think> <answer>```json[{"bbox_2d": [10, 20, 110, 220]}, {"bbox_2d": [300, 3',
        UNPARSEABLE,
        ok((BOX, None)),
    ),
)


@pytest.mark.parametrize(("text", "mode", "expected"), TAGS)
def test_answer_part(text, mode, expected):
    check(text, mode, expected)


SPAN = cases(
    (  # a product fix: this was an empty answer (no target)
        "brackets-out-of-order",
        "<answer>] nothing here [</answer>",
        UNPARSEABLE,
        UNPARSEABLE,
    ),
    ("a-lone-opening-bracket-is-empty", "<answer>[</answer>", (EMPTY, []), (EMPTY, [])),
    (  # a product fix: the prose brackets hid the fenced list
        "prose-brackets-before-a-fenced-list",
        '<answer>[confidence: high] ```json[{"bbox_2d": [10, 20, 110, 220]}]```</answer>',
        UNPARSEABLE,
        ok((BOX, None)),
    ),
    (  # a product fix, the same one
        "prose-brackets-after-a-fenced-list",
        '<answer>```json[{"bbox_2d": [10, 20, 110, 220]}]``` [confidence: high]</answer>',
        UNPARSEABLE,
        ok((BOX, None)),
    ),
    (
        "prose-brackets-and-no-fence",
        '<answer>[confidence: high] [{"bbox_2d": [10, 20, 110, 220]}]</answer>',
        UNPARSEABLE,
        UNPARSEABLE,
    ),
    ("no-brackets", "<answer>I cannot tell.</answer>", UNPARSEABLE, UNPARSEABLE),
    (
        "cut-off-inside-the-list",
        '<answer>```json[{"positive_points": [[30, 40], [50, 60]], "bbox_2d": [10, 2',
        ok((None, POINTS)),
        ok((None, POINTS)),
    ),
)


@pytest.mark.parametrize(("text", "mode", "expected"), SPAN)
def test_list_span(text, mode, expected):
    check(text, mode, expected)


JSON = cases(
    ("strict-json", answer('[{"bbox_2d": [10, 20, 110, 220]}]'), ok((BOX, None)), ok((BOX, None))),
    ("repaired-single-quotes", answer("[{'bbox_2d': [10, 20, 110, 220]}]"), ok((BOX, None)), ok((BOX, None))),
    ("repaired-trailing-comma", answer('[{"bbox_2d": [10, 20, 110, 220],}]'), ok((BOX, None)), ok((BOX, None))),
    ("an-object-not-a-list", '<answer>{"label": "pond"}</answer>', UNPARSEABLE, UNPARSEABLE),
    ("a-list-of-numbers", answer("[10, 20, 110, 220]"), UNPARSEABLE, UNPARSEABLE),
    ("empty-list-is-no-target", answer("[]"), (EMPTY, []), (EMPTY, [])),
    ("nesting-too-deep", "<answer>" + "[" * 3000 + "]" * 3000 + "</answer>", UNPARSEABLE, UNPARSEABLE),
    ("too-many-digits", answer('[{"bbox_2d": [' + "9" * 5000 + ", 0, 5, 5]}]"), UNPARSEABLE, UNPARSEABLE),
    (  # product: non-finite numbers are refused
        "infinity-literal",
        answer('[{"bbox_2d": [0, 0, Infinity, 220]}]'),
        ok(((0, 0, float("inf"), 220), None)),
        UNPARSEABLE,
    ),
)


@pytest.mark.parametrize(("text", "mode", "expected"), JSON)
def test_json(text, mode, expected):
    check(text, mode, expected)


ITEMS = cases(
    (
        "box-and-points",
        answer('[{"bbox_2d": [10, 20, 110, 220], "positive_points": [[30, 40], [50, 60]]}]'),
        ok((BOX, POINTS)),
        ok((BOX, POINTS)),
    ),
    ("points-only", answer('[{"positive_points": [[30, 40], [50, 60]]}]'), ok((None, POINTS)), ok((None, POINTS))),
    (  # product: an invalid item is dropped, the others kept
        "an-item-that-is-not-an-object",
        answer('[{"bbox_2d": [10, 20, 110, 220]}, 5]'),
        UNPARSEABLE,
        ok((BOX, None)),
    ),
    (
        "an-item-without-box-or-points",
        answer('[{"bbox_2d": [10, 20, 110, 220]}, {"label": "pond"}]'),
        UNPARSEABLE,
        ok((BOX, None)),
    ),
    (
        "the-first-item-fails",
        answer('[{"label": "pond"}, {"bbox_2d": [10, 20, 110, 220]}]'),
        UNPARSEABLE,
        ok((BOX, None)),
    ),
    ("only-invalid-items", answer('[{"label": "pond"}, 5]'), UNPARSEABLE, UNPARSEABLE),
    (  # a null value counts as present, and is invalid
        "null-box",
        answer('[{"bbox_2d": null, "positive_points": [[30, 40], [50, 60]]}]'),
        UNPARSEABLE,
        ok((None, POINTS)),
    ),
    (
        "null-points",
        answer('[{"bbox_2d": [10, 20, 110, 220], "positive_points": null}]'),
        UNPARSEABLE,
        ok((BOX, None)),
    ),
    (
        "box-of-three",
        answer('[{"bbox_2d": [10, 20, 110], "positive_points": [[30, 40], [50, 60]]}]'),
        UNPARSEABLE,
        ok((None, POINTS)),
    ),
    (  # reference: the box's item types are unchecked
        "box-of-strings",
        answer('[{"bbox_2d": ["10", "20", "110", "220"]}]'),
        ok((("10", "20", "110", "220"), None)),
        UNPARSEABLE,
    ),
    (
        "box-of-anything",
        answer('[{"bbox_2d": [null, "a", [1], {}]}]'),
        ok(((None, "a", [1], {}), None)),
        UNPARSEABLE,
    ),
    ("box-of-bools", answer('[{"bbox_2d": [true, 20, 110, 220]}]'), ok(((True, 20, 110, 220), None)), UNPARSEABLE),
    (  # product: a number past the float range is refused (it raised OverflowError before)
        "box-number-past-float-range",
        answer('[{"bbox_2d": [1' + "0" * 400 + ", 20, 110, 220]}]"),
        ok(((10**400, 20, 110, 220), None)),
        UNPARSEABLE,
    ),
    (
        "three-points",
        answer('[{"bbox_2d": [10, 20, 110, 220], "positive_points": [[30, 40], [50, 60], [70, 80]]}]'),
        UNPARSEABLE,
        ok((BOX, None)),
    ),
    (
        "one-point",
        answer('[{"bbox_2d": [10, 20, 110, 220], "positive_points": [[30, 40]]}]'),
        UNPARSEABLE,
        ok((BOX, None)),
    ),
    (
        "no-points",
        answer('[{"bbox_2d": [10, 20, 110, 220], "positive_points": []}]'),
        UNPARSEABLE,
        ok((BOX, None)),
    ),
    (
        "a-point-of-three-values",
        answer('[{"bbox_2d": [10, 20, 110, 220], "positive_points": [[30, 40, 1], [50, 60]]}]'),
        UNPARSEABLE,
        ok((BOX, None)),
    ),
    (  # reference: any value float() accepts
        "point-values-float-accepts",
        answer('[{"positive_points": [["30", " 4e1 "], [true, 60.5]]}]'),
        ok((None, (("30", " 4e1 "), (True, 60.5)))),
        UNPARSEABLE,
    ),
    (
        "a-point-value-float-refuses",
        answer('[{"bbox_2d": [10, 20, 110, 220], "positive_points": [["a", 40], [50, 60]]}]'),
        UNPARSEABLE,
        ok((BOX, None)),
    ),
    (
        "a-point-value-past-float-range",
        answer('[{"positive_points": [[1' + "0" * 400 + ", 40], [50, 60]]}]"),
        UNPARSEABLE,
        UNPARSEABLE,
    ),
)


@pytest.mark.parametrize(("text", "mode", "expected"), ITEMS)
def test_items(text, mode, expected):
    check(text, mode, expected)


NEGATIVE = cases(
    (
        "negative-points-empty",
        answer('[{"bbox_2d": [10, 20, 110, 220], "negative_points": []}]'),
        UNPARSEABLE,
        UNPARSEABLE,
    ),
    (
        "negative-points-given",
        answer('[{"bbox_2d": [10, 20, 110, 220], "negative_points": [[5, 5]]}]'),
        UNPARSEABLE,
        UNPARSEABLE,
    ),
    (
        "negative-points-empty-string",
        answer('[{"bbox_2d": [10, 20, 110, 220], "negative_points": ""}]'),
        UNPARSEABLE,
        UNPARSEABLE,
    ),
    (
        "negative-points-on-a-later-item",
        answer('[{"bbox_2d": [10, 20, 110, 220]}, {"bbox_2d": [500, 500, 600, 600], "negative_points": [[5, 5]]}]'),
        UNPARSEABLE,
        UNPARSEABLE,
    ),
    (  # a product fix: null was a rejection
        "negative-points-null",
        answer('[{"bbox_2d": [10, 20, 110, 220], "negative_points": null}]'),
        ok((BOX, None)),
        ok((BOX, None)),
    ),
    (  # a product fix: Python's None (read by the repair parser as null) was a rejection
        "negative-points-python-none",
        answer("[{'bbox_2d': [10, 20, 110, 220], 'negative_points': None}]"),
        ok((BOX, None)),
        ok((BOX, None)),
    ),
)


@pytest.mark.parametrize(("text", "mode", "expected"), NEGATIVE)
def test_negative_points(text, mode, expected):
    check(text, mode, expected)


A, B, C = (0, 0, 100, 100), (0, 40, 100, 100), (0, 50, 100, 95)  # IoU(A, B) 0.6, (A, C) 0.45, (B, C) 0.75

DUPLICATES = cases(
    (
        "a-later-smaller-duplicate-dropped",
        answer('[{"bbox_2d": [0, 0, 100, 100]}, {"bbox_2d": [0, 0, 90, 100]}]'),
        ok((A, None)),
        ok((A, None)),
    ),
    (
        "the-larger-box-kept-where-it-stands",
        answer('[{"bbox_2d": [0, 0, 90, 100]}, {"bbox_2d": [0, 0, 100, 100]}]'),
        ok((A, None)),
        ok((A, None)),
    ),
    (
        "iou-of-exactly-one-half-kept",
        answer('[{"bbox_2d": [0, 0, 100, 100]}, {"bbox_2d": [0, 0, 50, 100]}]'),
        ok((A, None), ((0, 0, 50, 100), None)),
        ok((A, None), ((0, 0, 50, 100), None)),
    ),
    (
        "equal-areas-the-first-kept",
        answer('[{"bbox_2d": [10, 0, 110, 100]}, {"bbox_2d": [0, 0, 100, 100]}]'),
        ok(((10, 0, 110, 100), None)),
        ok(((10, 0, 110, 100), None)),
    ),
    (
        "a-dropped-box-drops-nothing",
        answer('[{"bbox_2d": [0, 50, 100, 95]}, {"bbox_2d": [0, 0, 100, 100]}, {"bbox_2d": [0, 40, 100, 100]}]'),
        ok((C, None), (A, None)),
        ok((C, None), (A, None)),
    ),
    (
        "items-without-a-box-are-kept",
        answer(
            '[{"bbox_2d": [0, 0, 100, 100]}, {"positive_points": [[30, 40], [50, 60]]}, {"bbox_2d": [0, 0, 100, 90]}]'
        ),
        ok((A, None), (None, POINTS)),
        ok((A, None), (None, POINTS)),
    ),
    (  # reference: raw corners, so these two do not overlap; product orders the corners first
        "unordered-corners",
        answer('[{"bbox_2d": [100, 100, 0, 0]}, {"bbox_2d": [0, 0, 100, 100]}]'),
        ok(((100, 100, 0, 0), None), (A, None)),
        ok((A, None)),
    ),
    (  # reference: a union <= 0 is an IoU of 0; product drops boxes of no area
        "boxes-of-no-area",
        answer('[{"bbox_2d": [0, 0, 0, 0]}, {"bbox_2d": [0, 0, 0, 0]}]'),
        ok(((0, 0, 0, 0), None), ((0, 0, 0, 0), None)),
        UNPARSEABLE,
    ),
    (  # reference: the area of a box of strings raises once the answer has 2 items
        "a-box-of-strings-among-two-items",
        answer('[{"bbox_2d": ["10", "20", "110", "220"]}, {"positive_points": [[30, 40], [50, 60]]}]'),
        UNPARSEABLE,
        ok((None, POINTS)),
    ),
    (
        "boxes-of-bools",
        answer('[{"bbox_2d": [true, false, true, true]}, {"bbox_2d": [false, false, true, true]}]'),
        UNPARSEABLE,
        UNPARSEABLE,
    ),
)


@pytest.mark.parametrize(("text", "mode", "expected"), DUPLICATES)
def test_duplicate_boxes(text, mode, expected):
    check(text, mode, expected)


VALUES = cases(
    (
        "outside-the-view",
        answer('[{"bbox_2d": [-20, 30, 900, 500], "positive_points": [[-5, 10], [850, 900]]}]'),
        ok(((-20, 30, 900, 500), ((-5, 10), (850, 900)))),
        ok(((0, 30, 840, 500), ((0, 10), (840, 840)))),
    ),
    (
        "reversed-corners",
        answer('[{"bbox_2d": [110, 220, 10, 20]}]'),
        ok(((110, 220, 10, 20), None)),
        ok((BOX, None)),
    ),
    (
        "a-box-entirely-outside",
        answer('[{"bbox_2d": [900, 900, 1000, 1000], "positive_points": [[950, 950], [960, 960]]}]'),
        ok(((900, 900, 1000, 1000), ((950, 950), (960, 960)))),
        ok((None, ((840, 840), (840, 840)))),
    ),
    (
        "fractional",
        answer('[{"bbox_2d": [10.5, 20.25, 110, 220]}]'),
        ok(((10.5, 20.25, 110, 220), None)),
        ok(((10.5, 20.25, 110, 220), None)),
    ),
)


@pytest.mark.parametrize(("text", "mode", "expected"), VALUES)
def test_values(text, mode, expected):
    check(text, mode, expected)


def test_reference_values_keep_their_types():
    parsed = parse_answer(
        answer('[{"bbox_2d": [10, true, "110", 2.5], "positive_points": [["3", 4], [5, 6]]}]'), mode="reference"
    )
    (instance,) = parsed.instances
    assert [type(v) for v in instance.box_xyxy] == [int, bool, str, float]
    assert [type(v) for v in instance.points_xy[0]] == [str, int]


def test_mode_is_keyword_only_and_product_by_default():
    text = answer('[{"bbox_2d": [110, 220, 10, 20]}]')
    assert parse_answer(text, mode="product") == parse_answer(text)
    with pytest.raises(TypeError):
        parse_answer(text, 840, "reference")  # type: ignore[misc]
    with pytest.raises(InputError, match="product or reference"):
        parse_answer(text, mode="paper")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    ["", "[", "]", "<answer>[{]</answer>", "\x00\xff", "] [", "</answer><answer>", "[" * 3000, answer("[{" * 2000)],
)
def test_reference_mode_never_raises(text):
    assert parse_answer(text, mode="reference").status in set(AnswerStatus)


# --- numbers for the segmenter ----------------------------------------------------------------------


def _parsed(*instances: InstancePrompt) -> ParsedAnswer:
    return ParsedAnswer(AnswerStatus.OK, "", instances, "text")


def test_numeric_prompts_turn_what_float_accepts_into_floats():
    parsed = _parsed(InstancePrompt(("10", True, 110, 220.5), ((" 3 ", "4e1"), (5, 6))))  # type: ignore[arg-type]
    (instance,) = numeric_prompts(parsed).instances
    assert instance.box_xyxy == (10.0, 1.0, 110.0, 220.5) and all(type(v) is float for v in instance.box_xyxy)
    assert instance.points_xy == ((3.0, 40.0), (5.0, 6.0))
    assert numeric_prompts(parsed).status is AnswerStatus.OK


@pytest.mark.parametrize(
    "instance",
    [
        InstancePrompt(("a", 20, 110, 220), None),  # type: ignore[arg-type]
        InstancePrompt((None, [1], {}, 220), None),  # type: ignore[arg-type]
        InstancePrompt((0, 0, float("inf"), 220), None),
        InstancePrompt((10**400, 20, 110, 220), None),
        InstancePrompt(None, (("nan", 4), (5, 6))),  # type: ignore[arg-type]
    ],
    ids=["string", "not-scalars", "infinite", "past-float-range", "nan-point"],
)
def test_numeric_prompts_make_an_answer_with_other_values_unparseable(instance):
    parsed = numeric_prompts(_parsed(InstancePrompt(BOX, POINTS), instance))
    assert parsed.status is AnswerStatus.UNPARSEABLE and parsed.instances == () and "number" in parsed.message
    assert parsed.raw_text == "text"


def test_numeric_prompts_leave_product_answers_and_failures_alone():
    product = parse_answer(answer('[{"bbox_2d": [10, 20, 110, 220], "positive_points": [[30, 40], [50, 60]]}]'))
    assert numeric_prompts(product) == product
    failed = parse_answer("<answer>no</answer>", mode="reference")
    assert numeric_prompts(failed) == failed
