"""`llm.openai`: any OpenAI-compatible chat server (vLLM, llama.cpp server, Ollama, ...).

With vLLM, serve one base with each character's LoRA as a module (`--lora-modules
mochi=/path/to/adapter`) and give each character `llm: {plugin: openai, model: mochi}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import BaseModel

from companion.errors import CompanionError
from companion.llm.base import GenerationRequest, StopStringFilter
from companion.plugins import PluginContext
from companion.scripts import CJK, FULLWIDTH

_CJK = re.compile(f"[{CJK}{FULLWIDTH}]")
_WORD = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")


class OpenAISettings(BaseModel):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "default"
    api_key: str | None = None
    timeout: float = 120.0
    extra_body: dict[str, Any] = {}
    """Server-specific sampling options, e.g. {"repetition_penalty": 1.1} for vLLM."""


class OpenAICompatibleLLM:
    Settings = OpenAISettings

    def __init__(self, settings: OpenAISettings, context: PluginContext) -> None:
        self.settings = settings
        self.context = context

    def count_tokens(self, text: str) -> int:
        """An estimate (the server's tokenizer is not here): one per CJK character, ~1.3 per word."""
        cjk = len(_CJK.findall(text))
        words = len(_WORD.findall(_CJK.sub(" ", text)))
        return cjk + int(words * 1.3) + 1

    def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        params = request.params
        payload: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [m.model_dump() for m in request.messages],
            "stream": True,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            **self.settings.extra_body,
        }
        if params.stop:
            payload["stop"] = params.stop[:4]  # OpenAI accepts at most four
        if params.seed is not None:
            payload["seed"] = params.seed
        return payload

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        url = self.settings.base_url.rstrip("/") + "/chat/completions"
        stops = StopStringFilter(request.params.stop)
        try:
            async with (
                httpx.AsyncClient(timeout=self.settings.timeout) as client,
                client.stream("POST", url, json=self._payload(request), headers=headers) as response,
            ):
                if response.status_code != 200:
                    body = (await response.aread()).decode("utf-8", "replace")[:300]
                    raise CompanionError(f"{url} answered {response.status_code}: {body}")
                async for line in response.aiter_lines():
                    piece = _delta_text(line)
                    if piece is None:
                        break
                    if text := stops.feed(piece):
                        yield text
                    if stops.stopped:
                        return
        except httpx.HTTPError as error:
            raise CompanionError(f"cannot reach the LLM server at {url}: {error}") from None
        if tail := stops.flush():
            yield tail


def _delta_text(line: str) -> str | None:
    """The text in one SSE line; '' for lines without text; None at the end of the stream."""
    if not line.startswith("data:"):
        return ""
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        return ""
    if "error" in chunk:
        raise CompanionError(f"LLM server error: {chunk['error']}")
    choices = chunk.get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or ""
