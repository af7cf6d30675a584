"""Voice fixtures: the real small models (Whisper base, Piper, Silero), loaded once per session,
and a scripted LLM for pipeline mechanics (timing, cancellation) that a real model makes slow."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

CHARACTER_CARD = """\
name: Lumi
description: A test character.
first_mes: Hi!
extensions:
  companion:
    language: en
    voice: {plugin: piper, speed: 1.0}
    expressions: {joy: smile, sad: tears}
"""


@pytest.fixture(scope="session")
def speech_dir(testdata: Path) -> Path:
    folder = testdata / "speech"
    if not folder.is_dir():
        pytest.skip(f"real speech recordings not found at {folder} (set COMPANION_TESTDATA)")
    return folder


@pytest.fixture(scope="session")
def context(model_data_dir):
    from companion.plugins import PluginContext

    return PluginContext(data_dir=model_data_dir)


@pytest.fixture(scope="session")
def whisper(context):
    from companion.voice.asr import FasterWhisperASR, FasterWhisperSettings

    asr = FasterWhisperASR(FasterWhisperSettings(), context)
    asr.load()
    return asr


@pytest.fixture(scope="session")
def piper(context):
    from companion.voice.tts.piper import PiperSettings, PiperTTS

    tts = PiperTTS(PiperSettings(), context)
    tts.load()
    return tts


@pytest.fixture(scope="session")
def espeak():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from companion.voice.tts.espeak import EspeakSettings, EspeakTTS

    return EspeakTTS(EspeakSettings())


@pytest.fixture(scope="session")
def jfk(speech_dir) -> np.ndarray:
    from companion.voice.audio import decode_audio

    return decode_audio(speech_dir / "jfk.flac").samples


class ScriptedLLM:
    """Streams a fixed reply piece by piece with a delay, like a real model; records cancellation."""

    def __init__(self, reply: str = "", delay: float = 0.05, pieces: list[str] | None = None) -> None:
        self.reply = reply
        self.delay = delay
        self.pieces = pieces
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.requests = []

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    async def stream(self, request) -> AsyncIterator[str]:
        import time

        self.requests.append(request)
        self.started_at = time.monotonic()
        pieces = self.pieces if self.pieces is not None else [w + " " for w in self.reply.split(" ")]
        try:
            for piece in pieces:
                await asyncio.sleep(self.delay)
                yield piece
            self.finished.set()
            self.finished_at = time.monotonic()
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.set()
            raise


@pytest.fixture
def character(tmp_path):
    from companion.character import Character

    folder = tmp_path / "characters" / "lumi"
    (folder / "voice").mkdir(parents=True)
    (folder / "card.yaml").write_text(CHARACTER_CARD, encoding="utf-8")
    return Character.load(folder)


@pytest.fixture
def voice_settings(tmp_path, model_data_dir):
    from companion.config import Settings

    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(model_data_dir / "models", target_is_directory=True) if (
        model_data_dir / "models"
    ).is_dir() else None
    return Settings(data_dir=data, characters_dir=tmp_path / "characters", max_new_tokens=40, temperature=0.0)


@pytest.fixture
def make_companion(character, voice_settings, tmp_path):
    """A Companion with a scripted LLM and the voice processors (real Piper)."""
    from companion.history import HistoryStore
    from companion.session import Companion

    def build(llm, processors=None):
        return Companion(
            character=character,
            settings=voice_settings,
            llm=llm,
            history=HistoryStore(tmp_path / "history.sqlite3"),
            processors=list(processors or []),
        )

    return build


def collect(agen) -> list:
    async def run():
        return [event async for event in agen]

    return asyncio.run(run())
