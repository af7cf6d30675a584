"""Serve an ASGI app with uvicorn on a free loopback port, in a thread of this process (so a loaded
model is shared with the test)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def running(app, **overrides) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1:<free port>; yields the base URL."""
    import uvicorn

    options = {"host": "127.0.0.1", "port": 0, "log_level": "warning", "lifespan": "off", "ws_ping_interval": None}
    options.update(overrides)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
