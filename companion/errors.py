"""Errors a user can act on: each names the file, the field or the extra to install."""

from __future__ import annotations

from pathlib import Path


class CompanionError(Exception):
    """Base class: the message is written for the person at the keyboard."""


class InputFileError(CompanionError):
    """A file given to us is unreadable or malformed; names the file and what is wrong."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingExtraError(CompanionError):
    """An optional dependency is missing; names the extra that installs it."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(f"{feature} needs the '{module}' package. Install it with: pip install 'companion[{extra}]'")


class PluginNotFoundError(CompanionError):
    pass


class CharacterNotFoundError(CompanionError):
    pass
