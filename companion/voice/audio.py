"""Audio in and out: decode any file (any codec, channels, rate), resample, WAV bytes, lip-sync volumes.

Everything inside the voice pipeline is mono float32 in [-1, 1]. Decoding goes through PyAV
(FFmpeg, already a dependency of faster-whisper), so FLAC 24-bit stereo, float WAV at 24 kHz,
MP3, OGG/Opus, M4A all arrive the same way.
"""

from __future__ import annotations

import base64
import io
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from companion.errors import InputFileError

ASR_SAMPLE_RATE = 16_000
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".aiff", ".aif", ".wma")


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples and their rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0

    def resampled(self, sample_rate: int) -> Audio:
        return Audio(resample(self.samples, self.sample_rate, sample_rate), sample_rate)


def _av():
    from companion.plugins import require

    return require("av", feature="Decoding audio files", extra="voice")


def decode_audio(
    source: str | Path | bytes, sample_rate: int | None = ASR_SAMPLE_RATE, channel: int | None = None
) -> Audio:
    """Decode a file (or its bytes) to mono float32, resampled to `sample_rate` (None keeps the file's rate).

    `channel` picks one channel of a multi-channel file (0 = left); by default channels are averaged.
    """
    av = _av()
    label = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise InputFileError(label, "audio file not found")
    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        with av.open(handle, metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InputFileError(label, "no audio stream in this file")
            stream = container.streams.audio[0]
            rate = sample_rate or stream.codec_context.sample_rate or stream.rate
            layout = "mono" if channel is None else None
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
            parts: list[np.ndarray] = []
            for frame in container.decode(stream):
                frame.pts = None
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray())
            for out in resampler.resample(None):
                parts.append(out.to_ndarray())
    except InputFileError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as error:  # type: ignore[attr-defined]
        raise InputFileError(label, f"cannot decode audio: {error}") from None
    if not parts:
        return Audio(np.zeros(0, dtype=np.float32), rate)
    planes = np.concatenate(parts, axis=1)  # (channels, samples)
    if channel is None:
        samples = planes[0]
    else:
        if channel >= planes.shape[0]:
            raise InputFileError(label, f"has {planes.shape[0]} channel(s); channel {channel} does not exist")
        samples = planes[channel]
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling of mono float32 (libswresample through PyAV)."""
    samples = np.asarray(samples, dtype=np.float32)
    if from_rate == to_rate or samples.size == 0:
        return samples
    av = _av()
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="fltp", layout="mono")
    frame.sample_rate = from_rate
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=to_rate)
    parts = [f.to_ndarray()[0] for f in resampler.resample(frame)]
    parts += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)


def to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")


def from_int16(data: bytes | np.ndarray) -> np.ndarray:
    array = np.frombuffer(data, dtype="<i2") if isinstance(data, bytes) else np.asarray(data, dtype=np.int16)
    return (array.astype(np.float32) / 32768.0).astype(np.float32)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(to_int16(samples).tobytes())
    return out.getvalue()


def wav_b64(samples: np.ndarray, sample_rate: int) -> str:
    return base64.b64encode(wav_bytes(samples, sample_rate)).decode("ascii")


def read_wav_b64(data: str) -> Audio:
    return decode_audio(base64.b64decode(data), sample_rate=None)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_bytes(samples, sample_rate))
    return path


def lip_sync_volumes(samples: np.ndarray, sample_rate: int, slice_ms: int = 20) -> list[float]:
    """Mouth openness per `slice_ms` window: RMS, scaled so the loudest window of the clip is 1.0.

    Scaling per clip (as Live2D lip-sync expects 0..1) keeps quiet and loud voices equally lively;
    windows under 2% of the peak are closed mouths (0.0).
    """
    window = max(1, int(sample_rate * slice_ms / 1000))
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size == 0:
        return []
    count = -(-samples.size // window)
    padded = np.zeros(count * window, dtype=np.float32)
    padded[: samples.size] = samples
    rms = np.sqrt(np.mean(padded.reshape(count, window) ** 2, axis=1))
    peak = float(rms.max())
    if peak < 1e-4:
        return [0.0] * count
    volumes = rms / peak
    volumes[volumes < 0.02] = 0.0
    return [round(float(v), 3) for v in volumes]


def is_silent(samples: np.ndarray, threshold_dbfs: float = -50.0) -> bool:
    """True when the whole clip is below `threshold_dbfs` RMS (a cheap pre-check before VAD)."""
    if samples.size == 0:
        return True
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return rms < 10 ** (threshold_dbfs / 20)


def audio_files(path: Path) -> list[Path]:
    """The audio files of a folder in name order, or the one file given."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if path.is_file():
        return [path]
    raise InputFileError(path, "no such audio file or folder")
