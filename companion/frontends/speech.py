"""What the network frontends take from the voice pipeline: sentences and expressions for any
text turn, and, when the voice extra is installed, speech recognition and audio events.

The text path never depends on the voice extra: without it, a turn still yields sentence and
expression events (the avatar reacts), only no audio.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from companion.config import PluginSpec, Settings
from companion.errors import CompanionError
from companion.events import Event, ExpressionEvent, SentenceEvent, TextDeltaEvent, TurnEndEvent
from companion.session import Companion, Processor

log = logging.getLogger(__name__)

ASR_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Heard:
    text: str
    language: str | None = None


def sentence_processor(companion: Companion) -> Processor:
    """Text deltas -> sentence events (tags parsed out) and expression events (via the card's map)."""
    from companion.voice.text import SentenceSplitter, parse_tags

    expressions = {k.lower(): v for k, v in companion.character.settings.expressions.items()}

    async def process(events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        splitter = SentenceSplitter()
        index = 0
        last_emotion: str | None = None

        def sentences(raws: list[str], turn_id: str) -> list[Event]:
            nonlocal index, last_emotion
            out: list[Event] = []
            for raw in raws:
                parsed = parse_tags(raw, expressions)
                if parsed.emotion and parsed.emotion != last_emotion:
                    last_emotion = parsed.emotion
                    out.append(
                        ExpressionEvent(
                            turn_id=turn_id, emotion=parsed.emotion, expression=expressions.get(parsed.emotion)
                        )
                    )
                if parsed.text or parsed.actions:
                    out.append(
                        SentenceEvent(
                            turn_id=turn_id,
                            index=index,
                            text=parsed.text,
                            emotion=parsed.emotion,
                            actions=parsed.actions,
                        )
                    )
                    index += 1
            return out

        async for event in events:
            if isinstance(event, TextDeltaEvent):
                yield event
                for out in sentences(splitter.feed(event.text), event.turn_id):
                    yield out
            elif isinstance(event, TurnEndEvent):
                for out in sentences(splitter.flush(), event.turn_id):
                    yield out
                yield event
            else:
                yield event

    return process


class Speech:
    """Speech recognition and synthesis for frontends, loaded on first use."""

    def __init__(self, settings: Settings, mode: str = "auto") -> None:
        self.settings = settings
        self.mode = mode
        self._asr: Any = None
        self._lock = threading.Lock()

    @property
    def asr_available(self) -> bool:
        if self.mode == "off":
            return False
        return importlib.util.find_spec("faster_whisper") is not None and _has_module("companion.voice.asr")

    @property
    def tts_available(self) -> bool:
        if self.mode == "off":
            return False
        return _speech_processor_factory() is not None

    def describe(self) -> dict[str, bool]:
        return {"asr": self.asr_available, "tts": self.tts_available}

    def text_processors(self, companion: Companion) -> list[Processor]:
        if not _has_module("companion.voice.text"):
            return []
        return [sentence_processor(companion)]

    def speech_processors(self, companion: Companion) -> list[Processor]:
        """Sentences, expressions and audio events; falls back to text-only without TTS."""
        factory = _speech_processor_factory() if self.mode != "off" else None
        if factory is None:
            return self.text_processors(companion)
        return list(factory(companion, self.settings))

    def _load_asr(self) -> Any:
        with self._lock:
            if self._asr is None:
                from companion.session import shared_plugin

                spec = getattr(self.settings, "asr", None) or PluginSpec(plugin="faster-whisper")
                self._asr = shared_plugin("asr", spec, self.settings)
            return self._asr

    async def transcribe(self, samples: np.ndarray, languages: list[str] | None = None) -> Heard:
        if not self.asr_available:
            raise CompanionError("speech input needs the voice extra: pip install 'companion[voice]'")
        asr = await asyncio.to_thread(self._load_asr)
        result = await asyncio.to_thread(asr.transcribe, samples, languages=languages)
        return Heard(text=result.text.strip(), language=getattr(result, "language", None))


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _speech_processor_factory():
    """The voice package's builder of speech processors, if it is installed and importable."""
    try:
        from companion.voice import pipeline  # type: ignore[attr-defined]
    except ImportError:
        return None
    return getattr(pipeline, "frontend_processors", None)
