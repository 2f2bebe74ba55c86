"""Errors that carry a reason key, so nodes can count rejections per cause in diagnostics."""

from __future__ import annotations


class InputError(ValueError):
    """A message that cannot be used: the node drops it, counts ``reason`` and keeps running."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StartupError(RuntimeError):
    """A configuration error found at start-up: the message names the parameter or file at fault."""


class ParameterError(StartupError):
    """An invalid parameter value; the message names the parameter."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"parameter '{name}': {detail}")
        self.name = name


class ModelFileError(StartupError):
    """A model, checkpoint or engine file that is missing or unreadable; the message names the path."""

    def __init__(self, path: str, detail: str, hint: str = "") -> None:
        text = f"model file '{path}': {detail}"
        super().__init__(f"{text} ({hint})" if hint else text)
        self.path = path


INTERRUPTED_EXIT = 130  # the shell's exit code for a process stopped by Ctrl-C


def interrupted(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a Ctrl-C, or came of one (a C extension's import turns it into ImportError)."""
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__context__
    return False
