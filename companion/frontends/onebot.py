"""QQ through OneBot v11: how NapCat, Lagrange and LLOneBot expose a QQ account.

Two ways to connect, both "Universal" WebSockets (events and API calls on one socket):
- reverse (default): the implementation connects to us at ws://host:port/onebot/v11/ws,
  sending `X-Self-ID: <bot QQ>` and `Authorization: Bearer <access token>`;
- forward: we connect to the implementation's WebSocket server (`--connect ws://...`).

She answers private messages, and in groups when @-mentioned, addressed by name, or replied to.
Messages arrive as segment arrays or CQ-code strings; replies go out as segments (a quote of the
message she answers, the text, and optionally her voice as a `record` segment). History, memory
and rate limits are per QQ user, per group.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import io
import itertools
import json
import logging
import re
import wave
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from companion.config import Settings
from companion.errors import CompanionError
from companion.events import AudioEvent
from companion.frontends.hub import CompanionHub
from companion.frontends.ratelimit import RateLimiter, check_all
from companion.frontends.text import split_message
from companion.history import ConversationKey

log = logging.getLogger(__name__)
REVERSE_PATH = "/onebot/v11/ws"
Segment = dict[str, Any]

# -- message segments and CQ codes ---------------------------------------------------------------
_CQ = re.compile(r"\[CQ:([a-zA-Z0-9_.-]+)((?:,[^\[\],]*)*)\]")


def _unescape(text: str, *, param: bool = False) -> str:
    if param:
        text = text.replace("&#44;", ",")
    return text.replace("&#91;", "[").replace("&#93;", "]").replace("&amp;", "&")


def _escape(text: str, *, param: bool = False) -> str:
    text = text.replace("&", "&amp;").replace("[", "&#91;").replace("]", "&#93;")
    return text.replace(",", "&#44;") if param else text


def parse_cq(text: str) -> list[Segment]:
    """A CQ-code string as segments: 'hi [CQ:at,qq=1]' -> [text 'hi ', at qq=1]."""
    segments: list[Segment] = []
    at = 0
    for match in _CQ.finditer(text):
        if match.start() > at:
            segments.append({"type": "text", "data": {"text": _unescape(text[at : match.start()])}})
        data: dict[str, str] = {}
        for pair in filter(None, match.group(2).split(",")):
            key, _, value = pair.partition("=")
            data[key] = _unescape(value, param=True)
        segments.append({"type": match.group(1), "data": data})
        at = match.end()
    if at < len(text):
        segments.append({"type": "text", "data": {"text": _unescape(text[at:])}})
    return segments


def to_cq(segments: list[Segment]) -> str:
    out = []
    for segment in segments:
        data = segment.get("data") or {}
        if segment.get("type") == "text":
            out.append(_escape(str(data.get("text", ""))))
        else:
            params = "".join(f",{k}={_escape(str(v), param=True)}" for k, v in data.items())
            out.append(f"[CQ:{segment.get('type')}{params}]")
    return "".join(out)


def segments_of(message: Any) -> list[Segment]:
    """An event's `message` (segment array, one segment, or CQ string) as a segment list."""
    if isinstance(message, str):
        return parse_cq(message)
    if isinstance(message, dict):
        message = [message]
    if not isinstance(message, list):
        return []
    out = []
    for item in message:
        if isinstance(item, dict) and isinstance(item.get("type"), str):
            data = item.get("data") if isinstance(item.get("data"), dict) else {}
            out.append({"type": item["type"], "data": data})
        elif isinstance(item, str):
            out.extend(parse_cq(item))
    return out


def plain_text(segments: list[Segment], self_id: str | None = None) -> str:
    """What was said: text segments, other people's @-mentions as @name; @self and media dropped."""
    parts = []
    for segment in segments:
        data = segment["data"]
        if segment["type"] == "text":
            parts.append(str(data.get("text", "")))
        elif segment["type"] == "at" and str(data.get("qq")) != self_id:
            parts.append(f"@{data.get('name') or data.get('qq')}")
        elif segment["type"] == "face":
            parts.append("[表情]")
    return re.sub(r"[ \t]+", " ", "".join(parts)).strip()


def text_segment(text: str) -> Segment:
    return {"type": "text", "data": {"text": text}}


