"""What the network frontends take from the voice pipeline (companion.voice): sentences and
expressions for every text turn, and, when the voice extra is installed, speech recognition and
audio events.

The text path never depends on the voice extra: without it a turn still yields sentence and
expression events (the avatar reacts), only no audio.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import shutil
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from companion.config import PluginSpec, Settings
from companion.errors import CompanionError
from companion.session import Companion, Processor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Heard:
    text: str
    language: str | None = None


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ModuleNotFoundError, ValueError):
        return False


# What each TTS plugin needs beyond its own module (checked without loading a voice).
_TTS_NEEDS = {"piper": lambda: _has_module("piper"), "espeak-ng": lambda: shutil.which("espeak-ng") is not None}


class Speech:
    """Speech recognition and synthesis for frontends; models load on first use."""

    def __init__(self, settings: Settings, mode: str = "auto") -> None:
        self.settings = settings
        self.mode = mode
        self._asr: Any = None
        self._lock = threading.Lock()
        self._broken_tts: str | None = None

    # -- what is possible ------------------------------------------------------------------------
    @property
    def asr_available(self) -> bool:
        return self.mode != "off" and _has_module("faster_whisper") and _has_module("companion.voice.asr")

    @property
    def tts_available(self) -> bool:
        if self.mode == "off" or self._broken_tts or not _has_module("companion.voice.pipeline"):
            return False
        spec = getattr(self.settings, "tts", None)
        plugin = spec.plugin if spec is not None else "piper"
        return _TTS_NEEDS.get(plugin, lambda: True)()

    def describe(self) -> dict[str, Any]:
        return {"asr": self.asr_available, "tts": self.tts_available, "tts_error": self._broken_tts}

    def missing(self) -> list[str]:
        """What `voice = "on"` lacks, for the error at start-up."""
        out = []
        if not self.asr_available:
            out.append("speech recognition (faster-whisper)")
        if not self.tts_available:
            out.append(f"speech synthesis ({getattr(getattr(self.settings, 'tts', None), 'plugin', 'piper')})")
        return out

    # -- processors ------------------------------------------------------------------------------
    def text_processors(self, companion: Companion) -> list[Processor]:
        """Sentences (tags parsed out) and expression events."""
        try:
            from companion.voice.pipeline import speech_processors
        except ImportError as exc:  # the text stage is plain Python; this should not happen
            log.warning("no sentence/expression events: %s", exc)
            return []
        return speech_processors(companion.character, self.settings, with_audio=False)

    def speech_processors(self, companion: Companion) -> list[Processor]:
        """Sentences, expressions and audio; text-only when her voice cannot be built."""
        if not self.tts_available:
            return self.text_processors(companion)
        try:
            from companion.voice.pipeline import frontend_processors

            return list(frontend_processors(companion, self.settings))
        except CompanionError as exc:
            self._broken_tts = str(exc)
            log.warning("speech synthesis unavailable, replies are text only: %s", exc)
            return self.text_processors(companion)

    # -- listening -------------------------------------------------------------------------------
    def languages(self, companion: Companion) -> list[str] | None:
        try:
            from companion.voice.pipeline import asr_languages

            return asr_languages(companion.character, self.settings) or None
        except (ImportError, AttributeError):
            return None

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
