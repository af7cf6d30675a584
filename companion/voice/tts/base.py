"""The `tts` plugin kind: text to speech, chunk by chunk, plus routing sentences to a voice by language.

A plugin yields `Audio` chunks (mono float32 with their rate) as soon as each is ready, and says
which languages it speaks (`None`: any). Every TTS plugin's settings share the card's voice fields:
`voice`, `speed`, `language`, `reference_audio`, `reference_text`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from companion.voice.audio import Audio
from companion.voice.text import base_language, detect_language


class TTSSettings(BaseModel):
    """What the card's `voice:` block says, understood by every TTS plugin."""

    model_config = ConfigDict(extra="ignore")
    voice: str | None = None
    speed: float = 1.0
    language: str | None = None
    reference_audio: str | None = None
    reference_text: str | None = None


@runtime_checkable
class TTS(Protocol):
    def languages(self) -> set[str] | None:
        """Base language codes this voice speaks ('en', 'zh'), or None for any."""
        ...

    def synthesize(self, text: str, language: str | None = None) -> Iterator[Audio]:
        """Speech for `text` in chunks, the first as early as possible."""
        ...


class VoiceRouter:
    """Speaks each sentence with the character's voice when it knows the sentence's language, else
    with a fallback (espeak-ng by default, which speaks almost every language without a download)."""

    def __init__(self, primary: TTS, fallback: TTS | None = None, default_language: str | None = None) -> None:
        self.primary = primary
        self.fallback = fallback
        self.default_language = base_language(default_language) or "en"

    def pick(self, text: str) -> tuple[TTS, str]:
        language = detect_language(text, default=self.default_language)
        spoken = self.primary.languages()
        if spoken is None or language in spoken or self.fallback is None:
            return self.primary, language
        return self.fallback, language

    def languages(self) -> set[str] | None:
        return None if self.fallback is not None else self.primary.languages()

    def synthesize(self, text: str, language: str | None = None) -> Iterator[Audio]:
        voice, detected = self.pick(text)
        yield from voice.synthesize(text, language or detected)
