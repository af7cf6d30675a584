"""The WebSocket protocol of `companion serve`, version 1.

Client -> server: one JSON object per text frame, `type` picks the message; binary frames are
raw speech (16-bit little-endian mono PCM at `sample_rate`, 16 kHz unless `audio_start` said
otherwise) ended by an `audio_end` message.

Server -> client: the turn events of `companion.events` (transcript, context, text_delta,
sentence, expression, audio, turn_end, interrupted, error) plus the control messages below.
Every message has `type` and `v`. `GET /v1/events/schema` publishes all of it as JSON Schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from companion.events import EVENT_SCHEMA_VERSION, ErrorEvent, event_json_schema

PROTOCOL_VERSION = 1


class _ClientMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = Field(default=None, max_length=128)
    """Optional client id of the message, echoed in `accepted`, `turn_start` and errors."""


class HelloMessage(_ClientMessage):
    """Optional first message: choose the character, your display name and the output format."""

    type: Literal["hello"]
    character: str | None = Field(default=None, max_length=64)
    user_name: str | None = Field(default=None, max_length=64)
    speak: bool | None = None
    """Ask for audio events (when the server can speak)."""
    audio_format: Literal["companion", "vtuber"] | None = None


class TextMessage(_ClientMessage):
    type: Literal["text"]
    text: str


class AudioMessage(_ClientMessage):
    """A whole utterance as a base64 audio file (WAV, FLAC, MP3, OGG, WebM...)."""

    type: Literal["audio"]
    data: str
    language: str | None = Field(default=None, max_length=16)


class AudioStartMessage(_ClientMessage):
    """Binary PCM frames follow (16-bit LE mono at `sample_rate`) until `audio_end`."""

    type: Literal["audio_start"]
    sample_rate: int = Field(default=16_000, ge=8_000, le=48_000)
    language: str | None = Field(default=None, max_length=16)


class AudioEndMessage(_ClientMessage):
    type: Literal["audio_end"]


class InterruptMessage(_ClientMessage):
    """Stop the current turn (the user spoke again or pressed stop)."""

    type: Literal["interrupt"]
    heard_text: str | None = None


class ResetMessage(_ClientMessage):
    """Forget this conversation (this character, this user, this channel)."""

    type: Literal["reset"]


class PingMessage(_ClientMessage):
    type: Literal["ping"]


ClientMessage = Annotated[
    HelloMessage
    | TextMessage
    | AudioMessage
    | AudioStartMessage
    | AudioEndMessage
    | InterruptMessage
    | ResetMessage
    | PingMessage,
    Field(discriminator="type"),
]
CLIENT_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
CLIENT_TYPES = frozenset({"hello", "text", "audio", "audio_start", "audio_end", "interrupt", "reset", "ping"})


class _ServerMessage(BaseModel):
    v: int = EVENT_SCHEMA_VERSION


class HistoryItem(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class SessionMessage(_ServerMessage):
    """Sent on connect and after `hello`: who she is and what this connection can do."""

    type: Literal["session"] = "session"
    protocol: int = PROTOCOL_VERSION
    session_id: str
    character: str
    name: str
    display_name: str
    user: str
    characters: list[str]
    expressions: dict[str, str | int] = Field(default_factory=dict)
    live2d_model: str | None = None
    avatar_url: str | None = None
    can_listen: bool = False
    can_speak: bool = False
    speak: bool = False
    audio_format: str = "companion"
    greeting: str | None = None
    history: list[HistoryItem] = Field(default_factory=list)
    limits: dict[str, Any] = Field(default_factory=dict)


class AcceptedMessage(_ServerMessage):
    """An input was queued; `queued` inputs are now waiting (this one included)."""

    type: Literal["accepted"] = "accepted"
    id: str | None = None
    queued: int


class TurnStartMessage(_ServerMessage):
    """A turn for input `id` begins; its events follow until its `turn_end`."""

    type: Literal["turn_start"] = "turn_start"
    id: str | None = None
    text: str


class ResetDoneMessage(_ServerMessage):
    type: Literal["reset_done"] = "reset_done"
    id: str | None = None
    greeting: str | None = None


class PongMessage(_ServerMessage):
    type: Literal["pong"] = "pong"
    id: str | None = None


ControlMessage = Annotated[
    SessionMessage | AcceptedMessage | TurnStartMessage | ResetDoneMessage | PongMessage,
    Field(discriminator="type"),
]
CONTROL_ADAPTER: TypeAdapter[ControlMessage] = TypeAdapter(ControlMessage)


def error(message: str, code: str, *, turn_id: str = "", ref: str | None = None) -> ErrorEvent:
    if ref:
        message = f"{message} (message {ref})"
    return ErrorEvent(turn_id=turn_id, message=message, code=code)


def protocol_schema() -> dict[str, Any]:
    """Everything on the wire, as JSON Schema, with the version a client should check."""
    return {
        "version": EVENT_SCHEMA_VERSION,
        "protocol": PROTOCOL_VERSION,
        "events": event_json_schema(),
        "control": CONTROL_ADAPTER.json_schema(),
        "client": CLIENT_ADAPTER.json_schema(),
        "binary_frames": "16-bit little-endian mono PCM between audio_start and audio_end",
        "error_codes": ERROR_CODES,
    }


ERROR_CODES = {
    "bad_json": "the frame is not a JSON object",
    "bad_message": "the message does not match its type's schema",
    "unknown_type": "no such message type",
    "too_long": "the text or audio is over the server's limit",
    "busy": "too many inputs are waiting; this one was dropped",
    "rate_limited": "too many turns; wait and retry",
    "no_speech": "the audio held no speech",
    "bad_audio": "the audio could not be decoded",
    "voice_unavailable": "the server cannot listen or speak (voice extra not installed)",
    "unknown_character": "no such character is served here",
    "turn_failed": "the turn failed (model or plugin error)",
}
