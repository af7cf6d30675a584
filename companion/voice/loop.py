"""The live conversation: audio frames in, her voice out, and the user may cut her off.

    frames -> Endpointer (Silero) --pause--> transcribe the speech since the last kept piece, then
                                             (speculatively) retrieve and prefill the LLM with the
                                             turn that transcript would start
                                  --resume-> a long enough piece is kept: only the rest remains
                                  --end----> the silence window closes: the tail, then the turn
                                  --start--> while she talks: barge-in
    turn: Companion.turn (TextStage, SpeechStage) -> Player; barge-in stops the player, closes the
    turn (the LLM stops at its next token) and history keeps what the user actually heard.
    Before the user speaks (at the start, after each turn) the LLM evaluates the prompt prefix the
    next turn will share: persona, examples and history.

Devices are outside: `Player` implementations play audio (sounddevice, or a virtual clock for
tests and headless runs) and any async iterator of 16 kHz float32 frames is a microphone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from companion.events import AudioEvent, ErrorEvent, Event, InterruptedEvent, TranscriptEvent, TurnEndEvent
from companion.history import ConversationKey
from companion.llm.base import GenerationRequest
from companion.voice.asr import ASR, Transcript, join_segments
from companion.voice.audio import read_wav_b64
from companion.voice.pipeline import heard_text
from companion.voice.vad import Endpointer, VadEvent

log = logging.getLogger(__name__)


# -- playback -------------------------------------------------------------------------------


@dataclass
class _Segment:
    index: int
    text: str
    samples: np.ndarray
    rate: int
    played: int = 0


class Player(Protocol):
    def play(self, event: AudioEvent) -> None: ...

    def stop(self) -> list[tuple[str, float]]:
        """Stop at once; [(sentence text, share of it played)] for what was queued since the last stop."""
        ...

    @property
    def playing(self) -> bool: ...

    async def drain(self) -> None:
        """Wait until everything queued has been played."""
        ...


class TimelinePlayer:
    """Bookkeeping every player shares: queued segments per sentence and how much of each played."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Segment] = deque()
        self._sentences: dict[int, list[Any]] = {}  # index -> [text, total samples@rate, played samples, rate]
        self._done = threading.Event()
        self._done.set()

    def play(self, event: AudioEvent) -> None:
        audio = read_wav_b64(event.audio_wav_b64)
        segment = _Segment(event.sentence_index, event.text, audio.samples, audio.sample_rate)
        with self._lock:
            entry = self._sentences.setdefault(event.sentence_index, [event.text, 0, 0, audio.sample_rate])
            entry[1] += len(audio.samples)
            self._queue.append(segment)
            self._done.clear()
        self._started()

    def _started(self) -> None:
        pass

    def _advance(self, count: int) -> list[tuple[np.ndarray, int]]:
        """Consume up to `count` samples' worth of queued audio (at each segment's own rate)."""
        out = []
        with self._lock:
            while count > 0 and self._queue:
                segment = self._queue[0]
                take = min(count, len(segment.samples) - segment.played)
                out.append((segment.samples[segment.played : segment.played + take], segment.rate))
                segment.played += take
                self._sentences[segment.index][2] += take
                count -= take
                if segment.played >= len(segment.samples):
                    self._queue.popleft()
            if not self._queue:
                self._done.set()
        return out

    def stop(self) -> list[tuple[str, float]]:
        with self._lock:
            self._sync()
            spoken = [
                (text, (played / total) if total else 0.0)
                for _, (text, total, played, _) in sorted(self._sentences.items())
            ]
            self._queue.clear()
            self._sentences.clear()
            self._done.set()
        return spoken

    def _sync(self) -> None:
        pass

    def forget_turn(self) -> None:
        with self._lock:
            if not self._queue:
                self._sentences.clear()

    @property
    def playing(self) -> bool:
        with self._lock:
            self._sync()
            return bool(self._queue)

    async def drain(self) -> None:
        while True:
            with self._lock:
                self._sync()
                if not self._queue:
                    return
            await asyncio.sleep(0.02)


