"""OpenAI-compatible chat API: `POST /v1/chat/completions` (JSON or SSE stream), `GET /v1/models`.

`model` is a character id. The client's messages are the conversation (stateless, as the API
is); the character's card, retrieval (lorebook, knowledge, the named user's memory) and her
LoRA adapter are applied. Client `system` messages are ignored: the card is the persona.
SillyTavern, Open WebUI, LobeChat or the `openai` package work as clients.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from companion.errors import CompanionError
from companion.llm.base import GenerationParams
from companion.messages import ChatMessage

if TYPE_CHECKING:
    from companion.frontends.server.app import ServerState


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class APIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[APIMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    user: str | None = Field(default=None, max_length=128)
    stream_options: StreamOptions | None = None


def api_error(
    status: int, message: str, kind: str, *, code: str | None = None, param: str | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def router(state: ServerState) -> APIRouter:
    api = APIRouter()

    @api.get("/v1/models")
    async def models(request: Request) -> Any:
        if (refused := state.refuse_http(request)) is not None:
            return refused
        created = int(state.started)
        data = [
            {"id": cid, "object": "model", "created": created, "owned_by": "companion"}
            for cid in state.hub.character_ids()
        ]
        return {"object": "list", "data": data}

    @api.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request) -> Any:
        if (refused := state.refuse_http(request)) is not None:
            return refused
        if not state.hub.has(model_id):
            return api_error(
                404, f"The model '{model_id}' does not exist", "invalid_request_error", code="model_not_found"
            )
        return {"id": model_id, "object": "model", "created": int(state.started), "owned_by": "companion"}

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        if (refused := state.refuse_http(request)) is not None:
            return refused
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return api_error(400, "the body is not valid JSON", "invalid_request_error")
        try:
            req = ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            return api_error(400, f"{where}: {first['msg']}", "invalid_request_error", param=where)
        if not state.hub.has(req.model):
            return api_error(
                404,
                f"The model '{req.model}' does not exist",
                "invalid_request_error",
                code="model_not_found",
                param="model",
            )
        messages = [
            ChatMessage(
                role="system" if m.role in ("system", "developer") else "user" if m.role == "tool" else m.role,
                content=m.text(),
            )
            for m in req.messages
        ]
        if not any(m.role == "user" for m in messages) or messages[-1].role != "user":
            return api_error(400, "the last message must be the user's", "invalid_request_error", param="messages")
        if sum(len(m.content) for m in messages) > state.serve.max_text_chars * 50:
            return api_error(400, "the conversation is too long", "invalid_request_error", param="messages")
        if len(messages[-1].content) > state.serve.max_text_chars:
            return api_error(
                400,
                f"the last message is over {state.serve.max_text_chars} characters",
                "invalid_request_error",
                param="messages",
            )
        who = req.user or (request.client.host if request.client else "?")
        decision = state.limiter.check(("api", who))
        if not decision.allowed:
            return JSONResponse(
                {
                    "error": {
                        "message": "rate limit reached; retry later",
                        "type": "rate_limit_error",
                        "param": None,
                        "code": "rate_limited",
                    }
                },
                status_code=429,
                headers={"Retry-After": str(max(1, round(decision.retry_after)))},
            )
        params = generation_params(req, state)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        usage: dict[str, int] = {}
        pieces = state.hub.complete(req.model, messages, user=req.user, params=params, usage=usage)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                sse(state, req, pieces, completion_id, created, params, include_usage, usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            text = "".join([piece async for piece in pieces])
        except CompanionError as exc:
            return api_error(500, str(exc), "server_error")
        llm = state.hub.base(req.model).llm
        completion_tokens = llm.count_tokens(text) if text else 0
        prompt_tokens = usage.get("prompt_tokens", 0)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason(completion_tokens, params),
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    return api


def generation_params(req: ChatCompletionRequest, state: ServerState) -> GenerationParams:
    settings = state.settings
    wanted = req.max_completion_tokens or req.max_tokens or settings.max_new_tokens
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    return GenerationParams(
        max_new_tokens=min(wanted, state.serve.api_max_tokens),
        temperature=settings.temperature if req.temperature is None else req.temperature,
        top_p=settings.top_p if req.top_p is None else req.top_p,
        repetition_penalty=settings.repetition_penalty,
        stop=[s for s in stops if s][:4],
        seed=req.seed,
    )


def finish_reason(completion_tokens: int, params: GenerationParams) -> str:
    return "length" if completion_tokens >= params.max_new_tokens else "stop"


async def sse(
    state: ServerState,
    req: ChatCompletionRequest,
    pieces: AsyncIterator[str],
    completion_id: str,
    created: int,
    params: GenerationParams,
    include_usage: bool,
    usage: dict[str, int],
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict | None = None, choices: bool = True) -> str:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}] if choices else [],
        }
        if include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    parts: list[str] = []
    try:
        async for piece in pieces:
            parts.append(piece)
            yield chunk({"content": piece})
    except CompanionError as exc:
        yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n"
        yield "data: [DONE]\n\n"
        return
    finally:
        await pieces.aclose()  # the client went away: generation stops at its next token
    llm = state.hub.base(req.model).llm
    text = "".join(parts)
    completion_tokens = llm.count_tokens(text) if text else 0
    yield chunk({}, finish=finish_reason(completion_tokens, params))
    if include_usage:
        prompt_tokens = usage.get("prompt_tokens", 0)
        totals = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        yield chunk({}, usage=totals, choices=False)
    yield "data: [DONE]\n\n"
