"""Microphone and speaker through sounddevice (PortAudio), with errors that say how to fix them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from companion.errors import CompanionError
from companion.voice.audio import ASR_SAMPLE_RATE
from companion.voice.loop import TimelinePlayer

HEADLESS_HINT = "or run without audio devices: companion voice --input speech.wav --output replies/"


def sounddevice() -> Any:
    try:
        import sounddevice as sd
    except ImportError:
        raise CompanionError(
            "the microphone and speaker need the 'sounddevice' package. Install it with: pip install 'companion[voice]'"
        ) from None
    except OSError as error:  # the package is there, the PortAudio library is not
        raise CompanionError(
            f"PortAudio is missing ({error}). Install it: apt-get install libportaudio2 (Debian/Ubuntu), "
            f"brew install portaudio (macOS); {HEADLESS_HINT}"
        ) from None
    return sd


def list_devices() -> str:
    return str(sounddevice().query_devices())


def _device_info(sd: Any, device: str | int | None, kind: str) -> dict:
    try:
        return sd.query_devices(device, kind)
    except (ValueError, sd.PortAudioError) as error:
        what = "microphone" if kind == "input" else "speaker"
        chosen = f" {device!r}" if device is not None else ""
        flag = "--input-device" if kind == "input" else "--output-device"
        raise CompanionError(
            f"no {what}{chosen} found ({error}). Plug one in or pick another with "
            f"{flag} (see: companion voice --list-devices); {HEADLESS_HINT}"
        ) from None


class StreamResampler:
    """Resamples a stream block by block, keeping the filter state between blocks."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        import av

        self.from_rate, self.to_rate = from_rate, to_rate
        self.resampler = av.AudioResampler(format="fltp", layout="mono", rate=to_rate)
        self.av = av

    def __call__(self, block: np.ndarray) -> np.ndarray:
        if self.from_rate == self.to_rate:
            return block
        frame = self.av.AudioFrame.from_ndarray(block.reshape(1, -1).astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = self.from_rate
        out = [f.to_ndarray()[0] for f in self.resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


class Microphone:
    """16 kHz mono float32 frames from the default (or chosen) input device."""

    def __init__(self, device: str | int | None = None, block_ms: int = 20) -> None:
        self.sd = sounddevice()
        info = _device_info(self.sd, device, "input")
        self.device = device
        self.name = info["name"]
        self.rate = self._pick_rate(info)
        self.block = int(self.rate * block_ms / 1000)
        self.resample = StreamResampler(self.rate, ASR_SAMPLE_RATE)

    def _pick_rate(self, info: dict) -> int:
        try:
            self.sd.check_input_settings(device=self.device, samplerate=ASR_SAMPLE_RATE, channels=1, dtype="float32")
            return ASR_SAMPLE_RATE
        except Exception:  # PortAudio refuses 16 kHz on this device: take its own rate and resample
            return int(info["default_samplerate"])

    async def frames(self) -> AsyncIterator[np.ndarray]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[np.ndarray] = asyncio.Queue()

        def callback(data: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, data[:, 0].copy())

        try:
            stream = self.sd.InputStream(
                device=self.device,
                channels=1,
                samplerate=self.rate,
                blocksize=self.block,
                dtype="float32",
                callback=callback,
            )
        except self.sd.PortAudioError as error:
            raise CompanionError(f"cannot open the microphone {self.name!r}: {error}; {HEADLESS_HINT}") from None
        with stream:
            while True:
                block = await queue.get()
                out = self.resample(block)
                if out.size:
                    yield out


class Speaker(TimelinePlayer):
    """Plays queued sentences on the output device; knows how much of each was heard."""

    def __init__(self, device: str | int | None = None) -> None:
        super().__init__()
        self.sd = sounddevice()
        info = _device_info(self.sd, device, "output")
        self.rate = int(info["default_samplerate"])
        self.name = info["name"]
        self._resamplers: dict[int, StreamResampler] = {}
        self._carry = np.zeros(0, dtype=np.float32)
        self._stream_lock = threading.Lock()
        try:
            self.stream = self.sd.OutputStream(
                device=device, channels=1, samplerate=self.rate, dtype="float32", callback=self._callback
            )
            self.stream.start()
        except self.sd.PortAudioError as error:
            raise CompanionError(f"cannot open the speaker {self.name!r}: {error}; {HEADLESS_HINT}") from None

    def _callback(self, out: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        with self._stream_lock:
            data = self._carry
            while len(data) < frames:
                peek = self._peek_rate()
                if peek is None:
                    break
                need = int((frames - len(data)) * peek / self.rate) + 1
                pieces = self._advance(need)
                if not pieces:
                    break
                for samples, rate in pieces:
                    data = np.concatenate([data, self._to_device(samples, rate)])
            out[: min(frames, len(data)), 0] = data[:frames]
            out[len(data) :, 0] = 0.0
            self._carry = data[frames:]

    def _peek_rate(self) -> int | None:
        with self._lock:
            return self._queue[0].rate if self._queue else None

    def _to_device(self, samples: np.ndarray, rate: int) -> np.ndarray:
        if rate == self.rate:
            return samples
        if rate not in self._resamplers:
            self._resamplers[rate] = StreamResampler(rate, self.rate)
        return self._resamplers[rate](samples)

    def stop(self) -> list[tuple[str, float]]:
        with self._stream_lock:
            self._carry = np.zeros(0, dtype=np.float32)
        return super().stop()

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()