class VirtualPlayer(TimelinePlayer):
    """Plays into the void in real time (a listener's clock): for tests and headless barge-in."""

    def __init__(self, speed: float = 1.0) -> None:
        super().__init__()
        self.speed = speed
        self._clock: float | None = None
        self.played: list[AudioEvent] = []

    def play(self, event: AudioEvent) -> None:
        self.played.append(event)
        super().play(event)

    def _started(self) -> None:
        with self._lock:
            if self._clock is None:
                self._clock = time.monotonic()

    def _sync(self) -> None:  # called with the lock held
        if self._clock is None:
            return
        now = time.monotonic()
        elapsed = (now - self._clock) * self.speed
        self._clock = now
        while elapsed > 0 and self._queue:
            segment = self._queue[0]
            left = (len(segment.samples) - segment.played) / segment.rate
            step = min(left, elapsed)
            take = min(len(segment.samples) - segment.played, max(1, round(step * segment.rate)))
            segment.played += take
            self._sentences[segment.index][2] += take
            elapsed -= step
            if segment.played >= len(segment.samples):
                self._queue.popleft()
        if not self._queue:
            self._clock = None
            self._done.set()

    def stop(self) -> list[tuple[str, float]]:
        spoken = super().stop()
        self._clock = None
        return spoken


# -- the conversation -----------------------------------------------------------------------


class VoiceAgent:
    """A companion that hears (ASR) and speaks (her processors include TextStage/SpeechStage)."""

    def __init__(
        self,
        companion: Any,
        asr: ASR,
        key: ConversationKey,
        *,
        languages: Sequence[str] | None = None,
        user_name: str | None = None,
    ) -> None:
        self.companion = companion
        self.asr = asr
        self.key = key
        self.languages = list(languages or []) or None
        self.user_name = user_name

    async def transcribe(self, audio: np.ndarray, languages: Sequence[str] | None = None) -> Transcript:
        """Cancelling the caller tells the ASR to give up (its thread cannot be stopped mid-decode)."""
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(
                self.asr.transcribe, audio, languages=languages or self.languages, cancel=cancel
            )
        except asyncio.CancelledError:
            cancel.set()
            raise

    def turn(self, text: str) -> AsyncIterator[Event]:
        return self.companion.turn(self.key, text, user_name=self.user_name)

    async def prefill(self, text: str = "") -> bool:
        """Have the LLM evaluate a turn's prompt before the turn is taken, so the turn itself only
        generates: with `text`, the whole prompt of a turn saying it (retrieval included); with
        none, the part every next turn shares (persona, examples, history). Only for LLMs that
        keep a prefix cache (llm.llamacpp on its fast path); returns whether it ran."""
        llm = self.companion.llm
        if not getattr(llm, "fast", False):
            return False
        user_name = self.user_name or self.companion.settings.user_name
        if text:
            prompt = await self.companion.prepare_prompt(self.key, text, user_name)
        else:
            prompt, _ = await self.companion.build_prompt(self.key, text, user_name)
        character = self.companion.character
        request = GenerationRequest(
            messages=prompt.messages,
            params=self.companion.generation_params(user_name).model_copy(update={"max_new_tokens": 0}),
            adapter=character.adapter_dir if character.has_adapter() else None,
        )
        if await asyncio.to_thread(llm.uses_reference, request):
            return False
        async for _ in llm.stream(request):
            pass
        return True

    def record_heard(self, heard: str) -> None:
        self.companion.record_heard(self.key, heard)


