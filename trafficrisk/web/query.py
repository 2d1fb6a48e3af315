"""The REST API's query parameters: each one reads and checks what a request sends, and
describes itself for the OpenAPI document, so what is checked and what is documented
are one definition and cannot drift apart.

A bad value aborts with 400 and a message that names the parameter. An empty value counts
as absent (`?verification=` is no filter, as a form's "any" sends it): the document says so
with `allowEmptyValue`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from flask import abort, request


def _raw(name: str) -> str | None:
    """The parameter's value as sent; None when absent or empty."""
    return request.args.get(name) or None


def _parsed(raw: str, kind: type[int] | type[float]) -> float | None:
    """The number, or None. An integer may be written as JSON Schema allows (`5.0`, `1e3`)."""
    try:
        return kind(raw)
    except ValueError:  # also int()'s refusal of thousands of digits
        pass
    if kind is int:
        try:
            number = float(raw)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None  # inf and NaN are not
    return None


@dataclass(frozen=True)
class Number:
    """An integer or a number within [low, high]; `default` when absent (None: no filter)."""

    name: str
    description: str
    low: float
    high: float = math.inf
    default: float | None = None
    kind: type[int] | type[float] = int

    def read(self) -> Any:
        raw = _raw(self.name)
        if raw is None:
            return self.default
        value = _parsed(raw, self.kind)
        if value is None:
            abort(400, f"{self.name}: must be a{'n integer' if self.kind is int else ' number'}, got {raw!r}")
        if not self.low <= value <= self.high:  # NaN is in no range
            abort(400, f"{self.name}: must be between {self.low:g} and {self.high:g}")
        return value

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer" if self.kind is int else "number", "minimum": self.low}
        if math.isfinite(self.high):
            schema["maximum"] = self.high
        if self.default is not None:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True)
class Choice:
    """One of an enum's values, or absent (None)."""

    name: str
    description: str
    choices: type[StrEnum]

    def read(self) -> Any:
        raw = _raw(self.name)
        if raw is not None and raw not in self.choices.__members__.values():
            abort(400, f"{self.name}: must be one of {', '.join(self.choices)}")
        return self.choices(raw) if raw else None

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": [str(choice) for choice in self.choices]}


@dataclass(frozen=True)
class Text:
    """Any string, or absent (None): a camera id to filter by, say."""

    name: str
    description: str

    def read(self) -> str | None:
        return _raw(self.name)

    def schema(self) -> dict[str, Any]:
        return {"type": "string"}


Parameter = Number | Choice | Text


def describe_parameter(parameter: Parameter) -> dict[str, Any]:
    """The OpenAPI parameter object of a query parameter."""
    return {
        "name": parameter.name,
        "in": "query",
        "required": False,
        "allowEmptyValue": True,  # empty: absent
        "description": parameter.description,
        "schema": parameter.schema(),
    }
