"""The user-facing options of reading, tiling and vectorizing, each defined once.

An :class:`Option` holds a name, default, unit, limits and help. The Python API checks values with
:meth:`Option.check`, the CLI parses flags with :meth:`Option.parse` (see
:func:`think2seg.cli.options.add_option`) and the HTTP schemas declare fields with
:meth:`Option.field`, so all three refuse a bad value with the same message, e.g.
``simplify_px must be a number from 0 to 1000 (pixels), got -1``.
"""

from __future__ import annotations

import argparse
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

from think2seg.errors import InputError

if TYPE_CHECKING:
    from pydantic.config import JsonDict

MIN_AREA_NEEDS_CRS = "a minimum area in m² needs a georeferenced raster: drop the minimum area in pixel coordinates"

_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True)
class Option(Generic[_Number]):
    """One option: ``name`` is its Python and HTTP name (the flag is ``--name-with-dashes``);
    ``whole`` options take integers, the others any finite number; ``maximum`` None is no limit."""

    name: str
    default: _Number
    unit: str
    help: str
    minimum: int | float = 0
    maximum: int | float | None = None
    whole: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def span(self) -> str:
        low = _shown(self.minimum)
        return f">= {low}" if self.maximum is None else f"from {low} to {_shown(self.maximum)}"

    def message(self, value: object) -> str:
        kind = "a whole number" if self.whole else "a number"
        return f"{self.name} must be {kind} {self.span} ({self.unit}), got {_shown(value)}"

    def check(self, value: object) -> Any:
        """``value`` as an int (whole options) or a float; an :class:`InputError` if it does not fit."""
        number = self._fitting(value)
        if number is None:
            raise InputError(self.message(value))
        return number

    def parse(self, text: str) -> Any:
        """The argparse ``type`` of the option's flag."""
        try:
            return self.check(_number(text))
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def field(self) -> Any:
        """A pydantic field with the option's default, limits (in the JSON schema) and message."""
        from pydantic import Field, WrapValidator
        from pydantic.fields import FieldInfo

        limits: JsonDict = {"minimum": self.minimum, **({"maximum": self.maximum} if self.maximum is not None else {})}
        schema = Field(description=f"{self.help} [{self.unit}, {self.span}]", json_schema_extra=limits)
        kind = int if self.whole else float
        # typed ``type[Any]`` in pydantic, but it takes any annotation (here an ``Annotated[...]`` form)
        annotation: Any = Annotated[kind, WrapValidator(self._validate), schema]
        return FieldInfo.from_annotated_attribute(annotation, self.default)

    def _fitting(self, value: object) -> int | float | None:
        """``value`` as an int (whole options) or a float; None where it does not fit."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float
            return None
        if not math.isfinite(number) or (self.whole and not number.is_integer()):
            return None
        # exact for integers (a float of an int beyond 2**53 is not), the float of anything else
        exact = (int(value) if isinstance(value, numbers.Integral) else int(number)) if self.whole else number
        return exact if self.minimum <= exact and (self.maximum is None or exact <= self.maximum) else None

    def _validate(self, value: object, handler: Any) -> Any:
        """Pydantic's parsing of the number (bool refused), then :meth:`check` with its message."""
        from pydantic_core import PydanticCustomError

        try:
            return self.check(value if isinstance(value, bool) else handler(value))
        except InputError as exc:
            raise PydanticCustomError("invalid_option", "{message}", {"message": str(exc)}) from None


def _number(text: str) -> object:
    """``text`` as an int or a float; the text itself when it is neither (refused, and shown)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _shown(value: object) -> str:
    """``value`` as messages show it: -1.0 as -1 (so the CLI, Python and HTTP say the same), text quoted."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def check_min_area(min_area_m2: float, crs: object) -> None:
    """A minimum area in m² means nothing in pixel coordinates (``crs`` None): refuse it there."""
    if min_area_m2 > 0 and crs is None:
        raise InputError(MIN_AREA_NEEDS_CRS)


SIMPLIFY_PX = Option(
    "simplify_px",
    0.0,
    "pixels",
    "outline tolerance before georeferencing (alone: Douglas-Peucker); 0 keeps the exact pixel edges, or the "
    "outline's default",
    maximum=1000,
)
MIN_AREA_M2 = Option("min_area_m2", 0.0, "m²", "drop polygons smaller than this; needs a CRS")
MIN_SCORE = Option(
    "min_score",
    0.0,
    "SAM predicted IoU",
    "leave out instances whose mask SAM rates below this (its predicted IoU; not the LVLM's certainty)",
    maximum=1,
)
MAX_SIDE_PX = Option(
    "max_side_px", 2048, "pixels", "windows with a longer side are read decimated", minimum=16, whole=True
)
TILE_SIZE_PX = Option(
    "tile_size_px", 1024, "pixels", "tile side at full resolution", minimum=64, maximum=8192, whole=True
)
OVERLAP_PX = Option(
    "overlap_px", 128, "pixels", "overlap between neighbouring tiles, at most half a tile", maximum=4096, whole=True
)
PREFETCH = Option("prefetch", 4, "tiles", "tiles read ahead in a background thread; 0 reads none ahead", whole=True)
