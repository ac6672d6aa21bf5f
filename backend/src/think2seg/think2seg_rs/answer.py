"""Parse the LVLM's answer into instance prompts (boxes and points in the 840x840 view).

One pure function, :func:`parse_answer`, with two sets of rules and one result type:

``product`` (the default) reads what the model meant:

1. take the text inside ``<answer>`` (to the end of the text when it was cut off; the whole text
   when there is no ``<answer>`` or the tags are in the wrong order);
2. prefer the first fenced block (```` ```json ... ``` ````) that holds a ``[``, so brackets in
   prose around it do not hide the list; slice from the first ``[`` to the last ``]`` (to the end
   when a cut-off list has no ``]``; unparseable when every ``]`` comes before the first ``[``);
3. ``json.loads``, falling back to the ``json-repair`` parser;
4. keep instances with a 4-number ``bbox_2d`` and/or exactly two ``positive_points`` (finite JSON
   numbers), dropping the invalid ones; an instance carrying a non-null ``negative_points``
   invalidates the whole answer;
5. clamp coordinates into the view and put box corners in order, then drop duplicate boxes (IoU >
   0.5 with a larger kept box).

``reference`` reproduces the verdicts and instances of the reference test-time parser of
Think2Seg-RS, values as written (:mod:`think2seg.think2seg_rs.reference`); ``think2seg eval --protocol
paper`` uses it. The README's table "Where we differ from the reference parser, and why" lists
the differences. An unparseable answer is a normal outcome (status ``unparseable`` with a
reason), never an exception.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from think2seg.errors import InputError
from think2seg.think2seg_rs.prompt import VIEW_SIZE_PX
from think2seg.think2seg_rs.reference import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    DUPLICATE_IOU,
    AnswerRejected,
    answer_part,
    load_json,
    reference_items,
)

AnswerMode = Literal["product", "reference"]
ANSWER_MODES: tuple[AnswerMode, ...] = ("product", "reference")

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)
_FENCE = re.compile(r"```(?:json)?(.*?)(?:```|\Z)", re.DOTALL)


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

    From ``parse_answer(..., mode="reference")`` the values are as the answer wrote them: corners
    in any order, anywhere outside the view, and, in an answer of a single item, a box of any 4
    values (strings, null, lists) and points of any values ``float()`` accepts (``"12"``,
    ``true``). :func:`numeric_prompts` turns them into floats before a segmenter sees them.
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
    In reference mode the instances hold values as written (see :class:`InstancePrompt`).
    """

    status: AnswerStatus
    reasoning: str
    instances: tuple[InstancePrompt, ...]
    raw_text: str
    message: str = ""


def parse_answer(text: str, *, view_size_px: int = VIEW_SIZE_PX, mode: AnswerMode = "product") -> ParsedAnswer:
    """Parse an LVLM answer (the model's whole output) into instance prompts in the 840x840 view.

    ``mode`` ``product`` clamps the prompts into the ``view_size_px`` square (pixels) and drops the
    invalid ones; ``reference`` gives the reference parser's verdict and instances, values as
    written (``view_size_px`` unused). See the module's docstring for both sets of rules.
    """
    if mode not in ANSWER_MODES:
        raise InputError(f"unknown answer mode {mode!r}: use product or reference")
    reasoning = _reasoning(text)
    if mode == "reference":
        return _reference_answer(text, reasoning)
    return _product_answer(text, reasoning, view_size_px)


def numeric_prompts(parsed: ParsedAnswer) -> ParsedAnswer:
    """``parsed`` with every box and point value a finite float, as a segmenter needs them.

    Product answers already are; a reference answer's values go through ``float()``. An answer
    holding a value ``float()`` refuses, or a non-finite one, becomes ``unparseable`` with no
    instances (its message names the value), so an evaluation scores it as a failure.
    """
    try:
        instances = tuple(_numeric(instance) for instance in parsed.instances)
    except AnswerRejected as exc:
        message = f"the answer was read, but {exc}: a segmenter needs finite numbers"
        return replace(parsed, status=AnswerStatus.UNPARSEABLE, instances=(), message=message)
    return replace(parsed, instances=instances)


def _product_answer(text: str, reasoning: str, view_size_px: int) -> ParsedAnswer:
    items, problem = _json_items(_answer_part(text))
    if problem:
        return ParsedAnswer(AnswerStatus.UNPARSEABLE, reasoning, (), text, problem)
    if not items:
        return ParsedAnswer(AnswerStatus.NO_TARGET, reasoning, (), text)
    if any(isinstance(item, dict) and item.get("negative_points") is not None for item in items):
        message = "the answer has negative_points, which the model must not emit"
        return ParsedAnswer(AnswerStatus.UNPARSEABLE, reasoning, (), text, message)
    instances = [p for p in (_instance(item, view_size_px) for item in items) if p is not None]
    if not instances:
        message = "no instance has a 4-number bbox_2d or exactly two positive_points"
        return ParsedAnswer(AnswerStatus.UNPARSEABLE, reasoning, (), text, message)
    return ParsedAnswer(AnswerStatus.OK, reasoning, _drop_duplicates(instances), text)


