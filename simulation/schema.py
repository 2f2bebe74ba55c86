"""Reading scenario sections with errors that name the file and the key (``opponents[1].lane``).

Shared by every part of the simulator that owns a scenario section (track, ego, opponents, sensors,
flying objects), so a bad or incomplete file always fails the same way, before anything runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from racestack.errors import StartupError

REQUIRED = object()


class ConfigError(StartupError):
    """An invalid scenario value; ``key`` is the dotted path of the culprit."""

    def __init__(self, source: str, key: str, detail: str) -> None:
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {detail}")
        self.source = source
        self.key = key
        self.detail = detail


class Section:
    """A mapping being read: typed getters record which keys were used; ``done()`` rejects the rest."""

    def __init__(self, data: Any, path: str = "", source: str = "scenario") -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(source, path, f"expected a mapping, got {_describe(data)}")
        self.data = data
        self.path = path
        self.source = source
        self._used: set[str] = set()

    def key(self, name: str | int) -> str:
        if isinstance(name, int):
            return f"{self.path}[{name}]"
        return f"{self.path}.{name}" if self.path else str(name)

    def error(self, name: str, detail: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), detail)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = REQUIRED) -> Any:
        """The value as written (for sections another module validates)."""
        self._used.add(name)
        if name not in self.data or self.data[name] is None:
            if default is REQUIRED:
                raise self.error(name, "missing (required)")
            return default
        return self.data[name]

    def number(
        self, name: str, default: Any = REQUIRED, min: float | None = None, max: float | None = None
    ) -> float:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number, got {_describe(value)}")
        return self._in_range(name, float(value), min, max)

    def integer(
        self, name: str, default: Any = REQUIRED, min: int | None = None, max: int | None = None
    ) -> int:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected an integer, got {_describe(value)}")
        return int(self._in_range(name, value, min, max))

    def boolean(self, name: str, default: Any = REQUIRED) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {_describe(value)}")
        return value

    def string(self, name: str, default: Any = REQUIRED, choices: Sequence[str] | None = None) -> str:
        value = self.raw(name, default)
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {_describe(value)}")
        if choices is not None and value not in choices:
            raise self.error(name, f"'{value}' is not one of {', '.join(choices)}")
        return value

    def vector(self, name: str, length: int, default: Any = REQUIRED) -> tuple[float, ...]:
        value = self.raw(name, default)
        if not isinstance(value, list | tuple) or len(value) != length:
            raise self.error(name, f"expected a list of {length} numbers, got {_describe(value)}")
        out = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
                detail = f"expected a number, got {_describe(item)}"
                raise ConfigError(self.source, f"{self.key(name)}[{i}]", detail)
            out.append(float(item))
        return tuple(out)

    def section(self, name: str, required: bool = False) -> Section:
        value = self.raw(name, REQUIRED if required else {})
        return Section(value, self.key(name), self.source)

    def sections(self, name: str, default: Any = REQUIRED) -> list[Section]:
        """A list of mappings (e.g. ``opponents``), each a Section named ``name[i]``."""
        value = self.raw(name, default)
        if not isinstance(value, list):
            raise self.error(name, f"expected a list, got {_describe(value)}")
        return [Section(item, f"{self.key(name)}[{i}]", self.source) for i, item in enumerate(value)]

    def done(self) -> None:
        """Unknown keys are an error (a typo must not silently fall back to a default)."""
        unknown = sorted(str(k) for k in set(self.data) - self._used)
        if unknown:
            known = ", ".join(sorted(self._used)) or "none"
            raise self.error(unknown[0], f"unknown key (known here: {known})")

    def _in_range(self, name: str, value: float, lo: float | None, hi: float | None) -> float:
        if not math.isfinite(value):
            raise self.error(name, f"expected a finite number, got {value}")
        if lo is not None and value < lo:
            raise self.error(name, f"{value:g} is below the minimum {lo:g}")
        if hi is not None and value > hi:
            raise self.error(name, f"{value:g} is above the maximum {hi:g}")
        return value


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"
