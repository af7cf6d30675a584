"""A real OpenAI-protocol HTTP server on loopback whose answers come from a script (a function of
the request), for the paths a real model cannot be made to take on demand: exact JSON, 429s,
500s, malformed output, a server that goes away mid-run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, str], str]  # status, headers, assistant text (or raw body when status != 200)


@contextmanager
def scripted_openai(answer: Callable[[dict[str, Any]], Reply], model: str = "teacher") -> Iterator[tuple[str, list]]:
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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()
