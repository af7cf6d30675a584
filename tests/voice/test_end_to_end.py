"""A recording in, her spoken reply out, with the real embedded models (Whisper base, Gemma-3-270M, Piper)."""

from __future__ import annotations

import asyncio
import json

import pytest

from companion.history import HistoryStore
from companion.session import Companion
from companion.voice.audio import decode_audio
from companion.voice.loop import VoiceAgent
from companion.voice.metrics import wer
from companion.voice.pipeline import speech_processors
from companion.voice.runner import VoiceStack, reply_to_file

pytestmark = pytest.mark.slow


def test_recording_to_spoken_reply(local_llm, whisper, piper, character, voice_settings, speech_dir, tmp_path):
    voice_settings.max_new_tokens = 24
    companion = Companion(
        character=character,
        settings=voice_settings,
        llm=local_llm,
        history=HistoryStore(tmp_path / "history.sqlite3"),
        processors=speech_processors(character, voice_settings),
    )
    agent = VoiceAgent(companion, whisper, companion.key(channel="voice"), languages=["en"])
    stack = VoiceStack(companion=companion, asr=whisper, agent=agent, settings=voice_settings)
    shown = []
    out = tmp_path / "out"
    result = asyncio.run(reply_to_file(stack, speech_dir / "librispeech-1995-1837-0001.wav", out, shown.append))
    reference = (
        "IT WAS THE FIRST GREAT SORROW OF HIS LIFE IT WAS NOT SO MUCH THE LOSS OF THE COTTON ITSELF "
        "BUT THE FANTASY THE HOPES THE DREAMS BUILT AROUND IT"
    )
    assert wer(reference, result["transcript"]) <= 0.05
    assert result["reply"] and result["sentences"]
    assert result["first_audio_s"] is not None and result["first_audio_s"] < result["total_s"]
    reply_audio = decode_audio(out / "librispeech-1995-1837-0001.reply.wav", sample_rate=None)
    assert reply_audio.sample_rate == 22050 and reply_audio.duration > 0.5
    saved = json.loads((out / "librispeech-1995-1837-0001.json").read_text(encoding="utf-8"))
    assert saved["transcript"] == result["transcript"]
    assert shown[0].type == "transcript"
    history = companion.history.load(agent.key)
    assert history[0].content == result["transcript"] and history[-1].role == "assistant"
