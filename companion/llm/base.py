"""The `llm` plugin kind: stream a reply to chat messages, count tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field

from companion.messages import ChatMessage


class GenerationParams(BaseModel):
    max_new_tokens: int = 200
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None


class GenerationRequest(BaseModel):
    messages: list[ChatMessage]
    params: GenerationParams = Field(default_factory=GenerationParams)
    adapter: Path | None = None
    """The character's LoRA adapter folder, for plugins that apply adapters locally."""


@runtime_checkable
class LLM(Protocol):
    def count_tokens(self, text: str) -> int: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """Text pieces as they are generated. Closing the iterator stops generation."""
        ...


class StopStringFilter:
    """Holds back text that might be the start of a stop string; reports when one is hit."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        keep = max((len(s) - 1 for s in self.stops), default=0)
        for size in range(min(keep, len(self.pending)), 0, -1):
            if any(s.startswith(self.pending[-size:]) for s in self.stops):
                out, self.pending = self.pending[:-size], self.pending[-size:]
                return out
        out, self.pending = self.pending, ""
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out
