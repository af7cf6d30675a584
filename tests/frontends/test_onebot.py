"""QQ over OneBot v11 with a real peer process speaking the protocol over loopback WebSockets."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
import threading
import wave
from pathlib import Path

import websockets

from companion.frontends.onebot import OneBotBot, parse_cq, plain_text, run_forward, segments_of, to_cq
from companion.frontends.server import create_app
from companion.history import ConversationKey
from tests.frontends.conftest import ToneSpeech
from tests.support.uvicorn_server import running

PEER = Path(__file__).resolve().parents[1] / "support" / "onebot_peer.py"
SELF = 10001
REPLY_TEXT = "Hello there! I am so happy to see you. *waves* How was your day?"


def private(user: int, message, **extra) -> dict:
    sender = {"user_id": user, "nickname": f"u{user}"}
    event = {"post_type": "message", "message_type": "private", "sub_type": "friend", "user_id": user}
    return {**event, "message": message, "sender": sender, **extra}


def group(group_id: int, user: int, message, **extra) -> dict:
    sender = {"user_id": user, "card": f"member{user}"}
    event = {"post_type": "message", "message_type": "group", "sub_type": "normal", "group_id": group_id}
    return {**event, "user_id": user, "message": message, "sender": sender, **extra}


def run_peer(tmp_path: Path, mode: str, script: list[dict], expect: int, *args: str) -> subprocess.Popen:
    path = tmp_path / f"script-{mode}.json"
    path.write_text(json.dumps(script, ensure_ascii=False), encoding="utf-8")
    command = [sys.executable, str(PEER), mode, *args, "--script", str(path), "--expect", str(expect)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def calls_of(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def sends(calls: list[dict]) -> list[dict]:
    return [c for c in calls if c["action"].startswith("send_")]


def test_cq_codes_and_segments_round_trip() -> None:
    text = "hi [CQ:at,qq=10001] look, [CQ:image,file=a.png,url=http://x/y?a=1&#44;2] &#91;not a code&#93; &amp;"
    segments = parse_cq(text)
    assert [s["type"] for s in segments] == ["text", "at", "text", "image", "text"]
    assert segments[1]["data"] == {"qq": "10001"}
    assert segments[3]["data"]["url"] == "http://x/y?a=1,2"
    assert segments[4]["data"]["text"] == " [not a code] &"
    assert parse_cq(to_cq(segments)) == segments
    assert plain_text(segments_of(text), "10001") == "hi look, [not a code] &"
    assert (
        plain_text(segments_of([{"type": "at", "data": {"qq": "5"}}, {"type": "text", "data": {"text": " yo"}}]))
        == "@5 yo"
    )
    assert segments_of({"type": "face", "data": {"id": "1"}}) == [{"type": "face", "data": {"id": "1"}}]
    assert segments_of(42) == []


def test_reverse_websocket_private_group_mentions_names_voice_and_isolation(
    make_hub, frontend_settings, scripted_llm, tmp_path
) -> None:
    frontend_settings.serve.onebot = True
    frontend_settings.onebot.access_token = "qq-token"
    frontend_settings.onebot.character = "scripted"
    frontend_settings.onebot.voice_replies = True
    hub = make_hub(speech=ToneSpeech(frontend_settings))
    app = create_app(frontend_settings, hub)
    script = [
        private(1001, [{"type": "text", "data": {"text": "你好"}}], message_id=501),
        group(500, 2002, "just chatting among ourselves", message_id=502),
        group(500, 2002, f"[CQ:at,qq={SELF}] hi there", message_id=503),
        group(500, 2003, [{"type": "text", "data": {"text": "Scripty, how are you?"}}], message_id=504),
        group(600, 2004, "[CQ:at,qq=99999] not for her", message_id=505),
    ]
    with running(app) as base:
        url = base.replace("http://", "ws://") + "/onebot/v11/ws"
        peer = run_peer(tmp_path, "reverse", script, 6, url, "--self-id", str(SELF), "--token", "qq-token")
        out, err = peer.communicate(timeout=120)
        refused = run_peer(tmp_path, "reverse", script[:1], 1, url, "--token", "wrong")
        refused_out, _ = refused.communicate(timeout=60)
    calls = sends(calls_of(out))
    assert len(calls) == 6, (out, err)
    by_target = {}
    for call in calls:
        target = call["params"].get("group_id") or ("private", call["params"].get("user_id"))
        by_target.setdefault(str(target), []).append(call["params"]["message"])
    private_msgs = by_target[str(("private", 1001))]
    assert private_msgs[0] == [{"type": "text", "data": {"text": REPLY_TEXT}}]
    record = private_msgs[1][0]
    assert record["type"] == "record" and record["data"]["file"].startswith("base64://")
    with wave.open(io.BytesIO(base64.b64decode(record["data"]["file"][9:]))) as wav:
        assert wav.getnframes() > wav.getframerate() * 0.5
    group_texts = [m for m in by_target["500"] if m[0]["type"] == "reply"]
    assert sorted(m[0]["data"]["id"] for m in group_texts) == ["503", "504"]
    assert all(m[1] == {"type": "text", "data": {"text": REPLY_TEXT}} for m in group_texts)
    assert "600" not in by_target  # @someone else: not addressed
    # What she was asked: the @-mention is not part of the text.
    asked = sorted(r.messages[-1].content.split("\n\n")[-1] for r in scripted_llm.requests)
    assert asked == ["Scripty, how are you?", "hi there", "你好"]
    # Each person has their own conversation; one group's member never shares another's.
    history = hub.base("scripted").history

    def said(user: str, channel: str) -> list[str]:
        key = ConversationKey(character="scripted", user=user, channel=channel)
        return [m.content for m in history.load(key) if m.role == "user"]

    assert said("qq:1001", "qq-private") == ["你好"]
    assert said("qq:2002", "qq-group:500") == ["hi there"]
    assert said("qq:2003", "qq-group:500") == ["Scripty, how are you?"]
    assert said("qq:2002", "qq-private") == [] and said("qq:2004", "qq-group:600") == []
    assert refused_out.strip() == "REFUSED 401"


def test_rate_limits_per_user_and_per_group(make_hub, frontend_settings, tmp_path) -> None:
    frontend_settings.serve.onebot = True
    frontend_settings.onebot.character = "scripted"
    frontend_settings.onebot.turns_per_minute = 0.001
    frontend_settings.onebot.turn_burst = 2
    frontend_settings.onebot.group_turns_per_minute = 0.001
    frontend_settings.onebot.group_turn_burst = 2
    app = create_app(frontend_settings, make_hub())
    at = f"[CQ:at,qq={SELF}] "
    script = [
        *[group(700, 3001, at + f"message {i}") for i in range(4)],  # one user: 2 of 4
        *[private(3002, f"hello {i}") for i in range(3)],  # 2 replies + one 'slow down' notice
        *[group(800, u, at + "hi") for u in (3003, 3004, 3005)],  # one group: 2 of 3 users
    ]
    script = [item for pair in zip(script, [{"wait": 0.05}] * len(script), strict=True) for item in pair]
    with running(app) as base:
        url = base.replace("http://", "ws://") + "/onebot/v11/ws"
        peer = run_peer(tmp_path, "reverse", script, 7, url, "--self-id", str(SELF))
        out, err = peer.communicate(timeout=120)
    calls = sends(calls_of(out))
    assert len(calls) == 7, (out, err)
    to_group = [c for c in calls if c["action"] == "send_group_msg"]
    assert sum(1 for c in to_group if c["params"]["group_id"] == 700) == 2
    assert sum(1 for c in to_group if c["params"]["group_id"] == 800) == 2
    to_private = [c["params"]["message"][0]["data"]["text"] for c in calls if c["action"] == "send_private_msg"]
    assert sorted(to_private)[0] == REPLY_TEXT and any("slow down" in t for t in to_private)


def test_forward_mode_connects_to_the_implementation(make_hub, frontend_settings, tmp_path) -> None:
    frontend_settings.onebot.character = "scripted"
    hub = make_hub()
    bot = OneBotBot(frontend_settings, hub)
    peer = run_peer(tmp_path, "forward", [private(4001, "are you there?")], 1, "--token", "fwd")
    port = int(peer.stdout.readline().split()[1])
    loop = asyncio.new_event_loop()
    task = loop.create_task(run_forward(bot, f"ws://127.0.0.1:{port}", "fwd", reconnect_s=0.2))
    thread = threading.Thread(target=loop.run_until_complete, args=(asyncio.wait([task]),), daemon=True)
    thread.start()
    try:
        out, err = peer.communicate(timeout=60)
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
    calls = sends(calls_of(out))
    assert calls and calls[0]["action"] == "send_private_msg", (out, err)
    assert calls[0]["params"] == {"user_id": 4001, "message": [{"type": "text", "data": {"text": REPLY_TEXT}}]}


def test_reverse_endpoint_refuses_bad_handshakes(hub, frontend_settings) -> None:
    frontend_settings.serve.onebot = True
    frontend_settings.onebot.access_token = "t"
    app = create_app(frontend_settings, hub)

    async def status(headers: dict) -> int:
        try:
            async with websockets.connect(url, additional_headers=headers):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    with running(app) as base:
        url = base.replace("http://", "ws://") + "/onebot/v11/ws"
        assert asyncio.run(status({"X-Self-ID": "1"})) == 401
        assert asyncio.run(status({"Authorization": "Bearer t"})) == 400
        assert asyncio.run(status({"Authorization": "Bearer t", "X-Self-ID": "1", "X-Client-Role": "Event"})) == 400
        assert asyncio.run(status({"Authorization": "Token t", "X-Self-ID": "1"})) == 101
        assert asyncio.run(status({"X-Self-ID": "1"} | {"Authorization": "Bearer t"})) == 101
