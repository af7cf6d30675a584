"""Decoding any format/channels/rate, resampling, WAV, lip-sync volumes."""

from __future__ import annotations

import numpy as np
import pytest

from companion.errors import InputFileError
from companion.voice.audio import (
    decode_audio,
    is_silent,
    lip_sync_volumes,
    read_wav_b64,
    resample,
    wav_b64,
    wav_bytes,
)


@pytest.mark.parametrize(
    ("name", "seconds"),
    [
        ("jfk.flac", 11.0),  # 44.1 kHz, 24-bit, stereo FLAC
        ("cosyvoice_zero_shot_prompt.wav", 3.48),  # 24 kHz float32 WAV
        ("fw_hotwords.mp3", 4.0),  # MP3
        ("aishell-BAC009S0724W0121.wav", 4.28),  # 16 kHz 16-bit
    ],
)
def test_any_file_becomes_16k_mono_float(speech_dir, name, seconds):
    audio = decode_audio(speech_dir / name)
    assert audio.sample_rate == 16000
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.duration == pytest.approx(seconds, abs=0.05)
    assert 0.05 < np.abs(audio.samples).max() <= 1.5


def test_keeps_native_rate_and_picks_a_channel(speech_dir):
    stereo = speech_dir / "fw_stereo_diarization.wav"
    native = decode_audio(stereo, sample_rate=None)
    left = decode_audio(stereo, channel=0).samples
    right = decode_audio(stereo, channel=1).samples
    assert native.sample_rate != 16000 or native.duration == pytest.approx(5.0, abs=0.05)
    assert len(left) == len(right)
    assert not np.allclose(left, right)  # two different speakers
    with pytest.raises(InputFileError, match="channel 5"):
        decode_audio(stereo, channel=5)


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        decode_audio(tmp_path / "nope.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....not really audio" * 10)
    with pytest.raises(InputFileError, match=r"junk\.wav"):
        decode_audio(junk)


def test_resample_keeps_pitch_and_length():
    rate = 22050
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = resample(tone, rate, 16000)
    assert len(out) == pytest.approx(16000, abs=40)
    peak = np.argmax(np.abs(np.fft.rfft(out))) * 16000 / len(out)
    assert peak == pytest.approx(440, abs=3)


def test_wav_round_trip_from_bytes():
    tone = (0.3 * np.sin(np.linspace(0, 200, 8000))).astype(np.float32)
    assert wav_bytes(tone, 8000)[:4] == b"RIFF"
    back = read_wav_b64(wav_b64(tone, 8000))
    assert back.sample_rate == 8000
    assert np.abs(back.samples - tone).max() < 1e-3


def test_lip_sync_volumes_are_rms_per_20ms_scaled_to_one():
    rate = 16000
    loud = 0.8 * np.ones(rate // 10, dtype=np.float32)  # 100 ms
    quiet = 0.2 * np.ones(rate // 10, dtype=np.float32)
    silence = np.zeros(rate // 10, dtype=np.float32)
    volumes = lip_sync_volumes(np.concatenate([loud, quiet, silence]), rate, slice_ms=20)
    assert len(volumes) == 15
    assert volumes[:5] == [1.0] * 5
    assert volumes[5:10] == [0.25] * 5
    assert volumes[10:] == [0.0] * 5
    assert lip_sync_volumes(np.zeros(0, dtype=np.float32), rate) == []
    assert set(lip_sync_volumes(silence, rate)) == {0.0}


def test_silence_check():
    assert is_silent(np.zeros(16000, dtype=np.float32))
    assert is_silent(np.random.default_rng(0).normal(0, 1e-4, 16000).astype(np.float32))
    assert not is_silent(np.full(16000, 0.1, dtype=np.float32))
