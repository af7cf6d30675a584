"""One WebSocket connection: inputs in, typed events out, one turn at a time.

Three tasks per connection: the receiver parses and validates frames (interrupts and pings act
at once; text and speech go into a bounded input queue), the worker runs turns one by one, and
the sender drains a bounded output queue to the socket. A client that sends garbage gets error
events and, past a limit, a close; a client that stops reading is dropped; neither slows the
other connections.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocket, WebSocketState

from companion.errors import CompanionError
from companion.events import InterruptedEvent, TextDeltaEvent, TranscriptEvent, TurnEndEvent
from companion.frontends.server import vtuber
from companion.frontends.server.auth import Identity, valid_id
from companion.frontends.server.protocol import (
    CLIENT_ADAPTER,
    CLIENT_TYPES,
    AcceptedMessage,
    AudioEndMessage,
    AudioMessage,
    AudioStartMessage,
    HelloMessage,
    HistoryItem,
    InterruptMessage,
    PingMessage,
    PongMessage,
    ResetDoneMessage,
    ResetMessage,
    SessionMessage,
    TextMessage,
    TurnStartMessage,
    error,
)
from companion.history import ConversationKey
from companion.session import clean_reply

if TYPE_CHECKING:
    from companion.frontends.server.app import ServerState

log = logging.getLogger(__name__)
ASR_RATE = 16_000
_CLOSE = object()


class SlowConsumer(Exception):
    pass


@dataclass
class Pending:
    kind: Literal["text", "audio_file", "pcm", "samples", "reset"]
    id: str | None = None
    text: str = ""
    data: bytes = b""
    samples: np.ndarray | None = None
    sample_rate: int = ASR_RATE
    language: str | None = None


@dataclass
class SpeechBuffer:
    sample_rate: int = ASR_RATE
    language: str | None = None
    id: str | None = None
    pcm: bytearray = field(default_factory=bytearray)
    floats: list[float] = field(default_factory=list)
    overflow: bool = False


class Connection:
    def __init__(
        self, ws: WebSocket, state: ServerState, identity: Identity, query: dict[str, str], audio_format: str
    ) -> None:
        self.ws = ws
        self.state = state
        self.serve = state.serve
        self.hub = state.hub
        self.session_id = uuid.uuid4().hex[:12]
        requested_user = query.get("user", "")
        self.user = identity.user or (requested_user if valid_id(requested_user) else f"anon-{self.session_id}")
        channel = query.get("channel", "web")
        self.channel = channel if valid_id(channel) else "web"
        self.character = self._pick_character(query.get("character"))
        self.user_name = (query.get("user_name") or state.settings.user_name)[:64]
        self.audio_format = audio_format if audio_format in ("companion", "vtuber") else "companion"
        self.vtuber = vtuber.VtuberEncoder()
        self.speak = self.can_speak and query.get("speak", "1") not in ("0", "false", "no")
        self.out: asyncio.Queue[Any] = asyncio.Queue(maxsize=self.serve.send_queue)
        self.inputs: asyncio.Queue[Pending] = asyncio.Queue(maxsize=self.serve.input_queue)
        self.errors = 0
        self.speech: SpeechBuffer | None = None
        self.current: asyncio.Task | None = None
        self.heard_text: str | None = None
        self.closing = False
        self.aborted = asyncio.Event()

    # -- identity ----------------------------------------------------------------------------
    def _pick_character(self, wanted: str | None) -> str:
        ids = self.hub.character_ids()
        if wanted and wanted in ids:
            return wanted
        if self.serve.default_character in ids:
            return self.serve.default_character
        if not ids:
            raise CompanionError("no characters to serve")
        return ids[0]

    @property
    def key(self) -> ConversationKey:
        return ConversationKey(character=self.character, user=self.user, channel=self.channel)

    @property
    def can_listen(self) -> bool:
        return self.hub.speech.asr_available

    @property
    def can_speak(self) -> bool:
        return self.hub.speech.tts_available

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop(), name=f"ws-send-{self.session_id}")
        worker = asyncio.create_task(self._work_loop(), name=f"ws-work-{self.session_id}")
        receiver = asyncio.create_task(self._receive(), name=f"ws-receive-{self.session_id}")
        aborted = asyncio.create_task(self.aborted.wait())
        try:
            await asyncio.wait({receiver, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Returning ends the connection even when the client reads nothing (the server
            # closes the transport); no task of this connection outlives it.
            self.closing = True
            for task in (receiver, aborted, worker, sender):
                task.cancel()
            await asyncio.gather(receiver, aborted, worker, sender, return_exceptions=True)

    async def _receive(self) -> None:
        try:
            await self.send_session()
            await self._receive_loop()
        except SlowConsumer:
            await self.abort(1008, "slow consumer: events were not read")
        except (RuntimeError, OSError) as exc:  # the socket went away under us
            log.debug("connection %s ended: %s", self.session_id, exc)

    async def abort(self, code: int, reason: str) -> None:
        """Close with `code`; if the client is not reading, the close frame cannot go out: give up
        after a moment and drop the connection anyway."""
        self.closing = True
        try:
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(code=code, reason=reason[:120]), timeout=2)
        finally:
            self.aborted.set()

    # -- output ------------------------------------------------------------------------------
    def encode(self, message: BaseModel) -> list[str]:
        if self.audio_format == "vtuber":
            self.vtuber.speaking = self.speak
            return self.vtuber.encode(message)
        return [message.model_dump_json()]

    async def emit(self, message: BaseModel) -> None:
        for payload in self.encode(message):
            try:
                await asyncio.wait_for(self.out.put(payload), timeout=self.serve.send_timeout_s)
            except asyncio.TimeoutError:
                raise SlowConsumer from None

    async def _send_loop(self) -> None:
        try:
            while (payload := await self.out.get()) is not _CLOSE:
                await self.ws.send_text(payload)
        except Exception as exc:  # the client is gone; the receiver sees the disconnect
            log.debug("send on %s failed: %s", self.session_id, exc)

    async def fail(self, message: str, code: str, ref: str | None = None) -> None:
        self.errors += 1
        await self.emit(error(message, code, ref=ref))

    async def send_session(self) -> None:
        companion = self.hub.companion(self.character)
        card = companion.character.card
        greeting = companion.greeting(self.key, self.user_name)
        history = [
            HistoryItem(role=m.role, content=m.content)
            for m in companion.history.load(self.key, limit=50)
            if m.role in ("user", "assistant")
        ]
        avatar = f"/v1/characters/{self.character}/avatar" if companion.character.avatar_path else None
        await self.emit(
            SessionMessage(
                session_id=self.session_id,
                character=self.character,
                name=card.name,
                display_name=card.display_name,
                user=self.user,
                characters=self.hub.character_ids(),
                expressions=companion.character.settings.expressions,
                live2d_model=self.state.live2d_url(companion.character.settings.live2d_model),
                avatar_url=avatar,
                can_listen=self.can_listen,
                can_speak=self.can_speak,
                speak=self.speak,
                audio_format=self.audio_format,
                greeting=greeting,
                history=history,
                limits={
                    "max_text_chars": self.serve.max_text_chars,
                    "max_audio_seconds": self.serve.max_audio_seconds,
                    "max_message_bytes": self.serve.max_message_bytes,
                    "input_queue": self.serve.input_queue,
                    "turns_per_minute": self.serve.turns_per_minute,
                },
            )
        )

    # -- input -------------------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        while not self.closing:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await self._on_binary(message["bytes"])
            elif message.get("text") is not None:
                await self._on_text(message["text"])
            if self.errors > self.serve.max_errors:
                await self.abort(1008, "too many protocol errors")
                return

    async def _on_binary(self, data: bytes) -> None:
        if self.speech is None:
            self.speech = SpeechBuffer()
        buffer = self.speech
        if buffer.overflow:
            return
        buffer.pcm.extend(data)
        if len(buffer.pcm) > self.serve.max_audio_seconds * buffer.sample_rate * 2:
            buffer.overflow = True
            buffer.pcm.clear()
            await self.fail(f"speech longer than {self.serve.max_audio_seconds:g} s", "too_long", buffer.id)

    def _vtuber_samples(self, samples: list[float]) -> None:
        if self.speech is None:
            self.speech = SpeechBuffer()
        if not self.speech.overflow:
            self.speech.floats.extend(samples)

    async def _on_text(self, text: str) -> None:
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            await self.fail("frame is not valid JSON", "bad_json")
            return
        if not isinstance(raw, dict):
            await self.fail("frame must be a JSON object with a 'type'", "bad_json")
            return
        if self.audio_format == "vtuber" or str(raw.get("type", "")).count("-"):
            decoded = vtuber.decode(raw)
            if decoded is None:
                return
            if isinstance(decoded, list):
                self._vtuber_samples(decoded)
                return
            raw = decoded
        ref = raw.get("id") if isinstance(raw.get("id"), str) else None
        kind = raw.get("type")
        if kind not in CLIENT_TYPES:
            await self.fail(f"unknown message type {str(kind)[:40]!r}", "unknown_type", ref)
            return
        try:
            message = CLIENT_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'message'}: {e['msg']}" for e in exc.errors())
            await self.fail(f"invalid {kind} message: {problems[:300]}", "bad_message", ref)
            return
        await self._dispatch(message)

    async def _dispatch(self, message: Any) -> None:
        if isinstance(message, PingMessage):
            await self.emit(PongMessage(id=message.id))
        elif isinstance(message, InterruptMessage):
            await self.interrupt(message.heard_text)
        elif isinstance(message, HelloMessage):
            await self._hello(message)
        elif isinstance(message, TextMessage):
            text = message.text.strip()
            if not text:
                await self.fail("empty text", "bad_message", message.id)
            elif len(text) > self.serve.max_text_chars:
                await self.fail(f"text longer than {self.serve.max_text_chars} characters", "too_long", message.id)
            else:
                await self._enqueue(Pending(kind="text", id=message.id, text=text), turn=True)
        elif isinstance(message, AudioMessage):
            try:
                data = base64.b64decode(message.data, validate=True)
            except (binascii.Error, ValueError):
                await self.fail("audio data is not base64", "bad_audio", message.id)
                return
            if not self.can_listen:
                await self.fail("this server cannot listen (voice extra not installed)", "voice_unavailable")
                return
            await self._enqueue(
                Pending(kind="audio_file", id=message.id, data=data, language=message.language), turn=True
            )
        elif isinstance(message, AudioStartMessage):
            self.speech = SpeechBuffer(sample_rate=message.sample_rate, language=message.language, id=message.id)
        elif isinstance(message, AudioEndMessage):
            await self._audio_end(message)
        elif isinstance(message, ResetMessage):
            await self._enqueue(Pending(kind="reset", id=message.id), turn=False)

    async def _audio_end(self, message: AudioEndMessage) -> None:
        buffer, self.speech = self.speech, None
        ref = message.id or (buffer.id if buffer else None)
        if buffer is None or buffer.overflow or not (buffer.pcm or buffer.floats):
            if buffer is None or not buffer.overflow:
                await self.fail("audio_end without speech before it", "no_speech", ref)
            return
        if not self.can_listen:
            await self.fail("this server cannot listen (voice extra not installed)", "voice_unavailable", ref)
            return
        if buffer.floats:
            samples = np.asarray(buffer.floats, dtype=np.float32)
            pending = Pending(kind="samples", id=ref, samples=samples, sample_rate=ASR_RATE)
        else:
            pcm = bytes(buffer.pcm[: len(buffer.pcm) // 2 * 2])
            pending = Pending(kind="pcm", id=ref, data=pcm, sample_rate=buffer.sample_rate)
        pending.language = buffer.language
        await self._enqueue(pending, turn=True)

    async def _hello(self, message: HelloMessage) -> None:
        if message.character is not None:
            if not self.hub.has(message.character):
                await self.fail(f"no character {message.character!r} here", "unknown_character", message.id)
                return
            self.character = message.character
        if message.user_name:
            self.user_name = message.user_name
        if message.audio_format:
            self.audio_format = message.audio_format
        if message.speak is not None:
            if message.speak and not self.can_speak:
                await self.fail("this server cannot speak (voice extra not installed)", "voice_unavailable")
            self.speak = message.speak and self.can_speak
        await self.send_session()

    async def _enqueue(self, pending: Pending, *, turn: bool) -> None:
        if turn:
            decision = self.state.limiter.check(("ws", self.user))
            if not decision.allowed:
                await self.fail(f"too many turns; retry in {decision.retry_after:.0f} s", "rate_limited", pending.id)
                return
        try:
            self.inputs.put_nowait(pending)
        except asyncio.QueueFull:
            if turn:
                self.state.limiter.refund(("ws", self.user))
            await self.fail(f"{self.serve.input_queue} inputs are already waiting", "busy", pending.id)
            return
        await self.emit(AcceptedMessage(id=pending.id, queued=self.inputs.qsize()))

    async def interrupt(self, heard_text: str | None = None) -> None:
        if self.current is not None and not self.current.done():
            self.heard_text = heard_text
            self.current.cancel()
        elif heard_text is not None:
            # The turn had ended but her voice was still playing: keep what was heard of her last reply.
            async with self.hub.lock(self.key):
                self.hub.base(self.character).record_heard(self.key, heard_text.strip())
            await self.emit(InterruptedEvent(heard_text=heard_text.strip()))

    # -- turns -------------------------------------------------------------------------------
    async def _work_loop(self) -> None:
        try:
            while True:
                pending = await self.inputs.get()
                self.heard_text = None
                self.current = asyncio.create_task(self._handle(pending))
                await asyncio.wait({self.current})
        finally:
            if self.current is not None and not self.current.done():
                self.current.cancel()
                await asyncio.gather(self.current, return_exceptions=True)

    async def _handle(self, pending: Pending) -> None:
        try:
            if pending.kind == "reset":
                await self._reset(pending)
                return
            text = pending.text
            if pending.kind != "text":
                text = await self._transcribe(pending)
                if text is None:
                    return
            await self._turn(pending, text)
        except SlowConsumer:
            await self.abort(1008, "slow consumer: events were not read")
        except asyncio.CancelledError:
            pass  # interrupted before the turn began (e.g. while transcribing)

    async def _reset(self, pending: Pending) -> None:
        companion = self.hub.companion(self.character)
        key = self.key
        async with self.hub.lock(key):
            companion.reset(key)
        greeting = companion.greeting(key, self.user_name)
        await self.emit(ResetDoneMessage(id=pending.id, greeting=greeting))

    async def _transcribe(self, pending: Pending) -> str | None:
        from companion.voice.audio import decode_audio, from_int16, resample

        try:
            if pending.kind == "audio_file":
                audio = await asyncio.to_thread(decode_audio, pending.data, ASR_RATE)
                samples = audio.samples
            elif pending.kind == "pcm":
                samples = from_int16(pending.data)
                if pending.sample_rate != ASR_RATE:
                    samples = await asyncio.to_thread(resample, samples, pending.sample_rate, ASR_RATE)
            else:
                samples = np.clip(pending.samples, -1.0, 1.0).astype(np.float32)
        except CompanionError as exc:
            await self.fail(str(exc), "bad_audio", pending.id)
            return None
        if samples.size > self.serve.max_audio_seconds * ASR_RATE:
            await self.fail(f"speech longer than {self.serve.max_audio_seconds:g} s", "too_long", pending.id)
            return None
        try:
            languages = (
                [pending.language] if pending.language else self.hub.speech.languages(self.hub.base(self.character))
            )
            heard = await self.hub.speech.transcribe(samples, languages)
        except CompanionError as exc:
            await self.fail(str(exc), "turn_failed", pending.id)
            return None
        if not heard.text:
            await self.fail("no speech heard", "no_speech", pending.id)
            return None
        await self.emit(TranscriptEvent(text=heard.text, language=heard.language))
        return heard.text

    async def _turn(self, pending: Pending, text: str) -> None:
        await self.emit(TurnStartMessage(id=pending.id, text=text))
        name = self.hub.base(self.character).name
        stream = self.hub.turn(self.character, self.key, text, user_name=self.user_name, speak=self.speak)
        turn_id = ""
        said: list[str] = []
        try:
            async for event in stream:
                turn_id = event.turn_id or turn_id
                if isinstance(event, TextDeltaEvent):
                    said.append(event.text)
                await self.emit(event)
        except asyncio.CancelledError:
            await stream.aclose()
            if self.closing:
                return
            spoken = clean_reply("".join(said), name)
            heard = spoken
            if self.heard_text is not None:  # she was speaking: history keeps what the user heard
                heard = self.heard_text.strip()
                self.hub.base(self.character).record_heard(self.key, heard)
            await self.emit(InterruptedEvent(turn_id=turn_id, heard_text=heard))
            await self.emit(TurnEndEvent(turn_id=turn_id, text=spoken, interrupted=True))
        except SlowConsumer:
            await stream.aclose()
            raise
        except CompanionError as exc:
            await self.emit(error(str(exc), "turn_failed", turn_id=turn_id, ref=pending.id))
        except Exception:
            log.exception("turn failed on connection %s", self.session_id)
            await self.emit(error("internal error during the turn", "turn_failed", turn_id=turn_id, ref=pending.id))
        finally:
            await stream.aclose()