class IncrementalTranscript:
    """One utterance transcribed in pieces while it is spoken. At each pause the speech since the
    last kept piece is transcribed; when the speaker goes on, that piece is kept if it holds
    `min_piece_s` of speech (None: never; the pre-roll does not count: Whisper doubts shorter
    pieces, and decoding them again took ~0.6 s) and the pause lasted `min_pause_s`, so at the end only the tail
    since the last kept pause is left to transcribe. Shorter gaps fall between words (cutting
    there cost accuracy: bench/voice_latency.py --asr-sweep). Pieces are cut in the pause's
    silence (the endpointer's pause audio ends there); the first piece's language holds for the rest."""

    def __init__(
        self, agent: VoiceAgent, *, min_piece_s: float | None = 1.0, min_pause_s: float = 0.16, rate: int = 16000
    ) -> None:
        self.agent = agent
        self.min_piece = None if min_piece_s is None else int(min_piece_s * rate)
        self.min_pause_s = min_pause_s
        self.kept: list[asyncio.Task[Transcript]] = []
        self.kept_end = 0  # samples of the utterance audio covered by kept pieces
        self.pending: tuple[float, int, asyncio.Task[Transcript]] | None = None  # (pause time, end, piece)
        self.lead = 0  # samples of pre-roll before the speech in the utterance audio

    def pause(self, event: VadEvent) -> asyncio.Task[Transcript]:
        """Start transcribing the speech since the last kept piece; a task for the whole utterance so far."""
        assert event.audio is not None
        end = max(self.kept_end, len(event.audio))
        self.lead = event.lead
        piece = self._piece(event.audio, end)
        self.pending = (event.time, end, piece)
        return asyncio.create_task(self._joined([*self.kept, piece]))

    def resume(self, time: float) -> None:
        """The speaker went on at `time` (stream seconds)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        if (
            self.min_piece is not None
            and pending[1] - max(self.kept_end, self.lead) >= self.min_piece
            and time - pending[0] >= self.min_pause_s - 1e-3  # times are whole VAD frames: 0.16 may read 0.1599...
        ):
            self.kept.append(pending[2])
            self.kept_end = pending[1]
        else:
            pending[2].cancel()  # not kept: its transcription would only hold up the next one

    async def finish(self, event: VadEvent) -> Transcript:
        """The whole utterance: the pieces kept, then the pause's piece when no speech followed it, else the tail."""
        assert event.audio is not None
        pending, self.pending = self.pending, None
        if pending is not None and abs(pending[0] - event.time) < 1e-6:
            last = pending[2]
        else:
            last = self._piece(event.audio, len(event.audio))
        return await self._joined([*self.kept, last])

    def _piece(self, audio: np.ndarray, end: int) -> asyncio.Task[Transcript]:
        start = self.kept_end
        previous = self.kept[0] if self.kept else None
        return asyncio.create_task(self._transcribe(audio[start:end].copy(), previous))

    async def _transcribe(self, audio: np.ndarray, first: asyncio.Task[Transcript] | None) -> Transcript:
        language = (await asyncio.shield(first)).language if first is not None else None
        return await self.agent.transcribe(audio, [language] if language else None)

    @staticmethod
    async def _joined(pieces: list[asyncio.Task[Transcript]]) -> Transcript:
        parts = [await asyncio.shield(piece) for piece in pieces]  # a cancelled caller leaves the pieces running
        language = next((p.language for p in parts if p.language), None)
        return Transcript(
            text=join_segments([p.text for p in parts], language),
            language=language,
            language_probability=parts[0].language_probability,
            duration=sum(p.duration for p in parts),
            segments=[s for p in parts for s in p.segments],
        )


@dataclass
class TurnTiming:
    """Seconds from the end of the user's speech (as the VAD placed it in the audio)."""

    speech_end: float
    confirmed: float | None = None
    transcript: float | None = None
    first_text: float | None = None
    first_sentence: float | None = None
    first_audio: float | None = None
    done: float | None = None
    marks: dict[str, float] = field(default_factory=dict)


