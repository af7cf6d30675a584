"""A real OpenAI-protocol HTTP server on loopback, answering with a real local model.

It speaks `/v1/chat/completions` (streaming SSE and plain JSON) and `/v1/models` the way
vLLM and llama.cpp's server do, so the `openai` plugin is tested over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from companion.llm.base import GenerationParams, GenerationRequest
from companion.messages import ChatMessage


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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def _collect(llm, request: GenerationRequest) -> list[str]:
    async def run() -> list[str]:
        return [piece async for piece in llm.stream(request)]

    return asyncio.run(run())
