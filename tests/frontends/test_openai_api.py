"""`/v1/chat/completions` and `/v1/models` with the official `openai` client, over real HTTP."""

from __future__ import annotations

import httpx
import openai
import pytest

from companion.frontends.server import create_app
from tests.support.uvicorn_server import running

pytestmark = pytest.mark.slow


def test_openai_client_streams_and_completes_with_the_character(hub, frontend_settings, local_llm) -> None:
    seen = []
    original = local_llm.stream

    def recording(request):
        seen.append(request)
        return original(request)

    local_llm.stream = recording
    app = create_app(frontend_settings, hub)
    try:
        with running(app) as base:
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused-on-loopback")
            assert [m.id for m in client.models.list()] == ["tester", "scripted"]
            messages = [
                {"role": "system", "content": "You are a pirate."},
                {"role": "user", "content": "Hi!"},
                {"role": "assistant", "content": "Hello, friend."},
                {"role": "user", "content": "What is your name?"},
            ]
            stream = client.chat.completions.create(
                model="tester",
                messages=messages,
                stream=True,
                max_tokens=8,
                temperature=0,
                stream_options={"include_usage": True},
            )
            chunks = list(stream)
            plain = client.chat.completions.create(model="tester", messages=messages, max_tokens=8, temperature=0)
    finally:
        local_llm.stream = original
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    streamed = "".join(pieces)
    assert sum(1 for p in pieces if p) >= 2, "the reply should arrive in several chunks"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert plain.choices[0].message.content == streamed.strip(), "same prompt, greedy: same reply"
    assert plain.usage.prompt_tokens > 0 and plain.model == "tester"
    # The prompt is the character's (card persona, client history), not the client's system prompt.
    prompt = seen[0].messages
    assert prompt[0].role == "system" and "Tester" in prompt[0].content and "pirate" not in prompt[0].content
    assert [m.content for m in prompt[1:]] == ["Hi!", "Hello, friend.", "What is your name?"]
    assert seen[0].params.max_new_tokens == 8


def test_api_errors_are_openai_shaped(hub, frontend_settings) -> None:
    frontend_settings.serve.turns_per_minute = 0.0001
    frontend_settings.serve.turn_burst = 1
    app = create_app(frontend_settings, hub)
    with running(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "hi"}])
        assert missing.value.body["code"] == "model_not_found"
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="scripted", messages=[])
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="scripted", messages=[{"role": "assistant", "content": "hi"}])
        bad = httpx.post(
            f"{base}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])


def test_token_is_required_off_loopback_and_checked(hub, frontend_settings) -> None:
    from companion.errors import CompanionError
    from companion.frontends.server.auth import check_bind

    frontend_settings.serve.host = "0.0.0.0"
    with pytest.raises(CompanionError, match="needs a token"):
        check_bind(frontend_settings.serve)
    frontend_settings.serve.token = "s3cret"
    check_bind(frontend_settings.serve)
    app = create_app(frontend_settings, hub)
    with running(app) as base:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=f"{base}/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in good.models.list()] == ["tester", "scripted"]
        reply = good.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert reply.choices[0].message.content.startswith("[joy] Hello")
        assert httpx.get(f"{base}/healthz").status_code == 200  # liveness stays open


def test_loopback_without_token_refuses_foreign_hosts_and_origins(hub, frontend_settings) -> None:
    app = create_app(frontend_settings, hub)
    with running(app) as base:
        rebinding = httpx.get(f"{base}/v1/models", headers={"Host": "evil.example:8765"})
        cross_site = httpx.get(f"{base}/v1/models", headers={"Origin": "https://evil.example"})
        same_page = httpx.get(f"{base}/v1/models", headers={"Origin": base})
    assert rebinding.status_code == 403 and cross_site.status_code == 403 and same_page.status_code == 200


def test_companions_own_openai_plugin_talks_to_companion_serve(hub, frontend_settings, tmp_path) -> None:
    """One companion process as the LLM backend of another (the `openai` plugin against `serve`)."""
    import asyncio

    from companion.llm.base import GenerationParams, GenerationRequest
    from companion.llm.openai_compatible import OpenAICompatibleLLM, OpenAISettings
    from companion.messages import ChatMessage
    from companion.plugins import PluginContext

    app = create_app(frontend_settings, hub)

    async def collect(llm) -> list[str]:
        request = GenerationRequest(
            messages=[ChatMessage(role="user", content="hi")], params=GenerationParams(max_new_tokens=40, stop=["*"])
        )
        return [piece async for piece in llm.stream(request)]

    with running(app) as base:
        llm = OpenAICompatibleLLM(OpenAISettings(base_url=f"{base}/v1", model="scripted"), PluginContext(tmp_path))
        pieces = asyncio.run(collect(llm))
    assert len(pieces) > 3 and "".join(pieces) == "[joy] Hello there! I am so happy to see you. "
