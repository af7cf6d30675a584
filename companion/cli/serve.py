"""`companion serve`, `companion discord`, `companion onebot`: the character on the network."""

# No `from __future__ import annotations`: see `with_opened`.
import logging
import time
from typing import Annotated, Any

import typer

from companion.cli.common import (
    ConfigOption,
    DataDirOption,
    LlmModelOption,
    LlmPluginOption,
    apply_llm,
    err_console,
    settings_from,
    with_opened,
)
from companion.config import Settings

CharactersOption = Annotated[
    list[str] | None,
    typer.Option("--character", "-c", help="Character id to serve (repeat for several; default: all found)."),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v")]


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("discord")(discord)
    app.command("onebot")(onebot)


def _open_settings(
    llm_plugin: LlmPluginOption = None,
    model: LlmModelOption = None,
    verbose: VerboseOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> dict[str, Any]:
    """The settings, with --llm and --model over the configured model; logging as --verbose says."""
    settings = settings_from(config, data_dir)
    apply_llm(settings, llm_plugin, model)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return {"settings": settings}


# Each command gets --llm, --model, --verbose, --config and --data-dir after its own options, and the settings.
_with_settings = with_opened(_open_settings, "settings")


def _warm(hub, character_id: str) -> None:
    """Load the character (a missing or broken one fails here, before anything listens) and her model."""
    hub.base(character_id)
    started = time.perf_counter()
    with err_console.status(f"Loading {character_id}'s model..."):
        hub.warm_up(character_id)
    err_console.print(f"[dim]model ready in {time.perf_counter() - started:.1f}s[/]")


@_with_settings
def serve(
    settings: Settings,
    character: CharactersOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (127.0.0.1 by default).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (8765 by default).")] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Access token; required on any address but loopback.", envvar="COMPANION_SERVE__TOKEN"),
    ] = None,
    voice: Annotated[str | None, typer.Option(help="Speech in and out: auto, on or off.")] = None,
    onebot: Annotated[bool, typer.Option("--onebot", help="Also accept QQ (OneBot v11) at /onebot/v11/ws.")] = False,
) -> None:
    """Serve the web page, WebSocket events and an OpenAI-compatible API for your characters."""
    from companion.errors import CompanionError
    from companion.frontends.hub import CompanionHub
    from companion.frontends.server import create_app, serve_forever
    from companion.frontends.server.auth import check_bind

    updates = {"host": host, "port": port, "token": token, "voice": voice}
    settings.serve = settings.serve.model_copy(update={k: v for k, v in updates.items() if v is not None})
    if character:
        settings.serve.characters = list(character)
        settings.serve.default_character = character[0]
    if onebot:
        settings.serve.onebot = True
    if settings.serve.voice not in ("auto", "on", "off"):
        raise typer.BadParameter("--voice must be auto, on or off")
    check_bind(settings.serve)
    hub = CompanionHub(settings, characters=settings.serve.characters)
    if settings.serve.voice == "on" and (missing := hub.speech.missing()):
        raise CompanionError(f"--voice on, but {' and '.join(missing)} cannot run: pip install 'companion[voice]'")
    ids = hub.character_ids()
    default = settings.serve.default_character if settings.serve.default_character in ids else (ids or ["?"])[0]
    _warm(hub, default)
    app = create_app(settings, hub)
    shown = "127.0.0.1" if settings.serve.host in ("0.0.0.0", "::") else settings.serve.host
    err_console.print(
        f"[bold]companion[/] serving {', '.join(ids)} on http://{shown}:{settings.serve.port}/  "
        f"(OpenAI API at /v1, events at /v1/ws{', QQ at /onebot/v11/ws' if settings.serve.onebot else ''})"
    )
    serve_forever(app, settings.serve)


@_with_settings
def discord(
    settings: Settings,
    character: Annotated[str | None, typer.Option("--character", "-c", help="Default character.")] = None,
    token: Annotated[
        str | None, typer.Option(help="Bot token.", envvar=["COMPANION_DISCORD__TOKEN", "DISCORD_TOKEN"])
    ] = None,
) -> None:
    """Run the character as a Discord bot (enable the Message Content intent in the developer portal)."""
    from companion.errors import CompanionError
    from companion.frontends.discord_bot import run_bot
    from companion.frontends.hub import CompanionHub

    if character:
        settings.discord.character = character
    if token:
        settings.discord.token = token
    if not settings.discord.token:
        raise CompanionError("no Discord bot token: pass --token or set DISCORD_TOKEN (see the README, Discord)")
    hub = CompanionHub(settings, characters=settings.discord.characters)
    _warm(hub, settings.discord.character)
    run_bot(settings, hub)


@_with_settings
def onebot(
    settings: Settings,
    character: Annotated[str | None, typer.Option("--character", "-c", help="Character id.")] = None,
    connect: Annotated[
        str | None, typer.Option(help="Forward mode: the OneBot implementation's WebSocket URL to connect to.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Reverse mode: address to listen on (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Reverse mode: port (8080).")] = None,
    access_token: Annotated[
        str | None, typer.Option(help="OneBot access token.", envvar="COMPANION_ONEBOT__ACCESS_TOKEN")
    ] = None,
) -> None:
    """Run the character as a QQ bot through OneBot v11 (NapCat, Lagrange, LLOneBot).

    Reverse mode (default): point the implementation's reverse WebSocket at
    ws://HOST:PORT/onebot/v11/ws. Forward mode: --connect ws://127.0.0.1:3001.
    """
    from companion.frontends.hub import CompanionHub
    from companion.frontends.onebot import run_onebot

    updates = {"character": character, "host": host, "port": port, "access_token": access_token}
    if connect:
        updates.update(mode="forward", url=connect)
    settings.onebot = settings.onebot.model_copy(update={k: v for k, v in updates.items() if v is not None})
    hub = CompanionHub(settings, characters=[settings.onebot.character])
    _warm(hub, settings.onebot.character)
    run_onebot(settings, hub)