class LiveLoop:
    """Runs the conversation over a stream of 16 kHz frames; `emit` receives every event for display."""

    def __init__(
        self,
        agent: VoiceAgent,
        endpointer: Endpointer,
        player: Player,
        emit: Callable[[Event], None],
        *,
        barge_in: bool = True,
        barge_in_ms: int = 300,
        piece_s: float | None = 1.0,
        piece_pause_s: float = 0.16,
        prefill: bool = True,
    ) -> None:
        self.agent = agent
        self.endpointer = endpointer
        self.player = player
        self.emit = emit
        self.barge_in = barge_in
        self.barge_in_ms = barge_in_ms
        self.piece_s = piece_s
        self.piece_pause_s = piece_pause_s
        self.prefill = prefill
        self._turn: asyncio.Task | None = None
        self._utterance_asr: IncrementalTranscript | None = None
        self._speculative: tuple[float, asyncio.Task] | None = None  # (pause time, transcript + prefill)
        self._background: set[asyncio.Task] = set()
        self._stream_clock: tuple[float, float] | None = None  # (stream seconds, monotonic) at the last frame
        self._samples_seen = 0
        self._pending_barge: float | None = None
        self.timings: list[TurnTiming] = []
        self.turns = 0

    @property
    def speaking(self) -> bool:
        return (self._turn is not None and not self._turn.done()) or self.player.playing

    def stream_time(self) -> float:
        return self._samples_seen / 16000

    def warm(self) -> asyncio.Task | None:
        """Prefill the LLM with what the next turn shares (persona, examples, history), in the background."""
        return self._spawn(self.agent.prefill()) if self.prefill else None

    def _spawn(self, work: Any) -> asyncio.Task:
        task = asyncio.create_task(self._quietly(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    @staticmethod
    async def _quietly(work: Any) -> Any:
        try:
            return await work
        except Exception:  # speculative work: the turn itself redoes it and reports failures
            log.warning("speculative voice work failed", exc_info=True)
            return None

    async def run(self, frames: AsyncIterator[np.ndarray]) -> None:
        self.warm()
        try:
            async for frame in frames:
                await self.feed(frame)
            for event in self.endpointer.flush():
                await self._handle(event)
            if self._turn is not None:
                await asyncio.gather(self._turn, return_exceptions=True)
        finally:
            await self.close()

    async def feed(self, frame: np.ndarray) -> None:
        self._samples_seen += len(frame)
        self._stream_clock = (self.stream_time(), time.monotonic())
        for event in self.endpointer.feed(frame):
            await self._handle(event)
        if self._pending_barge is not None and self.stream_time() - self._pending_barge >= self.barge_in_ms / 1000:
            self._pending_barge = None
            if self.endpointer.in_speech and self.speaking:
                await self.interrupt()

    def _wall_of(self, stream_seconds: float) -> float:
        """The monotonic time at which a moment of the input stream was captured."""
        if self._stream_clock is None:
            return time.monotonic()
        at, wall = self._stream_clock
        return wall - (at - stream_seconds)

    async def _handle(self, event: VadEvent) -> None:
        if event.kind == "start":
            if self.barge_in and self.speaking:
                self._pending_barge = event.time  # confirmed once it lasts barge_in_ms
        elif event.kind == "pause":
            self._drop_speculative()
            so_far = self._incremental().pause(event)
            self._speculative = (event.time, self._spawn(self._speculate(so_far)))
        elif event.kind == "resume":
            self._drop_speculative()
            self._incremental().resume(event.time)
        elif event.kind == "end":
            await self._utterance(event)

    def _incremental(self) -> IncrementalTranscript:
        if self._utterance_asr is None:
            self._utterance_asr = IncrementalTranscript(
                self.agent, min_piece_s=self.piece_s, min_pause_s=self.piece_pause_s
            )
        return self._utterance_asr

    async def _speculate(self, so_far: asyncio.Task[Transcript]) -> None:
        """The utterance so far, then (if she is silent) the prefill of the turn it would start.
        The prefill runs only while the user is still pausing: once the endpoint has come, the turn
        starts no later than the prefill would, and a prefill then only repeats its retrieval (the
        bench measured that as ~0.3 s lost per turn)."""
        transcript = await asyncio.shield(so_far)
        still_pausing = self._speculative is not None and self._speculative[1] is asyncio.current_task()
        if self.prefill and still_pausing and not transcript.empty and not self.speaking:
            await self.agent.prefill(transcript.text)

    def _drop_speculative(self) -> None:
        if self._speculative is not None:
            self._speculative[1].cancel()  # its transcription pieces live on in the IncrementalTranscript
            self._speculative = None

    async def _utterance(self, event: VadEvent) -> None:
        timing = TurnTiming(speech_end=self._wall_of(event.time))
        timing.confirmed = time.monotonic() - timing.speech_end
        speculative, self._speculative = self._speculative, None
        if speculative is not None and abs(speculative[0] - event.time) >= 1e-6:
            speculative[1].cancel()  # it prefilled a turn the user went on from
            speculative = None
        incremental, self._utterance_asr = self._incremental(), None
        transcript = await incremental.finish(event)
        timing.transcript = time.monotonic() - timing.speech_end
        if speculative is not None:
            await speculative[1]  # the prefill of this very turn: let it finish, the turn then only generates
            timing.marks["prefilled"] = time.monotonic() - timing.speech_end
        if transcript.empty:
            log.info("heard no words (%.1fs of audio)", transcript.duration)
            return
        if self.speaking:
            if not self.barge_in:
                log.info("ignored while she speaks (barge-in off): %s", transcript.text)
                return
            await self.interrupt()
        self.emit(TranscriptEvent(text=transcript.text, language=transcript.language))
        self.timings.append(timing)
        self._turn = asyncio.create_task(self._run_turn(transcript.text, timing))

    async def _run_turn(self, text: str, timing: TurnTiming) -> None:
        self.turns += 1
        forget = getattr(self.player, "forget_turn", None)
        if forget:
            forget()
        try:
            async for event in self.agent.turn(text):
                now = time.monotonic() - timing.speech_end
                if event.type == "text_delta" and timing.first_text is None:
                    timing.first_text = now
                if event.type == "sentence" and timing.first_sentence is None:
                    timing.first_sentence = now
                if isinstance(event, AudioEvent):
                    if timing.first_audio is None:
                        timing.first_audio = now
                    self.player.play(event)
                self.emit(event)
            await self.player.drain()
        except Exception as error:  # a broken turn must not end the conversation
            log.exception("turn failed")
            self.emit(ErrorEvent(message=str(error), code="turn"))
        finally:
            timing.done = time.monotonic() - timing.speech_end
        self.warm()  # not after an interruption: the next turn's prefill comes with it

    async def interrupt(self) -> str:
        """Barge-in: silence her, stop generating, and keep in history what was heard."""
        spoken = self.player.stop()
        task, self._turn = self._turn, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        heard = heard_text(spoken)
        self.agent.record_heard(heard)
        self.emit(InterruptedEvent(heard_text=heard))
        return heard

    async def close(self) -> None:
        for task in [*self._background, *([self._turn] if self._turn is not None else [])]:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def frames_from_array(
    samples: np.ndarray, frame_ms: int = 20, realtime: bool = False, rate: int = 16000
) -> AsyncIterator[np.ndarray]:
    """A recording as a microphone would deliver it (in real time, or as fast as it is read)."""
    size = int(rate * frame_ms / 1000)
    start = time.monotonic()
    for i in range(0, len(samples), size):
        if realtime:
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)
        yield samples[i : i + size]


def turn_summary(events: Sequence[Event]) -> dict[str, Any]:
    reply = next((e.text for e in events if isinstance(e, TurnEndEvent)), "")
    return {
        "reply": reply,
        "sentences": [
            e.model_dump(include={"index", "text", "emotion", "actions"}) for e in events if e.type == "sentence"
        ],
        "expressions": [e.model_dump(include={"emotion", "expression"}) for e in events if e.type == "expression"],
        "errors": [e.message for e in events if e.type == "error"],
    }
