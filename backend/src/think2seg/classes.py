"""Classes and their questions: what to segment, by name, from a small YAML or JSON file.

A class file maps each class name to a question or a list of questions::

    buildings: segment the buildings
    water: [segment the lakes and rivers, where is open water?]

The same file serves ``think2seg segment --classes`` and ``batch --classes`` (each polygon gets a
``class`` column) and ``train --classes`` (the name is then the label's value in its class field).
A name given twice is refused, never silently merged (the parsers would keep the last one).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types; types-PyYAML is not a test dependency

from think2seg.errors import InputError, QuestionError
from think2seg.think2seg_rs.prompt import validate_question

_CLASSES_EXAMPLE = 'e.g. {"dump": "segment the illegal dump sites", "pond": ["segment the ponds", "where is water?"]}'


@dataclass(frozen=True)
class ClassQuestions:
    """One class: its name (for training, its value in the labels' class field; ``""``: every
    polygon) and its questions (stripped)."""

    name: str
    questions: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.questions:
            raise InputError(f"class {self.name!r} has no question: give it at least one question")
        try:
            checked = tuple(validate_question(q) for q in self.questions)
        except QuestionError as exc:  # the class "" is the questions given without a class
            raise QuestionError(f"class {self.name!r}: {exc}" if self.name else str(exc)) from exc
        repeated = [q for q, n in Counter(checked).items() if n > 1]
        if repeated:
            raise InputError(f"class {self.name!r} asks {repeated[0]!r} twice: give each question once")
        object.__setattr__(self, "questions", checked)


@dataclass(frozen=True)
class Ask:
    """One question of one class, as a run asks it; ``class_name`` is ``""`` for a question asked
    without a class."""

    class_name: str
    question: str

    @property
    def label(self) -> str:
        """The ``class`` column of what this question finds: the class name, else the question."""
        return self.class_name or self.question

    @property
    def key(self) -> tuple[str, str]:
        """(class column, question): what tells this question's rows apart in a run's tables."""
        return self.label, self.question


def asks_of(classes: Sequence[ClassQuestions]) -> tuple[Ask, ...]:
    """Every question of every class, in the order given."""
    return tuple(Ask(c.name, q) for c in classes for q in c.questions)


def load_classes(path: str | os.PathLike[str]) -> list[ClassQuestions]:
    """The classes of a ``.yaml``/``.yml``/``.json`` file mapping class value -> question or list of questions."""
    file = Path(path).expanduser()
    data = _parse_classes_file(file)
    if not isinstance(data, dict) or not data:
        raise InputError(f"{file} must map each class value to a question or a list of questions, {_CLASSES_EXAMPLE}")
    classes = [_class_entry(file, key, value) for key, value in data.items()]
    repeated = [name for name, n in Counter(c.name for c in classes).items() if n > 1]
    if repeated:
        raise InputError(f"{file} names the class {repeated[0]!r} more than once: merge its questions into one entry")
    return classes


def classes_from_questions(questions: Sequence[str]) -> list[ClassQuestions]:
    """One class named ``""`` (every polygon is a target) asked with ``questions``."""
    if isinstance(questions, str) or not questions:
        raise InputError('give at least one question, e.g. --question "segment the illegal dump sites"')
    return [ClassQuestions("", tuple(questions))]


def _parse_classes_file(file: Path) -> object:
    suffix = file.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise InputError(f"{file}: the classes file must end in .yaml, .yml or .json, {_CLASSES_EXAMPLE}")
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"the classes file {file} does not exist: check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the classes file {file} ({exc}): give a UTF-8 YAML or JSON file") from exc
    try:
        keys, data = _json_keys(text) if suffix == ".json" else _yaml_keys(text)
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(
            f"{file} is not valid {suffix[1:].upper()} ({_parse_problem(exc)}): fix it, {_CLASSES_EXAMPLE}"
        ) from exc
    repeated = [key for key, n in Counter(keys).items() if n > 1]
    if repeated:  # the parsers would silently keep the last entry
        raise InputError(f"{file} names the class {repeated[0]!r} more than once: merge its questions into one entry")
    return data


def _parse_problem(exc: Exception) -> str:
    """Where and what the parser found wrong, in one line."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is not None and problem:  # PyYAML's MarkedYAMLError
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _json_keys(text: str) -> tuple[list[str], object]:
    """The top-level keys as written (repeats kept) and the parsed data."""
    pairs = json.loads(text, object_pairs_hook=lambda items: items)
    rebuilt = json.loads(text)
    return ([str(k) for k, _ in pairs] if isinstance(pairs, list) and isinstance(rebuilt, dict) else []), rebuilt


def _yaml_keys(text: str) -> tuple[list[str], object]:
    """The top-level keys as written (repeats kept, 1 and "1" alike) and the parsed data."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        keys = [str(k.value).strip() for k, _ in node.value] if isinstance(node, yaml.MappingNode) else []
        return keys, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(_parse_problem(exc)) from exc


def _class_entry(file: Path, key: object, value: object) -> ClassQuestions:
    name = class_text(key)
    if not name:
        raise InputError(f"{file}: a class has an empty name: give each class the value it has in the class field")
    questions = [value] if isinstance(value, str) else value
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
        raise InputError(f"{file}: class {name!r} must have a question or a list of questions, {_CLASSES_EXAMPLE}")
    try:
        return ClassQuestions(name, tuple(questions))
    except InputError as exc:
        raise type(exc)(f"{file}: {exc}") from exc


def class_text(value: object) -> str | None:
    """A class value as text: 2.0 as "2" (so a float field matches a key 2), None for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
