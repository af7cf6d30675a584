"""Asking an LLM: any OpenAI-compatible endpoint over HTTP, or the configured LLM plugin in-process.

`OpenAIChat` posts non-streaming `/chat/completions` with the user's key and base URL:
- rate limit: request starts are spaced to stay under `rpm` requests a minute, and at most
  `concurrency` requests are in flight;
- retries: 429 and 5xx answers, timeouts and dropped connections are retried `retries` times
  with exponential backoff and jitter (a `Retry-After` header is honoured);
- fail fast: `probe()` checks the endpoint before any work, and an endpoint that refuses
  connections or the key (401/403) stops the run at once with `EndpointError` — the caller
  keeps its progress so the same command resumes later.

`PluginChat` wraps an `llm` plugin (the embedded local model by default) behind the same
`complete(messages)` call.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from companion.errors import CompanionError
from companion.messages import ChatMessage

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class EndpointError(CompanionError):
    """The endpoint cannot be used at all (unreachable, refuses the key, no such model)."""


@dataclass
class Usage:
    requests: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    waited_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in vars(self).items()}


class ChatClient(Protocol):
    usage: Usage

    async def probe(self) -> None: ...

    async def complete(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float) -> str: ...

    def describe(self) -> str: ...

    async def aclose(self) -> None: ...


class RateLimiter:
    """Spaces request starts at least 60/rpm seconds apart (rpm <= 0: no limit)."""

    def __init__(self, rpm: float) -> None:
        self.interval = 60.0 / rpm if rpm and rpm > 0 else 0.0
        self.next_start = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> float:
        if not self.interval:
            return 0.0
        async with self.lock:
            now = time.monotonic()
            delay = max(0.0, self.next_start - now)
            self.next_start = max(now, self.next_start) + self.interval
        if delay:
            await asyncio.sleep(delay)
        return delay


@dataclass
class OpenAIChat:
    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 120.0
    retries: int = 3
    rpm: float = 0.0
    concurrency: int = 2
    backoff_s: float = 1.0
    extra_body: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=10.0), headers=headers)
        self._limiter = RateLimiter(self.rpm)
        self._slots = asyncio.Semaphore(max(1, self.concurrency))

    def describe(self) -> str:
        return f"{self.model} at {self.base_url}"

    async def aclose(self) -> None:
        await self._client.aclose()

    def _unreachable(self, error: Exception) -> EndpointError:
        return EndpointError(
            f"cannot reach the LLM endpoint {self.base_url} ({type(error).__name__}: {error or 'no answer'}). "
            "Check --base-url (and that the server runs); progress so far is kept: run the same command again to resume"
        )

    async def probe(self) -> None:
        """Fail fast: the server answers, accepts the key, and (when it lists models) serves the model."""
        try:
            response = await self._client.get(f"{self.base_url}/models", timeout=10.0)
        except httpx.HTTPError as error:
            raise self._unreachable(error) from None
        if response.status_code in (401, 403):
            raise EndpointError(f"{self.base_url} refused the API key ({response.status_code}): check --api-key")
        if response.status_code == 200:
            try:
                ids = [str(m.get("id")) for m in response.json().get("data", [])]
            except (ValueError, AttributeError):
                ids = []
            if ids and self.model not in ids:
                served = ", ".join(ids)
                raise EndpointError(f"{self.base_url} does not serve model {self.model!r} (it serves: {served})")

    async def complete(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float) -> str:
        payload = {
            "model": self.model,
            "messages": [m.model_dump() for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": False,
            **self.extra_body,
        }
        url = f"{self.base_url}/chat/completions"
        attempt = 0
        while True:
            async with self._slots:
                self.usage.waited_s += await self._limiter.wait()
                self.usage.requests += 1
                try:
                    response = await self._client.post(url, json=payload)
                except httpx.ConnectError as error:
                    raise self._unreachable(error) from None
                except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as error:
                    response, problem = None, f"{type(error).__name__}"
            if response is not None:
                if response.status_code == 200:
                    return self._text(response)
                if response.status_code in (401, 403):
                    raise EndpointError(f"{url} refused the API key ({response.status_code}): check --api-key")
                if response.status_code == 404:
                    raise EndpointError(f"{url} answered 404 (wrong --base-url or --model?): {response.text[:200]}")
                if response.status_code not in RETRY_STATUS:
                    raise EndpointError(f"{url} answered {response.status_code}: {response.text[:300]}")
                problem = f"HTTP {response.status_code}"
            attempt += 1
            if attempt > self.retries:
                self.usage.failures += 1
                raise RetriesExhausted(f"{url}: still failing after {self.retries} retries ({problem})")
            self.usage.retries += 1
            await asyncio.sleep(self._delay(attempt, response))

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None and (after := response.headers.get("retry-after")):
            try:
                return min(60.0, float(after))
            except ValueError:
                pass
        return self.backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())

    def _text(self, response: httpx.Response) -> str:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return self._sse_text(response.text)  # a server that streams even when asked not to
        try:
            body = response.json()
            message = body["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise MalformedResponse(f"not an OpenAI chat completion: {response.text[:200]}") from None
        usage = body.get("usage") or {}
        self.usage.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.usage.completion_tokens += int(usage.get("completion_tokens") or 0)
        return str(message.get("content") or "")

    @staticmethod
    def _sse_text(body: str) -> str:
        pieces = []
        for line in body.splitlines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            try:
                chunk = json.loads(line[5:])
            except json.JSONDecodeError:
                raise MalformedResponse(f"unreadable event stream line: {line[:120]}") from None
            if "error" in chunk:
                raise MalformedResponse(f"server error in the stream: {chunk['error']}")
            choices = chunk.get("choices") or [{}]
            pieces.append((choices[0].get("delta") or choices[0].get("message") or {}).get("content") or "")
        return "".join(pieces)


class RetriesExhausted(CompanionError):
    """One request kept failing (the endpoint itself answers): that item is skipped and retried next run."""


class MalformedResponse(CompanionError):
    """The server answered 200 with something that is not a chat completion."""


class PluginChat:
    """An `llm` plugin (the embedded local model by default) in this process."""

    def __init__(self, llm: Any, name: str, *, concurrency: int = 1) -> None:
        self.llm = llm
        self.name = name
        self.usage = Usage()
        self._slots = asyncio.Semaphore(max(1, concurrency))

    def describe(self) -> str:
        return f"{self.name} (in-process)"

    async def probe(self) -> None:
        if hasattr(self.llm, "load"):
            await asyncio.to_thread(self.llm.load)

    async def aclose(self) -> None:
        pass

    async def complete(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float) -> str:
        from companion.llm.base import GenerationParams, GenerationRequest

        request = GenerationRequest(
            messages=messages,
            params=GenerationParams(max_new_tokens=max_tokens, temperature=temperature, repetition_penalty=1.1),
        )
        async with self._slots:
            self.usage.requests += 1
            return "".join([piece async for piece in self.llm.stream(request)])


def client_from_settings(
    settings: Any,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    **http: Any,
) -> ChatClient:
    """--base-url wins; else the configured `llm` (an `openai` plugin's endpoint, or the local model)."""
    spec = settings.llm
    options = spec.options
    if base_url or spec.plugin == "openai":
        return OpenAIChat(
            base_url=base_url or options.get("base_url", "http://127.0.0.1:8000/v1"),
            model=model or options.get("model", "default"),
            api_key=api_key or options.get("api_key"),
            extra_body=dict(options.get("extra_body") or {}),
            **http,
        )
    from companion.plugins import PluginContext, create

    if model:
        spec = spec.merged({"model": model})
    llm = create("llm", spec, PluginContext(data_dir=settings.data_dir))
    return PluginChat(llm, f"{spec.plugin}:{spec.options.get('model', '')}")
