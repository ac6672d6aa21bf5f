import numpy as np
import pytest
from PIL import Image

from think2seg.errors import QuestionError
from think2seg.think2seg_rs.prompt import (
    MAX_QUESTION_CHARS,
    SYSTEM_PROMPT,
    USER_TEMPLATE,
    VIEW_SIZE_PX,
    build_messages,
    make_view,
    user_text,
    validate_question,
)

from conftest import FIXTURES


def test_prompt_text_is_verbatim():
    assert SYSTEM_PROMPT == (FIXTURES / "prompt" / "system.txt").read_text()
    assert USER_TEMPLATE == (FIXTURES / "prompt" / "user_template.txt").read_text()
    assert "1.  `bbox_2d`" in USER_TEMPLATE and "2.  `positive_points`" in USER_TEMPLATE
    assert "</think> \n<answer>" in USER_TEMPLATE


def test_question_replaced_literally_even_with_braces():
    text = user_text("the {odd} field")
    assert text.startswith('Please find "the {odd} field", identify the target.')
    assert '"bbox_2d": [310,360,567,586]' in text


def test_messages_are_system_then_image_then_text():
    view = Image.new("RGB", (VIEW_SIZE_PX, VIEW_SIZE_PX))
    system, user = build_messages(view, "segment the river")
    assert system["content"][0]["text"] == SYSTEM_PROMPT
    assert user["content"][0]["image"] is view
    assert user["content"][1]["text"] == user_text("segment the river")


def test_view_is_840_square_lanczos_without_keeping_aspect():
    pixels = np.random.default_rng(0).integers(0, 255, (300, 1000, 3), dtype=np.uint8)
    view = make_view(pixels)
    assert view.size == (840, 840)
    expected = Image.fromarray(pixels).resize((840, 840), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(view), np.asarray(expected))


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_empty_question_refused(question):
    with pytest.raises(QuestionError, match="empty"):
        validate_question(question)


def test_long_question_refused_with_limit():
    with pytest.raises(QuestionError, match=str(MAX_QUESTION_CHARS)):
        validate_question("x" * 5000)


def test_question_stripped():
    assert validate_question("  segment the river \n") == "segment the river"