def record_segment(audio: list[AudioEvent]) -> Segment | None:
    """Her reply's sentences as one WAV, in a `record` (voice message) segment."""
    pcm = bytearray()
    rate = None
    for event in audio:
        with wave.open(io.BytesIO(base64.b64decode(event.audio_wav_b64)), "rb") as wav:
            if rate is None:
                rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
            if (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) != (rate, width, channels):
                continue
            pcm += wav.readframes(wav.getnframes())
    if rate is None or not pcm:
        return None
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(bytes(pcm))
    return {"type": "record", "data": {"file": "base64://" + base64.b64encode(out.getvalue()).decode()}}


# -- one connection to an implementation -------------------------------------------------------
class OneBotError(CompanionError):
    pass


class OneBotLink:
    """API calls out and their answers in, matched by `echo`, on one Universal WebSocket."""

    def __init__(self, send: Callable[[str], Awaitable[None]], self_id: str | None, *, timeout: float = 30.0) -> None:
        self._send = send
        self.self_id = self_id
        self.timeout = timeout
        self._echo = itertools.count(1)
        self._waiting: dict[str, asyncio.Future] = {}

    async def call(self, action: str, **params: Any) -> Any:
        echo = f"companion-{next(self._echo)}"
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting[echo] = future
        try:
            await self._send(json.dumps({"action": action, "params": params, "echo": echo}, ensure_ascii=False))
            answer = await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            raise OneBotError(f"OneBot {action}: no answer in {self.timeout:g} s") from None
        finally:
            self._waiting.pop(echo, None)
        if answer.get("status") == "failed" or answer.get("retcode", 0) not in (0, 1):
            raise OneBotError(f"OneBot {action} failed: retcode {answer.get('retcode')} {answer.get('message', '')}")
        return answer.get("data")

    def answer(self, message: dict[str, Any]) -> bool:
        """Route an API answer to its caller; False when the message is not one."""
        echo = message.get("echo")
        if echo is None or ("status" not in message and "retcode" not in message):
            return False
        future = self._waiting.get(str(echo))
        if future is not None and not future.done():
            future.set_result(message)
        return True

    def close(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(OneBotError("OneBot connection closed"))


# -- the bot -----------------------------------------------------------------------------------
class OneBotBot:
    def __init__(self, settings: Settings, hub: CompanionHub, *, max_pending: int = 32) -> None:
        self.settings = settings
        self.config = settings.onebot
        self.hub = hub
        self.character = self.config.character
        self.users = RateLimiter(self.config.turns_per_minute, self.config.turn_burst)
        self.groups = RateLimiter(self.config.group_turns_per_minute, self.config.group_turn_burst)
        self.pending = asyncio.Semaphore(max_pending)
        self.tasks: set[asyncio.Task] = set()
        self.sent: OrderedDict[str, None] = OrderedDict()  # her recent message ids (replies to them address her)
        self.warned: set[str] = set()

    @property
    def names(self) -> list[str]:
        if self.config.names:
            return self.config.names
        card = self.hub.base(self.character).character.card
        return [n for n in {card.name, card.nickname or ""} if n]

    def allowed_self(self, self_id: str | None) -> bool:
        return not self.config.self_ids or (self_id is not None and int(self_id) in self.config.self_ids)

    def dispatch(self, event: dict[str, Any], link: OneBotLink) -> None:
        """Handle an event in its own task (the link must keep reading API answers meanwhile)."""
        if event.get("post_type") != "message":
            if event.get("post_type") == "meta_event" and event.get("meta_event_type") == "lifecycle":
                log.info("OneBot %s: %s", event.get("self_id"), event.get("sub_type"))
            return
        if self.pending.locked():
            log.warning("OneBot: too many messages in flight; dropping one from %s", event.get("user_id"))
            return
        task = asyncio.create_task(self._guarded(event, link))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _guarded(self, event: dict[str, Any], link: OneBotLink) -> None:
        async with self.pending:
            try:
                await self.on_message(event, link)
            except OneBotError as exc:
                log.warning("%s", exc)
            except Exception:
                log.exception("OneBot message handling failed")

    def addressed(self, segments: list[Segment], self_id: str | None) -> bool:
        for segment in segments:
            data = segment["data"]
            if segment["type"] == "at" and self_id is not None and str(data.get("qq")) == self_id:
                return True
            if segment["type"] == "reply" and str(data.get("id")) in self.sent:
                return True
        text = plain_text(segments, self_id).lower()
        return any(name.lower() in text for name in self.names)

    async def on_message(self, event: dict[str, Any], link: OneBotLink) -> None:
        self_id = str(event.get("self_id") or link.self_id or "")
        user_id = event.get("user_id")
        if user_id is None or str(user_id) == self_id:
            return
        kind = event.get("message_type")
        group_id = event.get("group_id")
        segments = segments_of(event.get("message", event.get("raw_message", "")))
        if kind == "group":
            if group_id is None or (self.config.groups and int(group_id) not in self.config.groups):
                return
            if not self.addressed(segments, self_id):
                return
        elif kind == "private":
            if not self.config.private:
                return
        else:
            return
        text = plain_text(segments, self_id)
        if not text:
            return
        limits = [(self.users, ("qq", str(user_id)))]
        if kind == "group":
            limits.append((self.groups, ("qq-group", str(group_id))))
        decision = check_all(limits)
        if not decision.allowed:
            log.info("OneBot: rate limited %s in %s", user_id, group_id or "private")
            if kind == "private" and str(user_id) not in self.warned:
                self.warned.add(str(user_id))
                await self.send(
                    link,
                    event,
                    [text_segment(f"（慢一点呀，{decision.retry_after:.0f} 秒后再聊吧 / slow down a little）")],
                )
            return
        self.warned.discard(str(user_id))
        channel = f"qq-group:{group_id}" if kind == "group" else "qq-private"
        key = ConversationKey(character=self.character, user=f"qq:{user_id}", channel=channel)
        sender = event.get("sender") if isinstance(event.get("sender"), dict) else {}
        user_name = str(sender.get("card") or sender.get("nickname") or self.settings.user_name)[:32]
        speak = self.config.voice_replies and self.hub.speech.tts_available
        reply = await self.hub.reply(self.character, key, text, user_name=user_name, speak=speak)
        if not reply.display:
            return
        pieces = split_message(reply.display, self.config.max_reply_chars)
        for i, piece in enumerate(pieces):
            message = [text_segment(piece)]
            if i == 0 and kind == "group" and self.config.quote and event.get("message_id") is not None:
                message.insert(0, {"type": "reply", "data": {"id": str(event["message_id"])}})
            await self.send(link, event, message)
        if speak and reply.audio and (record := record_segment(reply.audio)) is not None:
            await self.send(link, event, [record])

    async def send(self, link: OneBotLink, event: dict[str, Any], message: list[Segment]) -> None:
        if event.get("message_type") == "group":
            data = await link.call("send_group_msg", group_id=event["group_id"], message=message)
        else:
            data = await link.call("send_private_msg", user_id=event["user_id"], message=message)
        if isinstance(data, dict) and data.get("message_id") is not None:
            self.sent[str(data["message_id"])] = None
            while len(self.sent) > 1000:
                self.sent.popitem(last=False)

    async def drain(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


async def serve_link(
    bot: OneBotBot,
    receive: Callable[[], Awaitable[str | None]],
    send: Callable[[str], Awaitable[None]],
    self_id: str | None,
) -> None:
    """Read one Universal connection until it closes: answers to our calls, events to the bot."""
    link = OneBotLink(send, self_id)
    try:
        while (raw := await receive()) is not None:
            try:
                message = json.loads(raw)
            except json.JSONDecodeError:
                log.warning("OneBot: a frame that is not JSON was ignored")
                continue
            if not isinstance(message, dict) or link.answer(message):
                continue
            if link.self_id is None and message.get("self_id") is not None:
                link.self_id = str(message["self_id"])
            if not bot.allowed_self(link.self_id):
                log.warning("OneBot: account %s is not in onebot.self_ids; ignoring it", link.self_id)
                continue
            bot.dispatch(message, link)
    finally:
        link.close()


# -- reverse WebSocket server -------------------------------------------------------------------
def check_access_token(expected: str | None, headers: Any, query: Any) -> bool:
    if not expected:
        return True
    presented = ""
    auth = headers.get("authorization", "")
    for scheme in ("bearer ", "token "):
        if auth.lower().startswith(scheme):
            presented = auth[len(scheme) :].strip()
    presented = presented or query.get("access_token", "")
    return hmac.compare_digest(presented.encode(), expected.encode())


def mount_reverse(app: Any, settings: Settings, hub: CompanionHub) -> OneBotBot:
    """Accept OneBot v11 reverse WebSocket connections on `app` at /onebot/v11/ws."""
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from companion.frontends.server.app import refuse_websocket
    from companion.frontends.server.auth import is_loopback

    token = settings.onebot.access_token
    if not token and not is_loopback(settings.serve.host):
        raise CompanionError(
            f"QQ on {settings.serve.host} needs a OneBot access token: set COMPANION_ONEBOT__ACCESS_TOKEN"
        )
    bot = OneBotBot(settings, hub)

    async def endpoint(ws: WebSocket) -> None:
        if not check_access_token(token, ws.headers, ws.query_params):
            await refuse_websocket(ws, 401, "invalid OneBot access token")
            return
        self_id = ws.headers.get("x-self-id", "")
        if not self_id.isdigit():
            await refuse_websocket(ws, 400, "missing or invalid X-Self-ID header")
            return
        role = ws.headers.get("x-client-role", "Universal")
        if role.lower() != "universal":
            await refuse_websocket(ws, 400, f"X-Client-Role {role} is not supported: use Universal")
            return
        if not bot.allowed_self(self_id):
            await refuse_websocket(ws, 403, f"account {self_id} is not allowed")
            return
        await ws.accept()
        log.info("OneBot account %s connected", self_id)
        lock = asyncio.Lock()

        async def receive() -> str | None:
            try:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        return None
                    if message.get("text") is not None:
                        return message["text"]
                    if message.get("bytes") is not None:
                        return message["bytes"].decode("utf-8", "replace")
            except WebSocketDisconnect:
                return None

        async def send(text: str) -> None:
            async with lock:
                await ws.send_text(text)

        await serve_link(bot, receive, send, self_id)
        log.info("OneBot account %s disconnected", self_id)

    for path in (REVERSE_PATH, REVERSE_PATH + "/"):
        app.router.add_websocket_route(path, endpoint)  # a plain Starlette route: no dependency injection
    return bot


# -- forward WebSocket client -------------------------------------------------------------------
async def run_forward(bot: OneBotBot, url: str, access_token: str | None, *, reconnect_s: float = 3.0) -> None:
    """Connect to the implementation's WebSocket server; reconnect when it drops."""
    import websockets

    headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
    while True:
        try:
            async with websockets.connect(url, additional_headers=headers, max_size=64 * 1024 * 1024) as ws:
                log.info("OneBot: connected to %s", url)

                async def receive() -> str | None:
                    try:
                        data = await ws.recv()
                    except websockets.ConnectionClosed:
                        return None
                    return data if isinstance(data, str) else data.decode("utf-8", "replace")

                await serve_link(bot, receive, ws.send, None)
        except (OSError, websockets.WebSocketException) as exc:
            log.warning("OneBot: %s unreachable (%s); retrying in %g s", url, exc, reconnect_s)
        await asyncio.sleep(reconnect_s)


def run_onebot(settings: Settings, hub: CompanionHub) -> None:
    config = settings.onebot
    if config.mode == "forward":

        async def main() -> None:
            bot = OneBotBot(settings, hub)
            await run_forward(bot, config.url, config.access_token, reconnect_s=config.reconnect_s)

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
        return
    from fastapi import FastAPI

    from companion.frontends.server.app import serve_forever
    from companion.frontends.server.auth import is_loopback

    if not is_loopback(config.host) and not config.access_token:
        raise CompanionError(
            f"listening on {config.host} needs an access token: "
            "pass --access-token or set COMPANION_ONEBOT__ACCESS_TOKEN"
        )
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    mount_reverse(app, settings, hub)

    @app.get("/healthz")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    serve = settings.serve.model_copy(update={"host": config.host, "port": config.port})
    log.info("OneBot reverse WebSocket at ws://%s:%s%s", config.host, config.port, REVERSE_PATH)
    serve_forever(app, serve)
