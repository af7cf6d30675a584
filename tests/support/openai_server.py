"""Real OpenAI-protocol HTTP servers on loopback.

`serve_openai` answers with a real local model: it speaks `/v1/chat/completions` (streaming SSE
and plain JSON) and `/v1/models` the way vLLM and llama.cpp's server do, so the `openai` plugin
is tested over real HTTP. `scripted_openai` answers from a script (a function of the request),
for the paths a real model cannot be made to take on demand: exact JSON, 429s, 500s, malformed
output, a server that goes away mid-run.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from companion.llm.base import GenerationParams, GenerationRequest
from companion.messages import ChatMessage

Reply = tuple[int, dict[str, str], str]  # status, headers, assistant text (or raw body when status != 200)


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free loopback port; yields the base URL of its /v1 API."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve_openai(llm, served_model: str = "mochi") -> Iterator[tuple[str, list[dict]]]:
    """Yields (base_url, requests seen) while the server runs on a free loopback port."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != "/v1/models":
                self.send_error(404)
                return
            self._json({"object": "list", "data": [{"id": served_model, "object": "model"}]})

        def do_POST(self) -> None:
            if self.path != "/v1/chat/completions":
                self.send_error(404)
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"body": body, "authorization": self.headers.get("Authorization")})
            if body.get("model") != served_model:
                self.send_response(404)
                self._json({"error": {"message": f"model {body.get('model')} not found"}}, status_sent=True)
                return
            request = GenerationRequest(
                messages=[ChatMessage(**m) for m in body["messages"]],
                params=GenerationParams(
                    max_new_tokens=body.get("max_tokens", 16), temperature=0.0, stop=body.get("stop") or []
                ),
            )
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in _collect(llm, request):
                chunk = {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": served_model,
                    "choices": [{"index": 0, "delta": {"content": piece}}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")

        def _json(self, obj: dict, status_sent: bool = False) -> None:
            data = json.dumps(obj).encode()
            if not status_sent:
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with _serving(Handler) as url:
        yield url, seen


@contextmanager
def scripted_openai(answer: Callable[[dict[str, Any]], Reply], model: str = "teacher") -> Iterator[tuple[str, list]]:
    """Yields (base_url, requests seen) while the server answers each request with `answer(body)`."""
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path != "/v1/models":
                self._send(404, b"{}")
                return
            self._send(200, json.dumps({"object": "list", "data": [{"id": model}]}).encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                seen.append({**body, "_time": time.monotonic(), "_auth": self.headers.get("Authorization")})
            status, headers, text = answer(body)
            if status != 200:
                self._send(status, text.encode(), headers)
                return
            completion = {
                "id": "x",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
            self._send(200, json.dumps(completion, ensure_ascii=False).encode(), headers)

    with _serving(Handler) as url:
        yield url, seen


def _collect(llm, request: GenerationRequest) -> list[str]:
    async def run() -> list[str]:
        return [piece async for piece in llm.stream(request)]

    return asyncio.run(run())
