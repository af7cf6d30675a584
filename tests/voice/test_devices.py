"""The sounddevice glue, against a stand-in PortAudio: the speaker callback plays queued sentences
at the device rate and knows how much was heard; the microphone delivers 16 kHz frames."""

from __future__ import annotations

import asyncio
import sys
import threading
import types

import numpy as np
import pytest

from companion.errors import CompanionError
from companion.events import AudioEvent
from companion.voice.audio import lip_sync_volumes, wav_b64


class FakeStream:
    def __init__(self, callback=None, samplerate=48000, blocksize=0, **kwargs):
        self.callback, self.samplerate, self.blocksize = callback, samplerate, blocksize
        self.active = False

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def close(self):
        pass

    def __enter__(self):
        self.start()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.active = False

    def _run(self):  # a microphone at 48 kHz: a 440 Hz tone in blocks
        t = 0
        while self.active and t < self.samplerate:
            block = np.sin(2 * np.pi * 440 * (t + np.arange(self.blocksize)) / self.samplerate).astype(np.float32)
            self.callback(block.reshape(-1, 1), self.blocksize, None, None)
            t += self.blocksize


@pytest.fixture
def fake_sounddevice(monkeypatch):
    module = types.SimpleNamespace()
    module.PortAudioError = type("PortAudioError", (Exception,), {})
    module.devices = {
        "input": {"name": "Fake Mic", "default_samplerate": 48000.0},
        "output": {"name": "Fake Speaker", "default_samplerate": 48000.0},
    }

    def query_devices(device=None, kind=None):
        if kind not in module.devices:
            raise ValueError(f"No {kind} device")
        return module.devices[kind]

    def check_input_settings(**kwargs):
        raise module.PortAudioError("Invalid sample rate")  # like many USB mics: 48 kHz only

    module.query_devices = query_devices
    module.check_input_settings = check_input_settings
    module.InputStream = FakeStream
    module.OutputStream = FakeStream
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    return module


def event(index, text, seconds, rate=22050):
    samples = (0.5 * np.sin(np.linspace(0, 2 * np.pi * 220 * seconds, int(rate * seconds)))).astype(np.float32)
    return AudioEvent(
        sentence_index=index,
        text=text,
        sample_rate=rate,
        audio_wav_b64=wav_b64(samples, rate),
        volumes=lip_sync_volumes(samples, rate),
    )


def test_speaker_plays_at_device_rate_and_tracks_what_was_heard(fake_sounddevice):
    from companion.voice.devices import Speaker

    speaker = Speaker()
    assert speaker.rate == 48000 and speaker.stream.active
    speaker.play(event(0, "First sentence.", 0.5))
    speaker.play(event(1, "Second sentence here.", 1.0))
    assert speaker.playing
    out = np.zeros((4800, 1), dtype=np.float32)
    heard = []
    for _ in range(13):  # 1.3 s: all of sentence 0, most of sentence 1
        speaker.stream.callback(out, 4800, None, None)
        heard.append(out[:, 0].copy())
    audio = np.concatenate(heard)
    assert np.abs(audio[: 48000 // 2]).max() > 0.3  # sound came out at the device's rate
    spoken = speaker.stop()
    assert spoken[0] == ("First sentence.", 1.0)
    assert spoken[1][0] == "Second sentence here." and 0.7 < spoken[1][1] < 1.0
    assert not speaker.playing
    speaker.stream.callback(out, 4800, None, None)
    assert np.abs(out).max() == 0.0  # silence after a stop
    speaker.close()


def test_microphone_resamples_to_16k(fake_sounddevice):
    from companion.voice.devices import Microphone

    mic = Microphone()
    assert mic.rate == 48000 and mic.name == "Fake Mic"

    async def take():
        frames = []
        async for frame in mic.frames():
            frames.append(frame)
            if sum(len(f) for f in frames) >= 8000:
                break
        return np.concatenate(frames)

    audio = asyncio.run(take())
    assert len(audio) >= 8000
    peak = np.argmax(np.abs(np.fft.rfft(audio[1000:8000]))) * 16000 / 7000
    assert peak == pytest.approx(440, abs=5)


def test_missing_devices_say_how_to_fix(fake_sounddevice):
    from companion.voice.devices import Microphone, Speaker

    fake_sounddevice.devices = {}
    with pytest.raises(CompanionError, match=r"no microphone.*--input-device.*--input speech\.wav"):
        Microphone()
    with pytest.raises(CompanionError, match=r"no speaker.*--output-device"):
        Speaker()
