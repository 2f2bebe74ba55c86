"""Typed, described, validated node parameters (no rclpy: the launcher and tests validate too)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from racestack.errors import ParameterError

_SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class Param:
    """One parameter: its default fixes the type; ranges, choices and ``check`` restrict values.

    ``check`` returns an error text for a bad value, or None. ``read_only`` parameters can only be
    set at start-up (most are: models, devices and topics are not hot-swappable).
    """

    name: str
    default: Any
    description: str
    choices: Sequence[Any] | None = None
    min: float | None = None
    max: float | None = None
    read_only: bool = True
    check: Callable[[Any], str | None] | None = None
    element_type: type | None = None

    @property
    def kind(self) -> type:
        return type(self.default)

    @property
    def item_type(self) -> type:
        if self.element_type is not None:
            return self.element_type
        if isinstance(self.default, list | tuple) and self.default:
            return type(self.default[0])
        return float

    def constraints_text(self) -> str:
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(map(str, self.choices)))
        if self.min is not None:
            parts.append(f">= {self.min}")
        if self.max is not None:
            parts.append(f"<= {self.max}")
        return "; ".join(parts)


def validate(spec: Param, value: Any) -> Any:
    """The value coerced to the spec's type, or ParameterError naming the parameter."""
    value = _coerce(spec, value)
    items = value if isinstance(value, list) else [value]
    if spec.choices is not None:
        bad = [v for v in items if v not in spec.choices]
        if bad:
            raise ParameterError(spec.name, f"{bad[0]!r} is not one of {list(spec.choices)}")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if v != v:
            raise ParameterError(spec.name, "NaN is not allowed")
        if spec.min is not None and v < spec.min:
            raise ParameterError(spec.name, f"{v} is below the minimum {spec.min}")
        if spec.max is not None and v > spec.max:
            raise ParameterError(spec.name, f"{v} is above the maximum {spec.max}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise ParameterError(spec.name, problem)
    return value


def validate_all(specs: Sequence[Param], values: dict[str, Any]) -> dict[str, Any]:
    """Defaults overridden by ``values``, each validated; unknown names are an error."""
    known = {s.name: s for s in specs}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ParameterError(unknown[0], f"unknown parameter (known: {', '.join(sorted(known))})")
    return {s.name: validate(s, values.get(s.name, s.default)) for s in specs}


def _coerce(spec: Param, value: Any) -> Any:
    kind = spec.kind
    if kind in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ParameterError(spec.name, f"expected a list, got {value!r}")
        return [_coerce_scalar(spec, spec.item_type, v) for v in value]
    return _coerce_scalar(spec, kind, value)


def _coerce_scalar(spec: Param, kind: type, value: Any) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind not in _SCALARS:
        raise ParameterError(spec.name, f"unsupported parameter type {kind.__name__}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ParameterError(spec.name, f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value
