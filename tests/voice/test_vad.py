"""Streaming Silero VAD and endpointing on real speech."""

from __future__ import annotations

import numpy as np
import pytest

from companion.voice.vad import Endpointer, SileroVAD


def run(endpointer: Endpointer, samples: np.ndarray, chunk: int) -> list:
    events = []
    for i in range(0, len(samples), chunk):
        events += endpointer.feed(samples[i : i + chunk])
    return events + endpointer.flush()


@pytest.fixture(scope="module")
def utterance(jfk):
    """Three seconds of silence, JFK's first phrase (0.34-2.23 s in the recording), silence."""
    silence = np.zeros(16000 * 3, dtype=np.float32)
    return np.concatenate([silence, jfk[: 16000 * 3 + 4000], silence])


def test_one_utterance_is_found_with_its_end_time(utterance):
    events = run(Endpointer(SileroVAD(), silence_ms=500), utterance, 320)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("end") == 1 and "pause" in kinds
    end = events[-1]
    assert 3.0 + 2.0 < end.time < 3.0 + 2.5  # the phrase ends 2.23 s into the recording
    assert end.audio is not None and 1.5 < len(end.audio) / 16000 < 3.5


def test_chunk_size_does_not_matter(utterance):
    a = [(e.kind, round(e.time, 3)) for e in run(Endpointer(SileroVAD()), utterance, 160)]
    b = [(e.kind, round(e.time, 3)) for e in run(Endpointer(SileroVAD()), utterance, 16000)]
    assert a == b


def test_silence_window_controls_the_split(jfk):
    short = [e for e in run(Endpointer(SileroVAD(), silence_ms=300), jfk, 512) if e.kind == "end"]
    long = [e for e in run(Endpointer(SileroVAD(), silence_ms=1500), jfk, 512) if e.kind == "end"]
    assert len(short) > len(long) >= 1


def test_silence_and_noise_are_not_speech():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.01, 16000 * 3).astype(np.float32)
    clicks = np.zeros(16000 * 2, dtype=np.float32)
    clicks[::4000] = 0.9
    for audio in (np.zeros(16000 * 3, dtype=np.float32), noise, clicks):
        assert run(Endpointer(SileroVAD()), audio, 480) == []
