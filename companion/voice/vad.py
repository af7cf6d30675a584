"""`vad` plugins and endpointing: when does the user speak, and when has she finished?

Built in: `silero`, the Silero VAD v6 ONNX model that faster-whisper ships (no download),
run as a stream: 32 ms frames at 16 kHz, the LSTM state carried from one call to the next.

`Endpointer` turns frame probabilities into events: `start` once speech has lasted
`min_speech_ms` (barge-in uses it), `pause` as soon as a short silence follows speech (a
speculative transcription may begin), `resume` if she was not done after all, and `end` with
the whole utterance (pre-roll included) once the silence lasts `silence_ms`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel

from companion.errors import CompanionError
from companion.foreground import quiet_onnx_options
from companion.plugins import PluginContext, require
from companion.voice.audio import ASR_SAMPLE_RATE


@runtime_checkable
class VAD(Protocol):
    sample_rate: int
    frame_samples: int

    def reset(self) -> None: ...

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Speech probability for each complete frame in the stream so far (a remainder waits)."""
        ...


class SileroSettings(BaseModel):
    model_path: str | None = None
    """Another Silero VAD ONNX export with the same interface; default: faster-whisper's v6."""


@functools.cache
def _silero_session(path: str):
    ort = require("onnxruntime", feature="Voice activity detection (Silero)", extra="voice")
    options = quiet_onnx_options(ort, threads=1)
    options.log_severity_level = 4
    try:
        return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise CompanionError(f"cannot load the VAD model {path}: {error}") from None


def silero_model_path() -> str:
    require("faster_whisper", feature="Voice activity detection (Silero)", extra="voice")
    from faster_whisper.utils import get_assets_path

    return os.path.join(get_assets_path(), "silero_vad_v6.onnx")


class SileroVAD:
    """Streaming Silero VAD: feed any number of samples, get one probability per 512-sample frame."""

    Settings = SileroSettings
    sample_rate = ASR_SAMPLE_RATE
    frame_samples = 512
    context_samples = 64

    def __init__(self, settings: SileroSettings | None = None, context: PluginContext | None = None) -> None:
        self.settings = settings or SileroSettings()
        self.session = _silero_session(self.settings.model_path or silero_model_path())
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(self.context_samples, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        data = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        count = len(data) // self.frame_samples
        self._pending = data[count * self.frame_samples :]
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        frames = data[: count * self.frame_samples].reshape(count, self.frame_samples)
        contexts = np.vstack([self._context[None, :], frames[:-1, -self.context_samples :]])
        batch = np.ascontiguousarray(np.concatenate([contexts, frames], axis=1))
        probs, self._h, self._c = self.session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = frames[-1, -self.context_samples :].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)


@dataclass
class VadEvent:
    kind: Literal["start", "pause", "resume", "end"]
    time: float
    """Seconds since the stream began (for `end`: when speech stopped, not when it was confirmed)."""
    audio: np.ndarray | None = None
    """For `pause` and `end`: the utterance so far (16 kHz mono float32)."""
    lead: int = 0
    """Samples of `audio` before the speech began (the pre-roll)."""


class Endpointer:
    """Speech segments from a stream of audio, decided with `silence_ms` of trailing silence."""

    def __init__(
        self,
        vad: VAD,
        *,
        threshold: float = 0.5,
        silence_ms: int = 500,
        min_speech_ms: int = 200,
        pause_ms: int = 160,
        pre_roll_ms: int = 500,
        post_roll_ms: int = 200,
        max_utterance_s: float = 30.0,
    ) -> None:
        self.vad = vad
        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01)
        rate, frame = vad.sample_rate, vad.frame_samples
        self.frame_s = frame / rate
        self.silence_frames = max(1, round(silence_ms / 1000 / self.frame_s))
        self.min_speech_frames = max(1, round(min_speech_ms / 1000 / self.frame_s))
        self.pause_frames = max(1, min(round(pause_ms / 1000 / self.frame_s), self.silence_frames))
        self.pre_roll = int(pre_roll_ms / 1000 * rate)
        self.post_roll = int(post_roll_ms / 1000 * rate)
        self.max_samples = int(max_utterance_s * rate)
        self.reset()

    def reset(self) -> None:
        self.vad.reset()
        self._audio = np.zeros(0, dtype=np.float32)  # everything kept since `_offset`
        self._offset = 0  # stream sample index of _audio[0]
        self._frame_index = 0
        self._in_speech = False
        self._speech_frames = 0
        self._start_sample = 0
        self._silence_frames = 0
        self._started = False
        self._paused = False

    @property
    def in_speech(self) -> bool:
        return self._in_speech and self._started

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        samples = np.asarray(samples, dtype=np.float32)
        self._audio = np.concatenate([self._audio, samples])
        events: list[VadEvent] = []
        frame = self.vad.frame_samples
        for prob in self.vad.probabilities(samples):
            index = self._frame_index
            self._frame_index += 1
            events.extend(self._step(float(prob), index, frame))
        if not self._in_speech:  # keep only the pre-roll while nobody speaks
            keep = self.pre_roll + frame
            if len(self._audio) > keep:
                drop = len(self._audio) - keep
                self._audio = self._audio[drop:]
                self._offset += drop
        return events

    def flush(self) -> list[VadEvent]:
        """End of the stream: an utterance still open ends here."""
        if self._in_speech and self._started:
            end = self._offset + len(self._audio)
            return [self._end(end - self._silence_frames * self.vad.frame_samples)]
        self.reset()
        return []

    def _step(self, prob: float, index: int, frame: int) -> Iterable[VadEvent]:
        rate = self.vad.sample_rate
        now = index * frame
        if not self._in_speech:
            if prob >= self.threshold:
                self._in_speech, self._speech_frames, self._silence_frames = True, 1, 0
                self._start_sample = now
                self._started = self._paused = False
            return []
        events = []
        if prob >= self.neg_threshold and (prob >= self.threshold or self._silence_frames == 0):
            self._speech_frames += 1
            if self._paused:
                self._paused = False
                events.append(VadEvent("resume", now / rate))
            self._silence_frames = 0
        else:
            self._silence_frames += 1
        if not self._started and self._speech_frames >= self.min_speech_frames:
            self._started = True
            events.append(VadEvent("start", self._start_sample / rate))
        if not self._started and self._silence_frames >= self.silence_frames:
            self._in_speech = False  # a click or a cough: too short to be speech
            return events
        speech_end = now + frame - self._silence_frames * frame
        if self._started and self._silence_frames == self.pause_frames and not self._paused:
            self._paused = True
            events.append(VadEvent("pause", speech_end / rate, self._slice(speech_end), self._lead()))
        if self._started and (
            self._silence_frames >= self.silence_frames or now + frame - self._start_sample >= self.max_samples
        ):
            events.append(self._end(speech_end))
        return events

    def _slice_start(self) -> int:
        """Stream sample where an utterance's audio begins: the pre-roll before its speech, as far as kept."""
        return max(self._start_sample - self.pre_roll, self._offset)

    def _lead(self) -> int:
        return self._start_sample - self._slice_start()

    def _slice(self, speech_end: int) -> np.ndarray:
        start = self._slice_start()
        end = min(speech_end + self.post_roll, self._offset + len(self._audio))
        return self._audio[start - self._offset : end - self._offset].copy()

    def _end(self, speech_end: int) -> VadEvent:
        event = VadEvent("end", speech_end / self.vad.sample_rate, self._slice(speech_end), self._lead())
        self._in_speech = self._started = self._paused = False
        self._speech_frames = self._silence_frames = 0
        return event
