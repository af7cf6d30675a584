"""Signed tokens: who a voter is, and the one-time right to vote on one submission.

    user token  cu1.<user id>.<version>.<signature>
    ballot      cb1.<user id>.<submission id>.<expires>.<nonce>.<signature>
    form token  cf1.<user id>.<purpose>.<expires>.<signature>      (web forms: CSRF)

Signatures are HMAC-SHA256 under the court's secret (kept in the database), so a voter id
cannot be forged or swapped without the secret. A user token carries a version: rotating it
(`companion court user token NAME --rotate`) revokes every older token. A ballot names its
voter and submission, expires, and is spent by the vote it carries (the store refuses it a
second time), so a captured vote request cannot be replayed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from companion.errors import CompanionError


class TokenError(CompanionError):
    """A token is malformed, forged, expired or revoked."""


def _sign(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def _check(key: bytes, message: str, signature: str) -> bool:
    return hmac.compare_digest(_sign(key, message), signature)


def _int(value: str, what: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise TokenError(f"malformed {what}")
    return int(value)


def user_token(key: bytes, user_id: int, version: int) -> str:
    return f"cu1.{user_id}.{version}.{_sign(key, f'user:{user_id}:{version}')}"


def read_user_token(key: bytes, token: str) -> tuple[int, int]:
    """(user id, version) of a genuine user token; TokenError otherwise."""
    parts = token.strip().split(".")
    if len(parts) != 4 or parts[0] != "cu1":
        raise TokenError("not a court user token")
    user_id, version = _int(parts[1], "user token"), _int(parts[2], "user token")
    if not _check(key, f"user:{user_id}:{version}", parts[3]):
        raise TokenError("user token signature does not match (forged or from another court)")
    return user_id, version


@dataclass(frozen=True)
class Ballot:
    token: str
    voter_id: int
    submission_id: int
    expires: int


def new_ballot(key: bytes, voter_id: int, submission_id: int, ttl_s: int, now: float | None = None) -> Ballot:
    expires = int((now if now is not None else time.time()) + ttl_s)
    nonce = secrets.token_hex(8)
    message = f"ballot:{voter_id}:{submission_id}:{expires}:{nonce}"
    token = f"cb1.{voter_id}.{submission_id}.{expires}.{nonce}.{_sign(key, message)}"
    return Ballot(token=token, voter_id=voter_id, submission_id=submission_id, expires=expires)


def read_ballot(key: bytes, token: str, now: float | None = None) -> Ballot:
    parts = token.strip().split(".")
    if len(parts) != 6 or parts[0] != "cb1":
        raise TokenError("not a ballot")
    voter_id, submission_id, expires = (_int(p, "ballot") for p in parts[1:4])
    nonce = parts[4]
    if not (len(nonce) == 16 and all(c in "0123456789abcdef" for c in nonce)):
        raise TokenError("malformed ballot")
    if not _check(key, f"ballot:{voter_id}:{submission_id}:{expires}:{nonce}", parts[5]):
        raise TokenError("ballot signature does not match (forged or altered)")
    if (now if now is not None else time.time()) > expires:
        raise TokenError("ballot expired: fetch the submission again")
    return Ballot(token=token.strip(), voter_id=voter_id, submission_id=submission_id, expires=expires)


def form_token(key: bytes, user_id: int, purpose: str, ttl_s: int = 3600) -> str:
    expires = int(time.time() + ttl_s)
    return f"cf1.{user_id}.{purpose}.{expires}.{_sign(key, f'form:{user_id}:{purpose}:{expires}')}"


def check_form_token(key: bytes, token: str, user_id: int, purpose: str) -> None:
    parts = token.strip().split(".")
    if len(parts) != 5 or parts[0] != "cf1" or parts[2] != purpose:
        raise TokenError("the form is missing its token: reload the page")
    uid, expires = _int(parts[1], "form token"), _int(parts[3], "form token")
    if uid != user_id or not _check(key, f"form:{uid}:{purpose}:{expires}", parts[4]):
        raise TokenError("the form token is not yours: reload the page")
    if time.time() > expires:
        raise TokenError("the form expired: reload the page")
