"""The WebSocket endpoint over a real socket: typed events, interrupts, isolation between users."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from companion.events import EVENT_ADAPTER
from companion.frontends.server import create_app
from companion.frontends.server.protocol import CONTROL_ADAPTER
from companion.history import ConversationKey
from companion.session import clean_reply
from tests.frontends.wsclient import Client, ws_url
from tests.support.uvicorn_server import running

pytestmark = pytest.mark.slow

TURN_EVENTS = {
    "transcript",
    "context",
    "text_delta",
    "sentence",
    "expression",
    "audio",
    "turn_end",
    "interrupted",
    "error",
}


def validate(message: dict) -> None:
    """Every server message parses as a published event or control message."""
    if message["type"] in TURN_EVENTS:
        EVENT_ADAPTER.validate_python(message)
    else:
        CONTROL_ADAPTER.validate_python(message)


def test_text_turn_streams_typed_events_and_records_history(hub, frontend_settings) -> None:
    app = create_app(frontend_settings, hub)

    async def go(base: str) -> list[dict]:
        client = await Client.connect(ws_url(base, user="alice"))
        session = await client.recv()
        assert session["type"] == "session" and session["character"] == "tester" and session["user"] == "alice"
        assert session["greeting"] == "Hi, I'm Tester."
        await client.send({"type": "text", "text": "Hello! Who are you?", "id": "m1"})
        messages = await client.until("turn_end")
        await client.close()
        return [session, *messages]

    with running(app) as base:
        messages = asyncio.run(go(base))
    for message in messages:
        validate(message)
    kinds = [m["type"] for m in messages]
    assert kinds[1:3] == ["accepted", "turn_start"] and messages[1]["id"] == messages[2]["id"] == "m1"
    deltas = [m for m in messages if m["type"] == "text_delta"]
    end = messages[-1]
    assert len(deltas) >= 2, "text should stream in pieces"
    assert {m["turn_id"] for m in deltas} == {end["turn_id"]}
    assert end["text"] == clean_reply("".join(d["text"] for d in deltas), "Tester") and not end["interrupted"]
    # Sentence events carry the text without tags (the processor ran).
    assert any(m["type"] == "sentence" for m in messages) or not end["text"]
    history = hub.base("tester").history.load(ConversationKey(character="tester", user="alice", channel="web"))
    assert [m.content for m in history] == ["Hi, I'm Tester.", "Hello! Who are you?", end["text"]]


def test_interrupt_stops_the_turn_and_history_keeps_what_was_said(hub, frontend_settings, scripted_llm) -> None:
    scripted_llm.delay = 0.15
    app = create_app(frontend_settings, hub)

    async def go(base: str) -> list[dict]:
        client = await Client.connect(ws_url(base, user="carol", character="scripted"))
        await client.recv()
        await client.send({"type": "text", "text": "Tell me everything."})
        got = await client.until("text_delta")
        got += await client.until("text_delta")
        await client.send({"type": "interrupt"})
        got += await client.until("turn_end", timeout=10)
        # The connection keeps working after an interrupt.
        await client.send({"type": "ping", "id": "p"})
        got += await client.until("pong")
        await client.close()
        return got

    with running(app) as base:
        messages = asyncio.run(go(base))
    interrupted = [m for m in messages if m["type"] == "interrupted"]
    end = next(m for m in messages if m["type"] == "turn_end")
    said = clean_reply("".join(m["text"] for m in messages if m["type"] == "text_delta"), "Scripty")
    assert interrupted and end["interrupted"] and end["text"] == said
    assert len(said.split()) < len(scripted_llm.script.split()), "generation went on after the interrupt"
    history = hub.base("scripted").history.load(ConversationKey(character="scripted", user="carol", channel="web"))
    assert history[-2].content == "Tell me everything." and history[-1].content == said


def test_one_users_words_never_reach_another_users_prompt(hub, frontend_settings, local_llm) -> None:
    seen: list[tuple[str, str]] = []
    original = local_llm.stream

    def recording(request):
        seen.append((request.messages[-1].content, "\n".join(m.content for m in request.messages)))
        return original(request)

    app = create_app(frontend_settings, hub)
    secret = "my locker code is 7391 and my cat is Pumpernickel"

    async def go(base: str) -> tuple[dict, dict]:
        alice = await Client.connect(ws_url(base, user="alice"))
        bob = await Client.connect(ws_url(base, user="bob"))
        await alice.recv()
        await bob.recv()
        await alice.send({"type": "text", "text": f"Remember this: {secret}."})
        await alice.until("turn_end")
        # Both ask at the same time; each answer goes to its own asker.
        await bob.send({"type": "text", "text": "What is my locker code and my cat's name?"})
        await alice.send({"type": "text", "text": "What is my locker code?"})
        bob_end = (await bob.until("turn_end"))[-1]
        alice_end = (await alice.until("turn_end"))[-1]
        await alice.close()
        await bob.close()
        return bob_end, alice_end

    local_llm.stream = recording
    try:
        with running(app) as base:
            bob_end, _ = asyncio.run(go(base))
    finally:
        local_llm.stream = original

    def prompt_ending(text: str) -> str:
        return next(full for last, full in seen if last.endswith(text))

    bob_prompt = prompt_ending("What is my locker code and my cat's name?")
    alice_prompt = prompt_ending("What is my locker code?")
    assert secret in alice_prompt, "alice's own history reaches her prompt"
    assert "7391" not in bob_prompt and "Pumpernickel" not in bob_prompt
    assert "7391" not in bob_end["text"] and "Pumpernickel" not in bob_end["text"]


def test_schema_health_and_models(hub, frontend_settings) -> None:
    app = create_app(frontend_settings, hub)
    with running(app) as base:
        schema = httpx.get(f"{base}/v1/events/schema").json()
        health = httpx.get(f"{base}/healthz").json()
        models = httpx.get(f"{base}/v1/models").json()
    assert schema["version"] == 1 and "turn_end" in str(schema["events"]) and "interrupt" in str(schema["client"])
    assert health["status"] == "ok" and health["characters"] == ["tester", "scripted"]
    assert [m["id"] for m in models["data"]] == ["tester", "scripted"]
