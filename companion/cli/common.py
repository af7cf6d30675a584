"""What every command shares: settings from global flags, clean error output."""

# No `from __future__ import annotations`: typer reads the options of `_open_settings` (see `with_opened`).
import contextlib
import functools
import inspect
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

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
LlmPluginOption = Annotated[
    str | None,
    typer.Option(
        "--llm", help="LLM plugin: llamacpp (the default), local (transformers) or openai (OpenAI-compatible server)."
    ),
]
LlmModelOption = Annotated[str | None, typer.Option("--model", help="Model for the LLM plugin.")]
# the OpenAI-compatible endpoint that writes for `create` and `data distill` (each says what --base-url is for)
EndpointModelOption = Annotated[str | None, typer.Option("--model", help="Model name at the endpoint.")]
EndpointKeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="COMPANION_DISTILL_API_KEY", help="API key for --base-url.")
]
ReportJsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]


def settings_from(config: Path | None, data_dir: Path | None, **overrides) -> Settings:
    settings = load_settings(config, data_dir=data_dir, **overrides)
    contain_library_caches(settings.data_dir)
    return settings


def apply_llm(settings: Settings, llm_plugin: str | None, model: str | None) -> None:
    """--llm and --model over the configured dialogue model."""
    if llm_plugin or model:
        settings.llm = settings.llm.merged({"plugin": llm_plugin, "model": model})


Command = Callable[..., None]


def with_opened(opener: Callable[..., dict[str, Any]], *names: str) -> Callable[[Command], Command]:
    """Decorate a command: the options of `opener` follow the command's own in what typer reads, and
    `opener` turns them into the objects named `names` (the settings, the court) that the command
    receives in their place, those of them it takes.

    typer reads the options' annotations from the signature, as objects: a module that decorates
    with this does without `from __future__ import annotations` (the annotation of a received
    object may stay a string: it is not given to typer)."""
    options = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(opener).parameters.values()]

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command)
        received = [name for name in names if name in signature.parameters]
        own = [p for p in signature.parameters.values() if p.name not in names]
        exposed = signature.replace(parameters=[*own, *options])

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> None:
            bound = exposed.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            opened = opener(**{option.name: arguments.pop(option.name) for option in options})
            command(**{name: opened[name] for name in received}, **arguments)

        run.__signature__ = exposed  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in exposed.parameters.values()}
        return run

    return decorate


def _open_settings(config: ConfigOption = None, data_dir: DataDirOption = None) -> dict[str, Any]:
    return {"settings": settings_from(config, data_dir)}


# A command decorated with this gets --config and --data-dir after its own options, and the settings.
with_settings = with_opened(_open_settings, "settings")


def print_fields(fields: dict[str, Any], *, as_json: bool) -> None:
    """A flat mapping as indented JSON for scripts, or one `key: value` line per field."""
    if as_json:
        print(json.dumps(fields, ensure_ascii=False, indent=2))
        return
    for key, value in fields.items():
        console.print(f"[bold]{key}[/]: {value}", highlight=False)


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
