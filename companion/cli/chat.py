"""`companion chat`: talk with a character in the terminal, or answer one message."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer

from companion.cli.common import (
    ConfigOption,
    DataDirOption,
    LlmModelOption,
    LlmPluginOption,
    apply_llm,
    err_console,
    settings_from,
)


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)


def chat(
    character: Annotated[str, typer.Option("--character", "-c", help="Character id (folder name).")] = "mochi",
    message: Annotated[str | None, typer.Option("--message", "-m", help="Answer this once and exit.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Your name; history is kept per user.")] = None,
    llm_plugin: LlmPluginOption = None,
    model: LlmModelOption = None,
    show_context: Annotated[bool, typer.Option("--show-context", help="Show what retrieval added.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Chat with a character. Replies stream as they are generated."""
    from companion.frontends.terminal import TerminalChat
    from companion.session import build_companion

    settings = settings_from(config, data_dir, user_name=user)
    apply_llm(settings, llm_plugin, model)
    started = time.perf_counter()
    companion = build_companion(character, settings)
    if hasattr(companion.llm, "load"):
        companion.llm.on_status = lambda text: err_console.print(f"[dim]{text}[/]")
        with err_console.status(f"Loading {settings.llm.plugin} model..."):
            companion.llm.load()
        err_console.print(f"[dim]ready in {time.perf_counter() - started:.1f}s[/]")
    key = companion.key(user=settings.user_name, channel="terminal")
    frontend = TerminalChat(companion, key, settings.user_name, show_context=show_context)
    if message is not None:
        asyncio.run(frontend.reply(message))
    else:
        asyncio.run(frontend.interactive())
