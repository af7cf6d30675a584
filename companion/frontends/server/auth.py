"""Who may use the server.

- Loopback without a token (the default): only requests whose Host is a loopback name
  (defeats DNS rebinding) and, from browsers, only from this server's own page or an allowed
  origin (defeats cross-site WebSocket hijacking).
- With a token (required on any other address): `Authorization: Bearer <token>` on HTTP,
  `?token=` or the Authorization header on the WebSocket. Per-user tokens bind the user id.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from companion.errors import CompanionError
from companion.frontends.settings import LOOPBACK_HOSTS, ServeSettings

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")


@dataclass(frozen=True)
class Identity:
    user: str | None
    """The user this token is bound to (None: the client names its user)."""


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: ServeSettings) -> None:
    """Refuse to listen beyond this machine without a token."""
    if not is_loopback(settings.host) and not (settings.token or settings.user_tokens):
        raise CompanionError(
            f"serving on {settings.host} needs a token: pass --token or set COMPANION_SERVE__TOKEN "
            "(without one, only 127.0.0.1 is allowed)"
        )


def valid_id(value: str) -> bool:
    return bool(_ID.match(value))


def _host_name(host_header: str) -> str:
    return urlsplit(f"//{host_header}").hostname or ""


def authenticate(
    settings: ServeSettings, headers: Mapping[str, str], query: Mapping[str, str], *, websocket: bool
) -> Identity:
    """The caller's identity, or Refused(401/403)."""
    presented = None
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        presented = auth[7:].strip()
    elif websocket and query.get("token"):
        presented = query["token"]
    if settings.token or settings.user_tokens:
        if presented is None:
            raise Refused(401, "a token is required")
        if settings.token and hmac.compare_digest(presented.encode(), settings.token.encode()):
            return Identity(user=None)
        for token, user in settings.user_tokens.items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                return Identity(user=user)
        raise Refused(401, "invalid token")
    # No token: this machine only.
    host = _host_name(headers.get("host", ""))
    if not is_loopback(host):
        raise Refused(403, f"host {host!r} is not allowed without a token")
    origin = headers.get("origin")
    if origin:  # a browser: only this server's own page ("null" from sandboxed frames is foreign too)
        same = origin != "null" and urlsplit(origin).netloc == headers.get("host")
        if not same and origin not in settings.allowed_origins:
            raise Refused(403, f"origin {origin} is not allowed (add it to serve.allowed_origins)")
    return Identity(user=None)
