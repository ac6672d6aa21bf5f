"""Parse the LVLM's answer into instance prompts (boxes and points in the 840x840 view).

One pure function, :func:`parse_answer`, implements the reference rules:

1. take the text inside ``<answer>`` when present (to the end of the text when it was cut off);
2. slice from the first ``[`` to the last ``]``;
3. ``json.loads``, falling back to the ``json-repair`` parser;
4. keep instances with a 4-number ``bbox_2d`` and/or exactly two ``positive_points``;
   an instance carrying ``negative_points`` invalidates the whole answer;
5. drop duplicate boxes (IoU > 0.5 with a larger kept box).

On top of the reference, coordinates are clamped into the view and box corners are put in order,
so a slightly-off answer still yields usable prompts. An unparseable answer is a normal outcome
(status ``unparseable`` with a reason), never an exception.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import json_repair

from think2seg.prompt import VIEW_SIZE_PX

DUPLICATE_IOU = 0.5

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)


class AnswerStatus(str, enum.Enum):
    """Outcome of parsing one answer."""

    OK = "ok"
    NO_TARGET = "no_target"
    UNPARSEABLE = "unparseable"


@dataclass(frozen=True)
class InstancePrompt:
    """Geometric prompts for one target instance.

    ``box_xyxy`` is ``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``; ``points_xy`` holds the
    positive points as ``(x, y)``. Units are those of the image the prompt refers to (840x840 view
    pixels as parsed; tile pixels after :meth:`scaled`). Either may be ``None``, never both.
    """

    box_xyxy: tuple[float, float, float, float] | None
    points_xy: tuple[tuple[float, float], ...] | None

    def scaled(self, sx: float, sy: float) -> InstancePrompt:
        """The same prompt with x multiplied by ``sx`` and y by ``sy``."""
        box = None
        if self.box_xyxy is not None:
            x1, y1, x2, y2 = self.box_xyxy
            box = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
        points = None
        if self.points_xy is not None:
            points = tuple((x * sx, y * sy) for x, y in self.points_xy)
        return replace(self, box_xyxy=box, points_xy=points)


@dataclass(frozen=True)
class ParsedAnswer:
    """Result of :func:`parse_answer`.

    ``reasoning`` is the text of the ``<think>`` block (or what precedes ``<answer>``), ``message``
    says why an answer is unparseable (empty otherwise), ``raw_text`` is the model's whole output.
    """

    status: AnswerStatus
    reasoning: str
    instances: tuple[InstancePrompt, ...]
    raw_text: str
    message: str = ""


def parse_answer(text: str, *, view_size_px: int = VIEW_SIZE_PX) -> ParsedAnswer:
    """Parse an LVLM answer into instance prompts in the ``view_size_px`` square view."""
    reasoning = _reasoning(text)
    items, problem = _json_items(_answer_part(text))
    if problem:
        return ParsedAnswer(AnswerStatus.UNPARSEABLE, reasoning, (), text, problem)
    if not items:
        return ParsedAnswer(AnswerStatus.NO_TARGET, reasoning, (), text)
    if any(isinstance(item, dict) and "negative_points" in item for item in items):
        message = "the answer has negative_points, which the model must not emit"
        return ParsedAnswer(AnswerStatus.UNPARSEABLE, reasoning, (), text, message)
    instances = [p for p in (_instance(item, view_size_px) for item in items) if p is not None]
    if not instances:
        message = "no instance has a 4-number bbox_2d or exactly two positive_points"
        return ParsedAnswer(AnswerStatus.UNPARSEABLE, reasoning, (), text, message)
    return ParsedAnswer(AnswerStatus.OK, reasoning, _drop_duplicates(instances), text)


def _reasoning(text: str) -> str:
    match = _THINK.search(text)
    if match:
        return match.group(1).strip()
    head = text.split("<answer>", 1)[0] if "<answer>" in text else ""
    return head.strip()


def _answer_part(text: str) -> str:
    match = _ANSWER.search(text)
    return match.group(1) if match else text


def _json_items(answer: str) -> tuple[list[Any], str]:
    """The list the answer holds, or an explanation of why there is none."""
    start, end = answer.find("["), answer.rfind("]")
    if start < 0:
        return [], "the answer holds no JSON list"
    # A cut-off answer has no closing bracket after the opening one: let the repair parser close it.
    snippet = answer[start : end + 1] if end > start else answer[start:]
    try:
        try:
            value = json.loads(snippet)
        except json.JSONDecodeError:
            value = json_repair.loads(snippet)
    except (RecursionError, ValueError) as exc:  # nesting too deep, a number of thousands of digits
        return [], f"the answer's JSON cannot be read ({type(exc).__name__}: {str(exc)[:80]})"
    if not isinstance(value, list):
        return [], "the answer's JSON is not a list of instances"
    return value, ""


def _instance(item: Any, view_size_px: int) -> InstancePrompt | None:
    if not isinstance(item, dict):
        return None
    box = _box(item.get("bbox_2d"), view_size_px)
    points = _points(item.get("positive_points"), view_size_px)
    if box is None and points is None:
        return None
    return InstancePrompt(box_xyxy=box, points_xy=points)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _numbers(value: Any, count: int) -> list[float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != count:
        return None
    numbers = [_number(v) for v in value]
    return None if any(n is None for n in numbers) else numbers  # type: ignore[return-value]


def _clamp(value: float, size: int) -> float:
    return min(max(value, 0.0), float(size))


def _box(value: Any, size: int) -> tuple[float, float, float, float] | None:
    numbers = _numbers(value, 4)
    if numbers is None:
        return None
    x1, y1, x2, y2 = (_clamp(n, size) for n in numbers)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1, y1, x2, y2)


def _points(value: Any, size: int) -> tuple[tuple[float, float], ...] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    pairs = [_numbers(p, 2) for p in value]
    if any(p is None for p in pairs):
        return None
    return tuple((_clamp(x, size), _clamp(y, size)) for x, y in pairs)  # type: ignore[misc]


def _area(box: tuple[float, float, float, float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _drop_duplicates(instances: list[InstancePrompt]) -> tuple[InstancePrompt, ...]:
    """Drop instances whose box overlaps a larger kept box with IoU > 0.5; keep the answer's order."""
    by_area = sorted(
        range(len(instances)),
        key=lambda i: -_area(instances[i].box_xyxy) if instances[i].box_xyxy else 0.0,
    )
    kept: list[int] = []
    for index in by_area:
        box = instances[index].box_xyxy
        kept_boxes = [instances[k].box_xyxy for k in kept if instances[k].box_xyxy is not None]
        if box is not None and any(_iou(box, other) > DUPLICATE_IOU for other in kept_boxes):
            continue
        kept.append(index)
    return tuple(instances[i] for i in sorted(kept))
