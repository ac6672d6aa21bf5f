"""The rules of the reference test-time answer parser of Think2Seg-RS, reproduced exactly.

The paper's numbers were computed with ``parse_sam_json_test`` of the Think2Seg-RS code; the
``paper`` evaluation protocol needs its verdicts, so :func:`reference_items` follows its rules,
quirks included (the observed behaviour; no code of it is copied here):

1. the text between the first ``<answer>`` and the first ``</answer>`` after it (stripped), when
   both tags occur in that order; otherwise the whole text;
2. from the first ``[`` to the last ``]`` when the text holds both (empty when the last ``]``
   comes before the first ``[``); otherwise the text as it is;
3. ``json.loads``; on a JSON syntax error, the ``json-repair`` parser; any other error rejects;
4. the value must be a list (``[]`` is a valid empty answer) and every item must pass, or the
   whole answer is rejected: a JSON object with a ``bbox_2d`` and/or a ``positive_points`` key (a
   null value counts as present); a ``bbox_2d`` is a list of exactly 4 items of any type;
   ``positive_points`` a list of exactly 2 lists of 2 values that ``float()`` accepts; a
   ``negative_points`` that is not null (even ``[]``) rejects;
5. with at least 2 items, the signed area ``(x2 - x1) * (y2 - y1)`` of every box (an error, e.g.
   on strings, rejects the answer); with at least 2 boxes, greedy suppression: boxes by area,
   largest first (stable), each kept box drops the later ones whose IoU with it is > 0.5, the IoU
   computed with numpy on the raw corners (intersection clamped at 0; 0 where the union is <= 0);
   the survivors keep the answer's order, and their values are returned as written.
"""

from __future__ import annotations

import json
from typing import Any

import json_repair
import numpy as np

from think2seg.errors import Think2SegError

DUPLICATE_IOU = 0.5
"""A box whose IoU with a larger kept box exceeds this is a duplicate."""

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


class AnswerRejected(Think2SegError, ValueError):
    """The answer cannot be read; the message says why (a parser outcome, caught inside think2seg)."""


def reference_items(text: str) -> list[dict[str, Any]]:
    """The instances the reference parser keeps from the model's whole output ``text``.

    Each is the answer's JSON object, untouched (corners in any order, values in 840x840 view
    pixels as written, and with fewer than 2 items not even checked to be numbers); ``[]`` for an
    empty answer. Raises :class:`AnswerRejected` where the reference returns no answer.
    """
    value = load_json(list_span(answer_part(text)))
    if not isinstance(value, list):
        raise AnswerRejected("the answer's JSON is not a list of instances")
    for index, item in enumerate(value):
        check_item(index, item)
    return _drop_duplicates(value)


def answer_part(text: str) -> str:
    """The stripped text between the first ``<answer>`` and the first ``</answer>`` after it, else ``text``."""
    start = text.find(ANSWER_OPEN)
    end = text.find(ANSWER_CLOSE, start + len(ANSWER_OPEN)) if start >= 0 else -1
    return text[start + len(ANSWER_OPEN) : end].strip() if end >= 0 else text


def list_span(text: str) -> str:
    """From the first ``[`` to the last ``]`` (empty when they are out of order); ``text`` without both."""
    start, end = text.find("["), text.rfind("]")
    return text[start : end + 1] if start >= 0 and end >= 0 else text


def load_json(snippet: str) -> Any:
    """``json.loads``, falling back to ``json_repair.loads`` on a syntax error.

    Raises :class:`AnswerRejected` on any other error (nesting past the recursion limit, an integer
    of thousands of digits, a failure of the repair parser), as the reference rejects those answers.
    """
    try:
        try:
            return json.loads(snippet)
        except json.JSONDecodeError:
            return json_repair.loads(snippet)
    except Exception as exc:  # the reference rejects the answer on any error; so do we, and say which
        raise AnswerRejected(f"the answer's JSON cannot be read ({type(exc).__name__}: {str(exc)[:80]})") from exc


def check_item(index: int, item: Any) -> None:
    if not isinstance(item, dict):
        raise AnswerRejected(f"instance {index} is not a JSON object")
    if "bbox_2d" not in item and "positive_points" not in item:
        raise AnswerRejected(f"instance {index} has neither bbox_2d nor positive_points")
    if "bbox_2d" in item and not (isinstance(item["bbox_2d"], list) and len(item["bbox_2d"]) == 4):
        raise AnswerRejected(f"instance {index} has a bbox_2d that is not a list of 4 values")
    if "positive_points" in item and not _are_two_points(item["positive_points"]):
        raise AnswerRejected(f"instance {index} has positive_points that are not 2 pairs of numbers")
    if item.get("negative_points") is not None:
        raise AnswerRejected(f"instance {index} has negative_points, which the model must not emit")


def _are_two_points(value: Any) -> bool:
    if not isinstance(value, list) or len(value) != 2:
        return False
    return all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_float_accepts(v) for v in p) for p in value)


def _float_accepts(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _drop_duplicates(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Greedy suppression of duplicate boxes (rule 5); ``items`` are checked instances."""
    if len(items) < 2:
        return items
    boxed = [k for k, item in enumerate(items) if "bbox_2d" in item]
    areas = [_signed_area(items[k]["bbox_2d"], k) for k in boxed]
    if len(boxed) < 2:
        return items
    ranked = [boxed[i] for i in sorted(range(len(boxed)), key=areas.__getitem__, reverse=True)]
    iou = _iou_matrix([items[k]["bbox_2d"] for k in ranked])
    dropped: set[int] = set()
    for i in range(len(ranked)):
        if i not in dropped:
            dropped.update(j for j in range(i + 1, len(ranked)) if iou[i, j] > DUPLICATE_IOU)
    duplicates = {ranked[j] for j in dropped}
    return [item for k, item in enumerate(items) if k not in duplicates]


def _signed_area(box: list[Any], index: int) -> Any:
    try:
        return (box[2] - box[0]) * (box[3] - box[1])
    except (TypeError, ArithmeticError) as exc:
        raise AnswerRejected(f"instance {index} has a bbox_2d whose area cannot be computed ({exc})") from exc


def _iou_matrix(boxes: list[list[Any]]) -> np.ndarray:
    """(N, N) IoU of the raw corner lists, in numpy's arithmetic for their dtype, as the reference."""
    try:
        array = np.array(boxes)
        x1, y1, x2, y2 = (array[:, k] for k in range(4))
        width = np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :])
        height = np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :])
        intersection = np.maximum(0, width) * np.maximum(0, height)
        area = (x2 - x1) * (y2 - y1)
        union = area[:, None] + area[None, :] - intersection
        with np.errstate(all="ignore"):  # numpy's warnings only: 0/0 is NaN, masked by the union test
            return np.where(union > 0, intersection / union, 0)
    except (TypeError, ValueError, ArithmeticError) as exc:  # boxes of bools, integers past 64 bits
        raise AnswerRejected(f"the boxes' overlaps cannot be computed ({type(exc).__name__}: {exc})") from exc
