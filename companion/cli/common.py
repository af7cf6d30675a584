"""What every command shares: settings from global flags, clean error output."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from companion.config import Settings, load_settings
from companion.errors import CompanionError
from companion.paths import contain_library_caches

console = Console()
err_console = Console(stderr=True)

DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Where models, indexes and history live.", envvar="COMPANION_DATA_DIR")
]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="A TOML config file.")]
LlmPluginOption = Annotated[str | None, typer.Option("--llm", help="LLM plugin: local or openai.")]
LlmModelOption = Annotated[str | None, typer.Option("--model", help="Model for the LLM plugin.")]


def settings_from(config: Path | None, data_dir: Path | None, **overrides) -> Settings:
    settings = load_settings(config, data_dir=data_dir, **overrides)
    contain_library_caches(settings.data_dir)
    return settings


def apply_llm(settings: Settings, llm_plugin: str | None, model: str | None) -> None:
    """--llm and --model over the configured dialogue model."""
    if llm_plugin or model:
        settings.llm = settings.llm.merged({"plugin": llm_plugin, "model": model})


@contextlib.contextmanager
def fail_cleanly() -> Iterator[None]:
    """A CompanionError ends the command with its message and exit code 1, no traceback."""
    try:
        yield
    except CompanionError as error:
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
