"""Malformed frames, oversized messages, unknown types, bad tokens, floods: each gets an error
event or a refusal, and the server keeps serving everyone else."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from companion.frontends.server import create_app
from tests.frontends.wsclient import Client, ws_url
from tests.support.uvicorn_server import running


async def _errors(client: Client, count: int) -> list[dict]:
    got = []
    while len(got) < count:
        message = await client.recv(timeout=20)
        if message["type"] == "error":
            got.append(message)
    return got


def test_garbage_gets_error_events_while_others_are_served(hub, frontend_settings) -> None:
    frontend_settings.serve.max_message_bytes = 64 * 1024
    frontend_settings.serve.max_text_chars = 1000
    frontend_settings.serve.max_errors = 12
    app = create_app(frontend_settings, hub)

    async def go(base: str) -> None:
        victim = await Client.connect(ws_url(base, user="victim", character="scripted"))
        attacker = await Client.connect(ws_url(base, user="attacker", character="scripted"))
        await victim.recv()
        await attacker.recv()
        await victim.send({"type": "text", "text": "hello", "id": "v1"})
        bad = [
            ("not json at all", "bad_json"),
            ("[1, 2, 3]", "bad_json"),
            ('"just a string"', "bad_json"),
            ({"type": "launch_missiles"}, "unknown_type"),
            ({"no_type": True}, "unknown_type"),
            ({"type": "text"}, "bad_message"),
            ({"type": "text", "text": 42}, "bad_message"),
            ({"type": "text", "text": "   "}, "bad_message"),
            ({"type": "text", "text": "x" * 1001, "id": "big"}, "too_long"),
            ({"type": "audio", "data": "%%% not base64 %%%"}, "bad_audio"),
            ({"type": "audio_end"}, "no_speech"),
            ("[" * 30_000 + "]" * 30_000, "bad_json"),  # deep nesting: under the frame limit, refused cleanly
        ]
        for frame, _ in bad:
            await attacker.send(frame)
        errors = await _errors(attacker, len(bad))
        assert [e["code"] for e in errors] == [code for _, code in bad]
        assert "(message big)" in errors[8]["message"]
        # The victim's turn completed normally meanwhile.
        victim_turn = await victim.until("turn_end")
        assert victim_turn[-1]["text"].startswith("[joy] Hello there!")
        assert not [m for m in victim_turn if m["type"] == "error"]
        # One error too many: the attacker is disconnected (policy violation)...
        await attacker.send({"type": "nope"})
        await attacker.send({"type": "nope"})
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await attacker.recv(timeout=10)
        assert closed.value.rcvd.code == 1008
        # ...and an oversized frame closes a connection with 1009 (message too big).
        big = await Client.connect(ws_url(base, user="big"))
        await big.recv()
        await big.send("x" * (65 * 1024))
        with pytest.raises(websockets.ConnectionClosed) as too_big:
            await big.recv(timeout=10)
        assert too_big.value.rcvd.code == 1009
        # The victim is still served.
        await victim.send({"type": "text", "text": "still there?"})
        assert (await victim.until("turn_end"))[-1]["type"] == "turn_end"
        await victim.close()

    with running(app, ws_max_size=frontend_settings.serve.max_message_bytes) as base:
        asyncio.run(go(base))


def test_bad_tokens_are_refused_before_the_handshake(hub, frontend_settings) -> None:
    frontend_settings.serve.token = "s3cret"
    frontend_settings.serve.user_tokens = {"alice-token": "alice"}
    app = create_app(frontend_settings, hub)

    async def go(base: str) -> None:
        for query in ({}, {"token": "wrong"}, {"token": ""}):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await Client.connect(ws_url(base, **query))
            assert refused.value.response.status_code == 401
        ok = await Client.connect(ws_url(base, token="s3cret", user="carol"))
        assert (await ok.recv())["user"] == "carol"
        await ok.close()
        # A per-user token binds the user, whatever the client claims.
        bound = await Client.connect(ws_url(base, token="alice-token", user="mallory"))
        assert (await bound.recv())["user"] == "alice"
        await bound.close()
        header = await Client.connect(ws_url(base), additional_headers={"Authorization": "Bearer s3cret"})
        assert (await header.recv())["type"] == "session"
        await header.close()

    with running(app) as base:
        asyncio.run(go(base))


def test_cross_site_pages_cannot_open_the_socket_without_a_token(hub, frontend_settings) -> None:
    app = create_app(frontend_settings, hub)

    async def go(base: str) -> None:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await Client.connect(ws_url(base), origin="https://evil.example")
        assert refused.value.response.status_code == 403
        same = await Client.connect(ws_url(base), origin=base)
        assert (await same.recv())["type"] == "session"
        await same.close()

    with running(app) as base:
        asyncio.run(go(base))


def test_floods_are_bounded_by_queue_rate_and_connection_limits(hub, frontend_settings, scripted_llm) -> None:
    scripted_llm.delay = 0.05
    frontend_settings.serve.input_queue = 1
    frontend_settings.serve.turns_per_minute = 0.001
    frontend_settings.serve.turn_burst = 3
    frontend_settings.serve.max_connections = 2
    app = create_app(frontend_settings, hub)

    async def go(base: str) -> None:
        client = await Client.connect(ws_url(base, user="flood", character="scripted"))
        await client.recv()
        for i in range(5):
            await client.send({"type": "text", "text": f"message {i}", "id": f"f{i}"})
        got = []
        while sum(1 for m in got if m["type"] == "turn_end") < 2:
            got.append(await client.recv(timeout=30))
        codes = [(m["type"], m.get("code"), m.get("id")) for m in got if m["type"] in ("accepted", "error")]
        accepted = [c for c in codes if c[0] == "accepted"]
        refused = {c[1] for c in codes if c[0] == "error"}
        assert len(accepted) == 2, codes  # one running, one waiting; the queue holds one
        assert refused <= {"busy", "rate_limited"} and "busy" in refused
        await client.send({"type": "text", "text": "one more"})
        await client.send({"type": "text", "text": "and another"})
        errors = await _errors(client, 1)
        assert errors[0]["code"] == "rate_limited"
        # Connection limit: a third socket is refused while two are open.
        other = await Client.connect(ws_url(base, user="other"))
        with pytest.raises(websockets.InvalidStatus) as full:
            await Client.connect(ws_url(base, user="third"))
        assert full.value.response.status_code == 503
        await other.close()
        await client.close()

    with running(app) as base:
        asyncio.run(go(base))


def test_a_client_that_stops_reading_is_dropped_and_others_are_served(
    make_hub, frontend_settings, scripted_llm
) -> None:
    from tests.frontends.conftest import ToneSpeech

    scripted_llm.by_prompt["long story"] = " ".join(
        f"[joy] This is sentence {i} of a very long story." for i in range(400)
    )
    scripted_llm.delay = 0.0
    frontend_settings.max_new_tokens = 5000
    frontend_settings.serve.send_queue = 4
    frontend_settings.serve.send_timeout_s = 2.0
    app = create_app(frontend_settings, make_hub(speech=ToneSpeech(frontend_settings)))
    state = app.state.companion

    async def go(base: str) -> None:
        # max_queue=1: the client library stops reading the socket once a message waits unread.
        stuck = await Client.connect(ws_url(base, user="stuck", character="scripted"), max_queue=1)
        await stuck.recv()
        await stuck.send({"type": "text", "text": "tell me a long story"})
        other = await Client.connect(ws_url(base, user="other", character="scripted", speak="0"))
        await other.recv()
        # Socket buffers fill (megabytes of audio), then the bounded queue; the server gives up on it.
        for _ in range(600):
            if state.connections == 1:
                break
            await asyncio.sleep(0.2)
        assert state.connections == 1, "the connection that stopped reading should have been dropped"
        await other.send({"type": "text", "text": "hello?"})
        assert (await other.until("turn_end", timeout=60))[-1]["text"].startswith("[joy] Hello there!")
        # Reading again, it gets what was in flight, then the end of the connection.
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await stuck.recv(timeout=30)
        await other.close()

    with running(app) as base:
        asyncio.run(go(base))
