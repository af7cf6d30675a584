"""The small parts of the frontends: rate limits, reply text, name filter, auth rules, wire formats."""

from __future__ import annotations

import subprocess
import sys

import pytest

from companion.frontends.ratelimit import RateLimiter, check_all
from companion.frontends.server import vtuber
from companion.frontends.server.auth import Refused, authenticate, is_loopback
from companion.frontends.server.protocol import CLIENT_ADAPTER, protocol_schema
from companion.frontends.settings import ServeSettings
from companion.frontends.text import display_text, split_message
from companion.reply_filter import ReplyFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_and_forgets_idle_keys() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=6, burst=2, clock=clock, max_keys=3)
    assert limiter.check("a").allowed and limiter.check("a").allowed
    refused = limiter.check("a")
    assert not refused.allowed and refused.retry_after == pytest.approx(10.0)
    clock.now = 10.0
    assert limiter.check("a").allowed and not limiter.check("a").allowed
    assert limiter.check("b").allowed  # keys are independent
    clock.now = 1000.0
    for key in "cdef":
        limiter.check(key)
    assert len(limiter._buckets) <= 3  # idle buckets were dropped


def test_check_all_takes_from_every_limit_or_none() -> None:
    clock = Clock()
    users = RateLimiter(60, 5, clock=clock)
    groups = RateLimiter(60, 1, clock=clock)
    assert check_all([(users, "u1"), (groups, "g")]).allowed
    assert not check_all([(users, "u2"), (groups, "g")]).allowed
    assert users._tokens("u2", clock.now) == 5  # refunded


def test_split_message_respects_limit_boundaries_and_code_fences() -> None:
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 60 for i in range(10))
    pieces = split_message(text, 500)
    assert all(len(p) <= 500 for p in pieces) and all(p.startswith("Paragraph") for p in pieces)
    assert " ".join(" ".join(pieces).split()) == " ".join(text.split())
    code = "Here:\n```python\n" + "\n".join(f"print({i})" for i in range(200)) + "\n```\nDone."
    pieces = split_message(code, 300)
    assert all(len(p) <= 300 for p in pieces)
    assert all(p.count("```") % 2 == 0 for p in pieces), "every piece closes the code block it opens"
    chinese = "今天天气很好。" * 200
    pieces = split_message(chinese, 100)
    assert all(len(p) <= 100 and p.endswith("。") for p in pieces) and "".join(pieces) == chinese
    assert split_message("x" * 250, 100) == ["x" * 96, "x" * 96, "x" * 58]


def test_display_text_drops_emotion_tags_only() -> None:
    assert display_text("[joy] Hi! [Blush]  *waves* [note to self]", ["blush"]) == "Hi! *waves* [note to self]"
    assert display_text("[tears] 呜呜", {"tears": "cry"}) == "呜呜"


def test_leading_name_filter_streams_without_the_name() -> None:
    def run(pieces: list[str]) -> str:
        f = ReplyFilter("Mochi")
        return "".join(f.feed(p) for p in pieces) + f.flush()

    assert run(["Mo", "chi", ": ", "hello"]) == "hello"
    assert run(["Mochi：", "你好"]) == "你好"
    assert run(["Mochizuki", " is here"]) == "Mochizuki is here"
    assert run(["Mo"]) == "Mo"
    assert run([" Hi", " there"]) == "Hi there"


def test_auth_rules() -> None:
    open_ = ServeSettings()
    local = {"host": "127.0.0.1:8765"}
    assert authenticate(open_, local, {}, websocket=True).user is None
    for headers in (
        {"host": "evil.example:8765"},
        {**local, "origin": "https://evil.example"},
        {**local, "origin": "null"},
    ):
        with pytest.raises(Refused) as refused:
            authenticate(open_, headers, {}, websocket=True)
        assert refused.value.status == 403
    assert authenticate(open_, {**local, "origin": "http://127.0.0.1:8765"}, {}, websocket=True)
    allowed = ServeSettings(allowed_origins=["http://localhost:3000"])
    assert authenticate(allowed, {**local, "origin": "http://localhost:3000"}, {}, websocket=True)
    guarded = ServeSettings(host="0.0.0.0", token="t", user_tokens={"ut": "alice"})
    anywhere = {"host": "203.0.113.5:8765", "origin": "https://elsewhere.example"}
    assert authenticate(guarded, {**anywhere, "authorization": "Bearer t"}, {}, websocket=False).user is None
    assert authenticate(guarded, anywhere, {"token": "ut"}, websocket=True).user == "alice"
    with pytest.raises(Refused):
        authenticate(guarded, anywhere, {"token": "t"}, websocket=False)  # query tokens: WebSocket only
    with pytest.raises(Refused):
        authenticate(guarded, {**anywhere, "authorization": "Bearer nope"}, {}, websocket=False)
    assert is_loopback("::1") and is_loopback("[::1]") and is_loopback("127.0.0.2") and not is_loopback("0.0.0.0")


def test_wire_formats() -> None:
    schema = protocol_schema()
    assert schema["version"] == 1 and set(schema["error_codes"]) >= {"bad_json", "busy", "rate_limited"}
    assert CLIENT_ADAPTER.validate_python({"type": "text", "text": "hi", "extra": 1}).text == "hi"
    assert vtuber.decode({"type": "text-input", "text": "hi"}) == {"type": "text", "text": "hi"}
    assert vtuber.decode({"type": "mic-audio-data", "audio": [0.1, -0.2]}) == [0.1, -0.2]
    assert vtuber.decode({"type": "interrupt-signal", "text": "heard"}) == {"type": "interrupt", "heard_text": "heard"}
    assert vtuber.decode({"type": "frontend-playback-complete"}) is None
    assert vtuber.decode({"type": "text", "text": "ours"}) == {"type": "text", "text": "ours"}


def test_serve_refuses_a_public_address_without_a_token(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "companion", "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 1 and "needs a token" in result.stderr
