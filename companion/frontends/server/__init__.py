"""`companion serve`: the HTTP and WebSocket server (needs the `serve` extra: fastapi, uvicorn)."""

from __future__ import annotations

from companion.plugins import require

require("fastapi", feature="companion serve", extra="serve")
require("uvicorn", feature="companion serve", extra="serve")

from companion.frontends.server.app import ServerState, create_app, serve_forever  # noqa: E402

__all__ = ["ServerState", "create_app", "serve_forever"]
