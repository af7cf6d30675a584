"""Typed, versioned events of a turn. Frontends subscribe to these and nothing else.

On the wire (WebSocket, SSE) each event is one JSON object with `type` and `v`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

EVENT_SCHEMA_VERSION = 1


class _Event(BaseModel):
    v: int = EVENT_SCHEMA_VERSION
    turn_id: str = ""


class TranscriptEvent(_Event):
    """What ASR heard the user say."""

    type: Literal["transcript"] = "transcript"
    text: str
    language: str | None = None
    final: bool = True


class ContextEvent(_Event):
    """What retrieval put into the prompt (lorebook, knowledge, memory, classic lines)."""

    type: Literal["context"] = "context"
    blocks: list[ContextBlock]


class TextDeltaEvent(_Event):
    type: Literal["text_delta"] = "text_delta"
    text: str


class SentenceEvent(_Event):
    """A complete sentence as it will be spoken: tags removed, emotion and actions split out."""

    type: Literal["sentence"] = "sentence"
    index: int
    text: str
    emotion: str | None = None
    actions: list[str] = Field(default_factory=list)


class ExpressionEvent(_Event):
    type: Literal["expression"] = "expression"
    emotion: str
    expression: str | int | None = None


class AudioEvent(_Event):
    """Speech for one sentence: base64 WAV and lip-sync volumes (RMS per window, 0..1)."""

    type: Literal["audio"] = "audio"
    sentence_index: int
    text: str
    sample_rate: int
    audio_wav_b64: str
    volumes: list[float]
    slice_ms: int = 20


class TurnEndEvent(_Event):
    type: Literal["turn_end"] = "turn_end"
    text: str
    interrupted: bool = False


class InterruptedEvent(_Event):
    type: Literal["interrupted"] = "interrupted"
    heard_text: str


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    message: str
    code: str = "error"


class ContextBlock(BaseModel):
    """One piece of retrieved context and where it came from."""

    kind: Literal["lorebook", "knowledge", "memory", "classic_line"]
    text: str
    source: str = ""
    score: float | None = None


ContextEvent.model_rebuild()

Event = Annotated[
    TranscriptEvent
    | ContextEvent
    | TextDeltaEvent
    | SentenceEvent
    | ExpressionEvent
    | AudioEvent
    | TurnEndEvent
    | InterruptedEvent
    | ErrorEvent,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def event_json_schema() -> dict:
    return EVENT_ADAPTER.json_schema()
