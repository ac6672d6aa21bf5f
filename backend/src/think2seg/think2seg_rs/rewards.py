"""The answer checks of the Think2Seg-RS training reward: the *format* and *valid JSON* terms.

The paper's reward is ``2 × IoU + 1 × valid JSON + 1 × format`` (the IoU term needs SAM and the
ground truth: :mod:`think2seg.train.reward`). The two answer terms follow the rules the released
checkpoints were trained with (their observed behaviour; no code of theirs is copied):

- *format*: the whole output is ``<think>…</think>``, optional whitespace, ``<answer>…</answer>``,
  nothing before or after;
- *valid JSON*: the answer part (:func:`~think2seg.think2seg_rs.reference.answer_part`) holds a
  fenced ````` ```json … ``` ````` block; from its first ``[`` to its last ``]`` it reads as JSON
  (``json.loads``, falling back to ``json-repair``) into a list, and every item is an object with
  exactly two ``positive_points`` (pairs of numbers), a ``bbox_2d`` of 4 values if it has one, and
  no ``negative_points``. ``[]`` is valid: it is how the model says there is no target.
"""

from __future__ import annotations

import re

from think2seg.think2seg_rs.reference import AnswerRejected, answer_part, check_item, list_span, load_json

_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_JSON_FENCE = re.compile(r"```json\s*(.*?)\s*```", re.DOTALL)


def format_valid(text: str) -> bool:
    """Whether the model's whole output is exactly a think block then an answer block."""
    return _FORMAT.fullmatch(text) is not None


def json_valid(text: str) -> bool:
    """Whether the model's whole output holds a well-formed answer list (see the module's rules)."""
    fence = _JSON_FENCE.search(answer_part(text))
    if fence is None:
        return False
    try:
        value = load_json(list_span(fence.group(1)))
        if not isinstance(value, list):
            return False
        for index, item in enumerate(value):
            check_item(index, item)
            if "positive_points" not in item:
                return False
    except AnswerRejected:
        return False
    return True
