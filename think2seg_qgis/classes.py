"""Several classes asked of one view at once: the list an analyst keeps (name + question), checked
as the backend checks it, and what a reply with classes says, in the panel's words.

A request's ``classes`` is ``{name: question}`` (at most :data:`MAX_CLASSES`); its reply holds every
class's polygons (each with its ``class``), one ``classes`` entry per class (status, reasoning,
polygons, area) and ``class_overlaps`` (pairs of classes whose polygons share ground; both keep them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .errors import Think2SegError
from .wording import area_text, plural

MAX_CLASSES = 32  # think2seg.server.schemas.MAX_CLASSES: one model batch
MAX_NAME_CHARS = 100  # schemas.ClassName
MAX_QUESTION_CHARS = 1000  # think2seg.think2seg_rs.prompt.MAX_QUESTION_CHARS


class ClassError(Think2SegError, ValueError):
    """The class list cannot be sent as it is; the message says which row and what to change."""


def class_request(rows: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The request's ``classes`` (name -> question, in the rows' order) from (name, question) rows.

    Blank rows are left out; a row without a name is named by its question. Raises
    :class:`ClassError` for a row without a question, a name used twice, a name or question that
    is too long, or more than :data:`MAX_CLASSES` classes.
    """
    classes: dict[str, str] = {}
    for number, (raw_name, raw_question) in enumerate(rows, start=1):
        name, question = raw_name.strip(), raw_question.strip()
        if not name and not question:
            continue
        if not question:
            raise ClassError(f"class “{name}” (row {number}) has no question: say what to segment, e.g. “the roofs”")
        name = name or question
        _check_row(number, name, question)
        if name in classes:
            raise ClassError(f"the class name “{name}” is used twice (row {number}): give each class its own name")
        classes[name] = question
    if len(classes) > MAX_CLASSES:
        raise ClassError(
            f"{len(classes)} classes are more than one request may ask ({MAX_CLASSES}): remove some, "
            "or split them over two runs"
        )
    return classes


def _check_row(number: int, name: str, question: str) -> None:
    if len(name) > MAX_NAME_CHARS:
        raise ClassError(
            f"the class name in row {number} is {len(name)} characters long: shorten it to {MAX_NAME_CHARS} "
            "or fewer (a row without a name is named by its question)"
        )
    if len(question) > MAX_QUESTION_CHARS:
        raise ClassError(f"the question of “{name}” is longer than {MAX_QUESTION_CHARS} characters: shorten it")


def classes_title(names: Iterable[str]) -> str:
    """“3 classes: buildings, roads, water”: what a job or run that asks several classes asks."""
    names = [str(name) for name in names]
    return f"{plural(len(names), 'class', 'classes')}: {', '.join(names)}"


def parse_class_lines(text: str) -> dict[str, str]:
    """Classes from text, one per line: ``name: question``, or only a question (then its own name).

    Blank lines and lines starting with ``#`` are left out. Raises :class:`ClassError` as
    :func:`class_request` does.
    """
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, question = line.partition(":")
        rows.append((name, question) if colon else ("", line))
    return class_request(rows)


def is_classes_reply(reply: dict) -> bool:
    """Whether ``reply`` answers a request with ``classes`` (its entries are named, not by the question)."""
    entries = reply.get("classes") or []
    return len(entries) > 1 or any(entry.get("name") != entry.get("question") for entry in entries)


def run_question(reply: dict) -> str:
    """What a run is called: its question, or its classes' names (a reply with several classes has
    no question of its own)."""
    if reply.get("question"):
        return str(reply["question"])
    return ", ".join(str(entry.get("name", "")) for entry in reply.get("classes") or [])


def run_instances(reply: dict) -> Callable[[dict], int | None]:
    """A feature's instance number within its run, from its properties. Each class numbers its own
    instances from 0, so in a reply with several classes the later classes' numbers are shifted past
    the earlier ones': one run's instances (a polygon and its prompts) never share a number."""
    features = reply.get("features", []) + reply.get("prompts", {}).get("features", [])
    highest: dict[str, int] = {}
    for f in features:
        number = f["properties"].get("instance")
        name = str(f["properties"].get("class") or "")
        highest[name] = max(highest.get(name, -1), int(number) if number is not None else 0)
    offsets, total = {}, 0
    for name, top in highest.items():
        offsets[name], total = total, total + top + 1
    several = len(highest) > 1

    def number(properties: dict) -> int | None:
        value = properties.get("instance")
        if value is None or not several:
            return None if value is None else int(value)
        return int(value) + offsets[str(properties.get("class") or "")]

    return number


def class_reasoning(reply: dict) -> str:
    """Each class's answer for the reasoning box: its name, status and polygons, then its reasoning."""
    blocks = []
    for entry in reply.get("classes") or []:
        head = f"■ {entry.get('name', '')} — {_class_found(reply, entry)}"
        if entry.get("question") and entry.get("question") != entry.get("name"):
            head += f"\n  asked: “{entry['question']}”"
        text = entry.get("reasoning") or entry.get("message") or ""
        if entry.get("status") == "unparseable":
            text = f"{entry.get('message', '')}\n{entry.get('raw_answer', '')}".strip()
        blocks.append(f"{head}\n{text}".rstrip())
    return "\n\n".join(blocks)


def _class_found(reply: dict, entry: dict) -> str:
    """“ok: 3 polygons, 1.20 ha, SAM score 0.91–0.97”, or the status and message of a class without any."""
    count = int(entry.get("polygons") or 0)
    if not count:
        message = entry.get("message") or ""
        return f"{entry.get('status', '')}: no polygons" + (f" ({message})" if message else "")
    found = f"{entry.get('status', '')}: {plural(count, 'polygon')}, {area_text(entry.get('total_area_m2') or 0.0)}"
    scores = class_scores(reply, str(entry.get("name", "")))
    if scores:
        low, high = min(scores), max(scores)
        found += f", SAM score {low:.2f}" + (f"–{high:.2f}" if high - low >= 0.005 else "")
    return found


def class_scores(reply: dict, name: str) -> list[float]:
    """SAM's predicted IoU of each polygon of class ``name`` (those the backend scored)."""
    properties = (feature.get("properties") or {} for feature in reply.get("features", []))
    return [float(p["score"]) for p in properties if p.get("class") == name and p.get("score") is not None]


def class_counts(reply: dict) -> str:
    """“buildings 3, water 0”: polygons per class, in the request's order."""
    return ", ".join(f"{entry.get('name', '')} {entry.get('polygons') or 0}" for entry in reply.get("classes") or [])


def overlap_note(reply: dict) -> str:
    """“overlaps: buildings & water 120.0 m² (kept in both)”; '' when no two classes overlap."""
    overlaps = reply.get("class_overlaps") or []
    if not overlaps:
        return ""
    pairs = [
        f"{o.get('class_a', '')} & {o.get('class_b', '')}"
        + (f" {area_text(o['area_m2'])}" if o.get("area_m2") is not None else "")
        for o in overlaps
    ]
    return f"{plural(len(overlaps), 'overlap')} between classes: {', '.join(pairs)} (the polygons are kept in both)"