def _numeric(instance: InstancePrompt) -> InstancePrompt:
    box = None
    if instance.box_xyxy is not None:
        x1, y1, x2, y2 = (_finite_float(v) for v in instance.box_xyxy)
        box = (x1, y1, x2, y2)
    points = None
    if instance.points_xy is not None:
        points = tuple((_finite_float(x), _finite_float(y)) for x, y in instance.points_xy)
    return InstancePrompt(box_xyxy=box, points_xy=points)


def _finite_float(value: Any) -> float:
    try:
        number = float(value)
    except OverflowError as exc:
        raise AnswerRejected("an integer past the float range is not a number") from exc
    except (TypeError, ValueError) as exc:
        raise AnswerRejected(f"{repr(value)[:40]} is not a number") from exc
    if not math.isfinite(number):
        raise AnswerRejected(f"{value!r} is not a finite number")
    return number


def _reference_answer(text: str, reasoning: str) -> ParsedAnswer:
    try:
        items = reference_items(text)
    except AnswerRejected as exc:
        return ParsedAnswer(AnswerStatus.UNPARSEABLE, reasoning, (), text, str(exc))
    if not items:
        return ParsedAnswer(AnswerStatus.NO_TARGET, reasoning, (), text)
    instances = tuple(
        InstancePrompt(box_xyxy=_as_written_box(item), points_xy=_as_written_points(item)) for item in items
    )
    return ParsedAnswer(AnswerStatus.OK, reasoning, instances, text)


def _as_written_box(item: dict[str, Any]) -> Any:
    return tuple(item["bbox_2d"]) if "bbox_2d" in item else None


def _as_written_points(item: dict[str, Any]) -> Any:
    return tuple(tuple(point) for point in item["positive_points"]) if "positive_points" in item else None


def _reasoning(text: str) -> str:
    match = _THINK.search(text)
    if match:
        return match.group(1).strip()
    head = text.split("<answer>", 1)[0] if "<answer>" in text else ""
    return head.strip()


def _answer_part(text: str) -> str:
    """The reference's answer part, except that a cut-off answer runs from ``<answer>`` to the end."""
    if ANSWER_OPEN in text and ANSWER_CLOSE not in text:
        return text.split(ANSWER_OPEN, 1)[1]
    return answer_part(text)


def _fenced(answer: str) -> str:
    """The first fenced block holding a ``[`` (to the end when cut off), else the whole answer."""
    for match in _FENCE.finditer(answer):
        if "[" in match.group(1):
            return match.group(1)
    return answer


def _json_items(answer: str) -> tuple[list[Any], str]:
    """The list the answer holds, or an explanation of why there is none."""
    part = _fenced(answer)
    start, end = part.find("["), part.rfind("]")
    if start < 0:
        return [], "the answer holds no JSON list"
    if 0 <= end < start:
        return [], "the answer's brackets are out of order: no ] follows the first ["
    # A cut-off answer has no closing bracket at all: let the repair parser close it.
    snippet = part[start : end + 1] if end > start else part[start:]
    try:
        value = load_json(snippet)
    except AnswerRejected as exc:
        return [], str(exc)
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
    try:
        number = float(value)
    except OverflowError:  # an integer past the float range
        return None
    return number if math.isfinite(number) else None


def _numbers(value: Any, count: int) -> list[float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != count:
        return None
    numbers = [n for n in (_number(v) for v in value) if n is not None]
    return numbers if len(numbers) == count else None


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
    pairs = [pair for pair in (_numbers(p, 2) for p in value) if pair is not None]
    if len(pairs) != len(value):
        return None
    return tuple((_clamp(x, size), _clamp(y, size)) for x, y in pairs)


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
    boxes = [instance.box_xyxy for instance in instances]
    by_area = sorted(range(len(instances)), key=lambda i: -_area(b) if (b := boxes[i]) else 0.0)
    kept: list[int] = []
    for index in by_area:
        box = boxes[index]
        kept_boxes = [kept_box for k in kept if (kept_box := boxes[k]) is not None]
        if box is not None and any(_iou(box, other) > DUPLICATE_IOU for other in kept_boxes):
            continue
        kept.append(index)
    return tuple(instances[i] for i in sorted(kept))
