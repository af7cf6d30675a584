"""Settings of the network frontends: `[serve]`, `[discord]` and `[onebot]` in the config file.

Secrets come best from the environment: COMPANION_SERVE__TOKEN, COMPANION_DISCORD__TOKEN
(or DISCORD_TOKEN), COMPANION_ONEBOT__ACCESS_TOKEN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class ServeSettings(BaseModel):
    """`companion serve`: WebSocket events, the web page, the OpenAI-compatible API."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    """Required on any address other than loopback. Clients send `Authorization: Bearer <token>`
    (HTTP) or `?token=` (WebSocket, web page). Whoever holds it may speak as any user."""
    user_tokens: dict[str, str] = Field(default_factory=dict)
    """token -> user id: a client with one of these tokens is always that user."""
    characters: list[str] = Field(default_factory=list)
    """Characters served (empty: every character found)."""
    default_character: str = "mochi"
    allowed_origins: list[str] = Field(default_factory=list)
    """Browser origins besides the server's own that may open the WebSocket without a token."""
    voice: Literal["auto", "on", "off"] = "auto"
    """Speech in and out on the WebSocket: auto = when the voice extra is installed."""
    audio_format: Literal["companion", "vtuber"] = "companion"
    """Default wire format; `vtuber` speaks Open-LLM-VTuber's messages so its Live2D frontends work."""
    live2d_dir: Path | None = None
    """Where the Cubism core and Live2D models live (default: <data_dir>/live2d), served at /live2d/."""
    onebot: bool = False
    """Also accept OneBot v11 (QQ) reverse WebSocket connections at /onebot/v11/ws."""
    max_connections: int = 64
    max_message_bytes: int = 4 * 1024 * 1024
    """Largest WebSocket frame; larger frames close the connection (1009)."""
    max_text_chars: int = 4000
    max_audio_seconds: float = 60.0
    input_queue: int = 4
    """Messages a connection may have waiting for a turn; more are refused with a `busy` error."""
    send_queue: int = 256
    """Events buffered per connection; a client that stops reading for `send_timeout_s` is dropped."""
    send_timeout_s: float = 30.0
    max_errors: int = 20
    """Protocol errors a connection may make before it is closed."""
    turns_per_minute: float = 20.0
    turn_burst: int = 5
    api_max_tokens: int = 1024
    """Cap on `max_tokens` in /v1/chat/completions."""


class DiscordSettings(BaseModel):
    """`companion discord`: a Discord bot (needs the privileged message-content intent)."""

    token: str | None = None
    character: str = "mochi"
    characters: list[str] = Field(default_factory=list)
    """Characters users may pick with /character (empty: every character found)."""
    channels: list[int] = Field(default_factory=list)
    """Channels where she answers every message (elsewhere: when mentioned or named)."""
    guilds: list[int] = Field(default_factory=list)
    """Guilds she works in (empty: any guild she is invited to)."""
    admins: list[int] = Field(default_factory=list)
    """Users who may run admin commands (/channel) and are never rate limited."""
    dms: bool = True
    answer_to_name: bool = True
    """In guild channels, also answer messages that address her by name."""
    turns_per_minute: float = 6.0
    turn_burst: int = 3
    voice_replies: bool = False
    """Speak replies in the voice channel she joined with /join (needs the voice extra and PyNaCl)."""
    sync_commands: bool = True


class OneBotSettings(BaseModel):
    """`companion onebot`: QQ through a OneBot v11 implementation (NapCat, Lagrange, LLOneBot)."""

    mode: Literal["reverse", "forward"] = "reverse"
    """reverse: the implementation connects to us at ws://host:port/onebot/v11/ws.
    forward: we connect to the implementation's WebSocket server at `url`."""
    host: str = "127.0.0.1"
    port: int = 8080
    url: str = "ws://127.0.0.1:3001"
    access_token: str | None = None
    character: str = "mochi"
    self_ids: list[int] = Field(default_factory=list)
    """Bot accounts accepted (empty: any)."""
    groups: list[int] = Field(default_factory=list)
    """Groups she answers in (empty: any)."""
    private: bool = True
    names: list[str] = Field(default_factory=list)
    """Words that address her in a group besides an @-mention (default: her name and nickname)."""
    voice_replies: bool = False
    """Also send each reply as a `record` (voice) segment, when the voice extra can speak it."""
    quote: bool = True
    """In groups, quote the message she answers."""
    turns_per_minute: float = 6.0
    turn_burst: int = 3
    group_turns_per_minute: float = 20.0
    group_turn_burst: int = 6
    max_reply_chars: int = 3000
    reconnect_s: float = 3.0
