"""The `companion serve` application: web page, WebSocket events, OpenAI-compatible API, health.

GET  /                         the web page (chat, mic, audio, avatar / Live2D)
WS   /v1/ws                    typed turn events (protocol.py); ?format=vtuber for Open-LLM-VTuber
WS   /client-ws                the same, speaking Open-LLM-VTuber's messages by default
GET  /v1/events/schema         JSON Schema of everything on the WebSocket, versioned
POST /v1/chat/completions      OpenAI-compatible, streaming (SSE) or not; model = character id
GET  /v1/models                the characters served
GET  /healthz                  liveness and what is loaded
WS   /onebot/v11/ws            QQ through OneBot v11 reverse WebSocket (with --onebot)
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from companion import __version__
from companion.config import Settings
from companion.frontends.hub import CompanionHub
from companion.frontends.ratelimit import RateLimiter
from companion.frontends.server import openai_api
from companion.frontends.server.auth import Refused, authenticate
from companion.frontends.server.protocol import protocol_schema
from companion.frontends.server.ws import Connection
from companion.frontends.settings import ServeSettings

log = logging.getLogger(__name__)
WEB_DIR = Path(str(files("companion.frontends") / "web"))


@dataclass
class ServerState:
    settings: Settings
    serve: ServeSettings
    hub: CompanionHub
    limiter: RateLimiter
    live2d_dir: Path
    started: float = field(default_factory=time.time)
    connections: int = 0
    onebot: Any = None

    def refuse_http(self, request: Request) -> JSONResponse | None:
        try:
            authenticate(self.serve, request.headers, request.query_params, websocket=False)
        except Refused as refused:
            kind = "invalid_api_key" if refused.status == 401 else "forbidden"
            body = {"error": {"message": refused.message, "type": "invalid_request_error", "param": None, "code": kind}}
            return JSONResponse(body, status_code=refused.status)
        return None

    def live2d_url(self, model: str | None) -> str | None:
        """A card's Live2D model as a URL the page can load (paths are under the live2d folder)."""
        if not model:
            return None
        if model.startswith(("http://", "https://", "/")):
            return model
        return f"/live2d/{model}"


def create_app(settings: Settings, hub: CompanionHub | None = None) -> FastAPI:
    serve = settings.serve
    hub = hub or CompanionHub(settings, characters=serve.characters)
    state = ServerState(
        settings=settings,
        serve=serve,
        hub=hub,
        limiter=RateLimiter(serve.turns_per_minute, serve.turn_burst),
        live2d_dir=serve.live2d_dir or settings.data_dir / "live2d",
    )
    app = FastAPI(title="companion", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.companion = state
    app.include_router(openai_api.router(state))
    from companion.frontends import court_pages  # the review court (/court): its own signed voter tokens

    app.include_router(court_pages.router(settings, hub.character_ids))
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    if state.live2d_dir.is_dir():
        app.mount("/live2d", StaticFiles(directory=state.live2d_dir), name="live2d")

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        html = (WEB_DIR / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "uptime_s": round(time.time() - state.started, 1),
            "characters": hub.character_ids(),
            "connections": state.connections,
            "voice": hub.speech.describe(),
            "live2d": {"core": (state.live2d_dir / "live2dcubismcore.min.js").is_file()},
        }

    @app.get("/v1/events/schema")
    async def schema() -> dict[str, Any]:
        return protocol_schema()

    @app.get("/v1/characters/{character_id}/avatar")
    async def avatar(character_id: str) -> Response:
        if not hub.has(character_id):
            return JSONResponse({"error": "no such character"}, status_code=404)
        path = hub.base(character_id).character.avatar_path
        if path is None:
            return JSONResponse({"error": "no avatar"}, status_code=404)
        return FileResponse(path, media_type="image/png")

    async def websocket_session(ws: WebSocket, audio_format: str) -> None:
        try:
            identity = authenticate(serve, ws.headers, ws.query_params, websocket=True)
        except Refused as refused:
            await refuse_websocket(ws, refused.status, refused.message)
            return
        if state.connections >= serve.max_connections:
            await refuse_websocket(ws, 503, "too many connections")
            return
        query = dict(ws.query_params)
        state.connections += 1
        try:
            connection = Connection(ws, state, identity, query, query.get("format", audio_format))
            await ws.accept()
            await connection.run()
        finally:
            state.connections -= 1

    @app.websocket("/v1/ws")
    async def events_ws(ws: WebSocket) -> None:
        await websocket_session(ws, serve.audio_format)

    @app.websocket("/client-ws")
    async def vtuber_ws(ws: WebSocket) -> None:
        await websocket_session(ws, "vtuber")

    if serve.onebot:
        from companion.frontends.onebot import mount_reverse

        state.onebot = mount_reverse(app, settings, hub)

    return app


async def refuse_websocket(ws: WebSocket, status: int, message: str) -> None:
    """Refuse the handshake with an HTTP status (or close 1008 where the server cannot)."""
    try:
        await ws.send_denial_response(JSONResponse({"error": message}, status_code=status))
    except RuntimeError:
        await ws.close(code=1008, reason=message[:120])


def uvicorn_config(app: FastAPI, serve: ServeSettings, **overrides: Any):
    import uvicorn

    options: dict[str, Any] = {
        "host": serve.host,
        "port": serve.port,
        "ws_max_size": serve.max_message_bytes,
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        "log_level": "info",
        "timeout_graceful_shutdown": 5,
        **overrides,
    }
    return uvicorn.Config(app, **options)


def serve_forever(app: FastAPI, serve: ServeSettings, **overrides: Any) -> None:
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, serve, **overrides))
    asyncio.run(server.serve())
