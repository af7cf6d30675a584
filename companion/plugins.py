"""Plugins: every model-backed stage is found by kind and name through entry points.

Built-ins register in our own pyproject under the group `companion.plugins`, exactly as a
third-party package would: `"llm.mine" = "my_pkg.module:MyLLM"`. A plugin class has a
pydantic `Settings` model and is built as `cls(settings, context)`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from companion.config import PluginSpec
from companion.errors import CompanionError, MissingExtraError, PluginNotFoundError

ENTRY_POINT_GROUP = "companion.plugins"
PluginKind = Literal["asr", "embedder", "store", "llm", "tts", "vad", "frontend", "importer"]
T = TypeVar("T")


@dataclass(frozen=True)
class PluginContext:
    """What every plugin may use besides its own settings."""

    data_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)


class PluginClass(Protocol):
    Settings: type[BaseModel]

    def __init__(self, settings: Any, context: PluginContext) -> None: ...


@cache
def _entry_points() -> dict[tuple[str, str], EntryPoint]:
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        kind, _, name = ep.name.partition(".")
        found[(kind, name)] = ep
    return found


def available(kind: PluginKind) -> list[str]:
    return sorted(name for (k, name) in _entry_points() if k == kind)


def plugin_class(kind: PluginKind, name: str) -> type[PluginClass]:
    """The class registered as `kind.name`, or a `package.module:Class` reference."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        return getattr(_import(module_name, name), attr)
    ep = _entry_points().get((kind, name))
    if ep is None:
        choices = ", ".join(available(kind)) or "none installed"
        raise PluginNotFoundError(f"no {kind} plugin named {name!r} (available: {choices})")
    module_name, _, attr = ep.value.partition(":")
    return getattr(_import(module_name, f"{kind}.{name}"), attr)


def _import(module_name: str, label: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except MissingExtraError:
        raise
    except ImportError as error:
        raise CompanionError(f"plugin {label} failed to import: {error}") from error


def create(kind: PluginKind, spec: PluginSpec, context: PluginContext) -> Any:
    cls = plugin_class(kind, spec.plugin)
    try:
        settings = cls.Settings.model_validate(spec.options)
    except ValidationError as error:
        raise CompanionError(f"settings for {kind} plugin {spec.plugin!r}: {error}") from None
    return cls(settings, context)


def require(module: str, *, feature: str, extra: str) -> Any:
    """Import an optional dependency, or fail with the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(feature, extra, module) from None
