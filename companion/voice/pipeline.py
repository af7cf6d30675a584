"""The speaking half of a turn, as two processors for `Companion.processors`:

    TextDelta...  -> TextStage   -> SentenceEvent (tags removed) + ExpressionEvent
    SentenceEvent -> SpeechStage -> AudioEvent (WAV + lip-sync volumes), synthesised while the
                                    LLM is still writing the next sentence

Both pass every other event through unchanged. Closing the stream (the user interrupted)
cancels synthesis and, through the chain, the LLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from companion.config import PluginSpec
from companion.events import AudioEvent, ErrorEvent, Event, ExpressionEvent, SentenceEvent, TextDeltaEvent, TurnEndEvent
from companion.voice.audio import Audio, lip_sync_volumes, resample, wav_b64
from companion.voice.text import SentenceSplitter, base_language, parse_tags
from companion.voice.tts.base import TTS, VoiceRouter

log = logging.getLogger(__name__)
_DONE = object()
Processor = Callable[[AsyncIterator[Event]], AsyncIterator[Event]]


class TextStage:
    """Splits the streamed reply into sentences and pulls emotion/action tags out of them."""

    def __init__(
        self,
        expressions: Mapping[str, str | int] | None = None,
        *,
        min_chars: int = 4,
        first_clause_chars: int | None = 10,
        max_chars: int = 160,
    ) -> None:
        self.expressions = dict(expressions or {})
        self.min_chars = min_chars
        self.first_clause_chars = first_clause_chars
        self.max_chars = max_chars

    async def __call__(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        splitter = SentenceSplitter(self.min_chars, self.max_chars, self.first_clause_chars)
        state = _SentenceState(self.expressions)
        try:
            async for event in events:
                if isinstance(event, TurnEndEvent):
                    for out in state.sentences(splitter.flush(), event.turn_id, final=True):
                        yield out
                yield event
                if isinstance(event, TextDeltaEvent):
                    for out in state.sentences(splitter.feed(event.text), event.turn_id):
                        yield out
        finally:
            await _close(events)


class _SentenceState:
    def __init__(self, expressions: dict[str, str | int]) -> None:
        self.expressions = expressions
        self.emotions = list(expressions)
        self.index = 0
        self.emotion: str | None = None
        self.pending_emotion: str | None = None
        self.pending_actions: list[str] = []

    def sentences(self, raws: Iterable[str], turn_id: str, final: bool = False) -> list[Event]:
        out: list[Event] = []
        for raw in raws:
            sentence = parse_tags(raw, self.emotions)
            emotion = sentence.emotion or self.pending_emotion
            actions = self.pending_actions + sentence.actions
            if not sentence.text:
                self.pending_emotion, self.pending_actions = emotion, actions
                continue
            self.pending_emotion, self.pending_actions = None, []
            if emotion and emotion != self.emotion:
                self.emotion = emotion
                out.append(ExpressionEvent(turn_id=turn_id, emotion=emotion, expression=self.expressions.get(emotion)))
            out.append(
                SentenceEvent(turn_id=turn_id, index=self.index, text=sentence.text, emotion=emotion, actions=actions)
            )
            self.index += 1
        if final and (self.pending_emotion or self.pending_actions):
            if self.pending_emotion and self.pending_emotion != self.emotion:
                expression = self.expressions.get(self.pending_emotion)
                out.append(ExpressionEvent(turn_id=turn_id, emotion=self.pending_emotion, expression=expression))
            out.append(
                SentenceEvent(
                    turn_id=turn_id,
                    index=self.index,
                    text="",
                    emotion=self.pending_emotion,
                    actions=self.pending_actions,
                )
            )
            self.index += 1
        return out


@dataclass
class _Sentence:
    event: SentenceEvent


@dataclass
class _Hold:
    event: Event


class SpeechStage:
    """Synthesises each sentence as soon as it arrives, while upstream keeps generating.

    Audio of one sentence is sent in pieces of at least `chunk_s` seconds (the first piece of a
    turn as soon as `first_chunk_s` is ready), resampled to `sample_rate` when one is set. A TTS
    failure becomes one ErrorEvent(code="tts"); the text events still flow, so the reply arrives.
    """

    def __init__(
        self,
        tts: TTS,
        *,
        sample_rate: int | None = None,
        slice_ms: int = 20,
        first_chunk_s: float = 0.0,
        chunk_s: float = 1.0,
    ) -> None:
        self.tts = tts
        self.sample_rate = sample_rate
        self.slice_ms = slice_ms
        self.first_chunk_s = first_chunk_s
        self.chunk_s = chunk_s

    async def __call__(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        out: asyncio.Queue[Any] = asyncio.Queue()
        work: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        async def pump() -> None:
            try:
                async for event in events:
                    if isinstance(event, SentenceEvent):
                        await out.put(event)
                        if event.text.strip():
                            await work.put(_Sentence(event))
                    elif isinstance(event, TurnEndEvent):
                        await work.put(_Hold(event))  # the turn ends after its last audio
                    else:
                        await out.put(event)
            except Exception as error:  # handed to the consumer, after what was already said
                await work.put(_Hold(error))  # type: ignore[arg-type]
            finally:
                await work.put(_DONE)

        async def speak() -> None:
            failed = False
            first = True
            while (item := await work.get()) is not _DONE:
                if isinstance(item, _Hold):
                    await out.put(item.event)
                    continue
                sentence = item.event
                try:
                    async for event in self._synthesize(sentence, stop, first):
                        first = False
                        await out.put(event)
                except Exception as error:
                    log.warning("TTS failed for sentence %d: %s", sentence.index, error)
                    if not failed:
                        failed = True
                        await out.put(
                            ErrorEvent(
                                turn_id=sentence.turn_id, code="tts", message=f"speech synthesis failed: {error}"
                            )
                        )
            await out.put(_DONE)

        tasks = [asyncio.create_task(pump()), asyncio.create_task(speak())]
        try:
            while (item := await out.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await _close(events)

    async def _synthesize(self, sentence: SentenceEvent, stop: threading.Event, first: bool) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[Any] = asyncio.Queue()
        abandoned = threading.Event()

        def put(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(chunks.put_nowait, item)

        def produce() -> None:
            try:
                for chunk in self.tts.synthesize(sentence.text):
                    if stop.is_set() or abandoned.is_set():
                        break
                    put(chunk)
            except BaseException as error:
                put(error)
            finally:
                put(_DONE)

        worker = threading.Thread(target=produce, name="tts", daemon=True)
        worker.start()
        pending: list[np.ndarray] = []
        rate: int | None = None
        threshold = self.first_chunk_s if first else self.chunk_s
        try:
            while (chunk := await chunks.get()) is not _DONE:
                if isinstance(chunk, BaseException):
                    raise chunk
                audio: Audio = chunk
                if self.sample_rate and audio.sample_rate != self.sample_rate:
                    audio = audio.resampled(self.sample_rate)
                if rate is not None and audio.sample_rate != rate:
                    pending = [resample(np.concatenate(pending), rate, audio.sample_rate)]
                rate = audio.sample_rate
                pending.append(audio.samples)
                if sum(len(p) for p in pending) / rate >= threshold:
                    yield self._event(sentence, np.concatenate(pending), rate)
                    pending, threshold = [], self.chunk_s
            if pending and rate:
                yield self._event(sentence, np.concatenate(pending), rate)
        finally:
            abandoned.set()  # a sentence being synthesised finishes (it cannot be cut), then the thread ends
            await asyncio.to_thread(worker.join, 30)

    def _event(self, sentence: SentenceEvent, samples: np.ndarray, rate: int) -> AudioEvent:
        return AudioEvent(
            turn_id=sentence.turn_id,
            sentence_index=sentence.index,
            text=sentence.text,
            sample_rate=rate,
            audio_wav_b64=wav_b64(samples, rate),
            volumes=lip_sync_volumes(samples, rate, self.slice_ms),
            slice_ms=self.slice_ms,
        )


async def _close(events: AsyncIterator[Event]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        with contextlib.suppress(RuntimeError):  # already running in a task being cancelled: it closes itself
            await close()


def heard_text(spoken: list[tuple[str, float]], cut_mark: str = "—") -> str:
    """What the listener heard: whole sentences, then the start of the one cut off (by the share of
    its audio that played), marked with `cut_mark`. `spoken` is [(sentence text, fraction played)]."""
    parts: list[str] = []
    for text, fraction in spoken:
        if fraction >= 0.98:
            parts.append(text)
            continue
        if fraction <= 0.02:
            break
        cut = int(len(text) * fraction)
        prefix = text[:cut]
        if " " in text and cut < len(text) and text[cut].isalnum():
            prefix = prefix.rsplit(" ", 1)[0] if " " in prefix else ""
        prefix = prefix.rstrip(" ,，、")
        if prefix:
            parts.append(prefix + cut_mark)
        break
    joined = ""
    for part in parts:
        if joined and joined[-1].isascii() and part[:1].isascii():
            joined += " "
        joined += part
    return joined.strip()


# -- building the stages for a character ------------------------------------------------------

_PATH_KEYS = ("voice", "reference_audio", "model", "model_path")


def tts_spec(character: Any, settings: Any) -> Any:
    """The TTS plugin and settings for a character: config `tts`, then the card's `voice:` block
    (plugin, voice, speed, language, reference clip), with paths relative to her folder. A Piper
    voice in her `voice/` folder is used when the card names none."""
    card_voice = character.settings.voice.model_dump(exclude_none=True)
    spec = settings.tts.merged(card_voice)
    options = dict(spec.options)
    for key in _PATH_KEYS:
        value = options.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            candidate = character.folder / value
            if candidate.exists():
                options[key] = str(candidate.resolve())
    if spec.plugin == "piper" and not options.get("voice"):
        own = sorted(character.voice_dir.glob("*.onnx")) if character.voice_dir.is_dir() else []
        if own:
            options["voice"] = str(own[0].resolve())
    return type(spec).model_validate({"plugin": spec.plugin, **options})


def build_tts(character: Any, settings: Any) -> VoiceRouter:
    """Her voice, plus the fallback for languages it does not speak (espeak-ng when installed)."""
    from companion.session import shared_plugin

    primary = shared_plugin("tts", tts_spec(character, settings), settings)
    fallback = None
    name = settings.voice.fallback_tts
    if name and name != tts_spec(character, settings).plugin:
        if name != "espeak-ng" or shutil.which("espeak-ng"):
            fallback = shared_plugin("tts", PluginSpec(plugin=name), settings)
        else:
            log.warning("espeak-ng is not installed: sentences in languages her voice lacks are read by her voice")
    return VoiceRouter(primary, fallback, default_language=character.settings.language)


def speech_processors(character: Any, settings: Any, *, with_audio: bool = True) -> list[Processor]:
    """TextStage (+ SpeechStage): append these to `Companion.processors`."""
    options = settings.voice
    stages: list[Processor] = [
        TextStage(
            character.settings.expressions,
            min_chars=options.min_sentence_chars,
            first_clause_chars=options.first_clause_chars,
        )
    ]
    if with_audio:
        stages.append(SpeechStage(build_tts(character, settings)))
    return stages


def frontend_processors(companion: Any, settings: Any) -> list[Processor]:
    """For network frontends: sentences, expressions and audio for each turn of `companion`."""
    return speech_processors(companion.character, settings)


def asr_languages(character: Any, settings: Any) -> list[str]:
    """Languages to listen for: the user's setting, else the character's language and her voice's."""
    if settings.voice.languages:
        return [x for x in (base_language(code) for code in settings.voice.languages) if x]
    found = [base_language(character.settings.language), base_language(character.settings.voice.language)]
    return [x for x in dict.fromkeys(found) if x]
