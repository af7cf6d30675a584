"""Speech over the WebSocket with the real voice pipeline: Whisper hears, Piper speaks, and the
Open-LLM-VTuber format carries the audio with lip-sync volumes and expressions."""

from __future__ import annotations

import asyncio
import base64
import io
import wave

import numpy as np
import pytest

from companion.frontends.server import create_app
from companion.frontends.speech import Speech
from companion.history import ConversationKey
from tests.frontends.wsclient import Client, ws_url
from tests.support.uvicorn_server import running

pytestmark = pytest.mark.slow


@pytest.fixture
def voice_speech(frontend_settings) -> Speech:
    speech = Speech(frontend_settings, mode="on")
    if speech.missing():
        pytest.skip(f"voice extra incomplete: {', '.join(speech.missing())}")
    return speech


def spoken(frontend_settings, text: str) -> bytes:
    """`text` read by Piper, as a WAV file (what a user's recording would be)."""
    from companion.plugins import PluginContext
    from companion.voice.audio import wav_bytes
    from companion.voice.tts.piper import PiperSettings, PiperTTS

    tts = PiperTTS(PiperSettings(), PluginContext(data_dir=frontend_settings.data_dir))
    chunks = list(tts.synthesize(text))
    return wav_bytes(np.concatenate([c.samples for c in chunks]), chunks[0].sample_rate)


def test_speech_in_speech_out_and_vtuber_payloads(make_hub, frontend_settings, voice_speech) -> None:
    question = spoken(frontend_settings, "What is your favourite colour?")
    hub = make_hub(speech=voice_speech)
    app = create_app(frontend_settings, hub)

    async def go(base: str) -> tuple[list[dict], list[dict], list[dict]]:
        client = await Client.connect(ws_url(base, user="speaker", character="scripted"))
        session = await client.recv()
        assert session["can_listen"] and session["can_speak"] and session["speak"]
        await client.send({"type": "audio", "data": base64.b64encode(question).decode(), "id": "a1"})
        events = await client.until("turn_end", timeout=300)
        # The same speech as raw PCM frames (Piper's 22.05 kHz), streamed in pieces, then interrupted.
        with wave.open(io.BytesIO(question)) as wav:
            pcm = wav.readframes(wav.getnframes())
        await client.send({"type": "audio_start", "sample_rate": 22050})
        for i in range(0, len(pcm), 8820):
            await client.send(pcm[i : i + 8820])
        await client.send({"type": "audio_end"})
        streamed = await client.until("audio", timeout=300)
        await client.send({"type": "interrupt", "heard_text": "Hello there! I am so—"})
        streamed += await client.until("turn_end", timeout=60)
        await client.close()
        vtuber = await Client.connect(ws_url(base, "/client-ws", user="olv", character="scripted"))
        first = [await vtuber.recv(), await vtuber.recv()]
        await vtuber.send({"type": "text-input", "text": "hello!"})
        olv = first + await vtuber.until("control", timeout=120)
        while olv[-1].get("text") != "conversation-chain-end":
            olv.append(await vtuber.recv(timeout=300))
        await vtuber.close()
        return events, streamed, olv

    with running(app) as base:
        events, streamed, olv = asyncio.run(go(base))
    transcript = next(e for e in events if e["type"] == "transcript")
    assert "colo" in transcript["text"].lower() and transcript["language"] == "en"
    audio = [e for e in events if e["type"] == "audio"]
    assert audio and {e["type"] for e in events} >= {"sentence", "expression", "audio", "turn_end"}
    for event in audio:
        with wave.open(io.BytesIO(base64.b64decode(event["audio_wav_b64"]))) as wav:
            seconds = wav.getnframes() / wav.getframerate()
        assert seconds > 0.3 and abs(len(event["volumes"]) * event["slice_ms"] / 1000 - seconds) < 0.05
        assert max(event["volumes"]) == 1.0
    assert next(e for e in events if e["type"] == "expression")["expression"] == "smile"
    # PCM frames at 22.05 kHz were heard too; the interrupt kept what was heard in history.
    assert "colo" in next(e for e in streamed if e["type"] == "transcript")["text"].lower()
    assert streamed[-1]["interrupted"]
    history = hub.base("scripted").history.load(ConversationKey(character="scripted", user="speaker", channel="web"))
    assert history[-1].content == "Hello there! I am so—"
    # Open-LLM-VTuber: set-model-and-conf, then per sentence an audio payload it can play.
    assert olv[1]["type"] == "set-model-and-conf" and olv[1]["model_info"]["emotionMap"] == {
        "joy": "smile",
        "sad": "tears",
    }
    payloads = [m for m in olv if m["type"] == "audio"]
    assert payloads and all(p["audio"] and p["volumes"] and p["slice_length"] == 20 for p in payloads)
    assert payloads[0]["display_text"] == {
        "text": payloads[0]["display_text"]["text"],
        "name": "Scripty",
        "avatar": None,
    }
    assert payloads[0]["actions"] == {"expressions": ["smile"]}
    kinds = [m.get("text") if m["type"] == "control" else m["type"] for m in olv]
    assert kinds.index("conversation-chain-start") < kinds.index("audio") < kinds.index("conversation-chain-end")
    assert "backend-synth-complete" in kinds
