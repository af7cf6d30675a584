"""Open-LLM-VTuber's WebSocket messages, so its Live2D frontends (web and desktop) can talk to us.

Their frontend sends `text-input`, `mic-audio-data` (float samples at 16 kHz), `mic-audio-end`
and `interrupt-signal`, and plays `audio` payloads: base64 WAV, `volumes` (0..1 per
`slice_length` ms, for lip-sync), `display_text` and `actions.expressions`. A turn is wrapped in
`control` messages `conversation-chain-start` / `conversation-chain-end`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from companion.events import (
    AudioEvent,
    ErrorEvent,
    ExpressionEvent,
    SentenceEvent,
    TranscriptEvent,
    TurnEndEvent,
)
from companion.frontends.server.protocol import SessionMessage, TurnStartMessage

IGNORED = frozenset(
    {
        "frontend-playback-complete",
        "audio-play-start",
        "heartbeat",
        "fetch-configs",
        "fetch-backgrounds",
        "fetch-history-list",
        "request-group-info",
        "switch-config",
        "ai-speak-signal",
    }
)


def decode(message: dict[str, Any]) -> dict[str, Any] | list[float] | None:
    """An Open-LLM-VTuber client message as one of ours; a list of floats for `mic-audio-data`;
    None for their messages we have nothing to do for. Our own messages pass through."""
    kind = message.get("type")
    if kind == "text-input":
        return {"type": "text", "text": message.get("text", "")}
    if kind == "mic-audio-data":
        audio = message.get("audio")
        if not isinstance(audio, list) or not all(isinstance(x, int | float) for x in audio):
            return {"type": "audio_chunk_invalid"}
        return [float(x) for x in audio]
    if kind == "mic-audio-end":
        return {"type": "audio_end"}
    if kind == "interrupt-signal":
        return {"type": "interrupt", "heard_text": message.get("text")}
    if kind in IGNORED:
        return None
    return message


class VtuberEncoder:
    """Our events as Open-LLM-VTuber messages; expression events ride on the next audio payload."""

    def __init__(self) -> None:
        self.name = ""
        self.avatar: str | None = None
        self.pending_expressions: list[str | int] = []
        self.spoke = False
        self.speaking = False
        """Set by the connection when this client gets audio: sentences then come with their audio."""

    def encode(self, message: BaseModel) -> list[str]:
        out: list[dict[str, Any]] = []
        if isinstance(message, SessionMessage):
            self.name = message.display_name
            self.avatar = message.avatar_url
            out.append({"type": "full-text", "text": "Connection established"})
            out.append(
                {
                    "type": "set-model-and-conf",
                    "model_info": {
                        "name": message.character,
                        "url": message.live2d_model or "",
                        "emotionMap": message.expressions,
                    },
                    "conf_name": message.display_name,
                    "conf_uid": message.character,
                    "client_uid": message.session_id,
                }
            )
        elif isinstance(message, TurnStartMessage):
            self.pending_expressions = []
            self.spoke = False
            out.append({"type": "control", "text": "conversation-chain-start"})
            out.append({"type": "full-text", "text": "Thinking..."})
        elif isinstance(message, TranscriptEvent):
            out.append({"type": "user-input-transcription", "text": message.text})
        elif isinstance(message, ExpressionEvent):
            self.pending_expressions.append(message.expression if message.expression is not None else message.emotion)
        elif isinstance(message, AudioEvent):
            self.spoke = True
            out.append(self._payload(message.text, message.audio_wav_b64, message.volumes, message.slice_ms))
        elif isinstance(message, SentenceEvent) and not self.speaking:
            out.append(self._payload(message.text, None, [], 20))
        elif isinstance(message, TurnEndEvent):
            out.append({"type": "backend-synth-complete"})
            out.append({"type": "control", "text": "conversation-chain-end"})
        elif isinstance(message, ErrorEvent):
            out.append({"type": "error", "message": message.message, "code": message.code})
        return [json.dumps(item, ensure_ascii=False) for item in out]

    def _payload(self, text: str, audio: str | None, volumes: list[float], slice_ms: int) -> dict[str, Any]:
        expressions, self.pending_expressions = self.pending_expressions, []
        return {
            "type": "audio",
            "audio": audio,
            "volumes": volumes,
            "slice_length": slice_ms,
            "display_text": {"text": text, "name": self.name, "avatar": self.avatar},
            "actions": {"expressions": expressions} if expressions else None,
            "forwarded": False,
        }
