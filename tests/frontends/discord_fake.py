"""Discord without Discord: a loopback HTTP server speaking Discord's REST API (v10), and gateway
payloads fed to discord.py's own parser, so the bot's handlers run on real discord.py objects
(Message, Member, Interaction, CommandTree) and its replies go out over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
from contextlib import asynccontextmanager
from typing import Any

import discord
from aiohttp import web

APP_ID = 700_000_000_000_000_001
BOT_ID = 700_000_000_000_000_002
GUILD_ID = 700_000_000_000_000_010
CHANNEL_ID = 700_000_000_000_000_020
OTHER_CHANNEL_ID = 700_000_000_000_000_021
DM_CHANNEL_ID = 700_000_000_000_000_030
TIMESTAMP = "2025-01-01T00:00:00.000000+00:00"
_ids = itertools.count(800_000_000_000_000_000)


def snowflake() -> str:
    return str(next(_ids))


def user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name.title(),
        "avatar": None,
        "bot": bot,
    }


def member(user_id: int, name: str) -> dict[str, Any]:
    return {"user": user(user_id, name), "roles": [], "joined_at": TIMESTAMP, "deaf": False, "mute": False, "flags": 0}


BOT_USER = user(BOT_ID, "companion-bot", bot=True)


def guild(guild_id: int = GUILD_ID, members: list[dict] | None = None) -> dict[str, Any]:
    everyone = {"id": str(guild_id), "name": "@everyone", "permissions": "3072", "position": 0, "color": 0,
                "hoist": False, "managed": False, "mentionable": False, "flags": 0}  # fmt: skip
    channels = [
        {"id": str(cid), "type": 0, "name": name, "position": i, "guild_id": str(guild_id), "permission_overwrites": []}
        for i, (cid, name) in enumerate([(CHANNEL_ID, "general"), (OTHER_CHANNEL_ID, "chat")])
    ]
    members = [member(BOT_ID, "companion-bot"), *(members or [])]
    return {
        "id": str(guild_id), "name": "Test Guild", "owner_id": "1", "roles": [everyone], "emojis": [],
        "stickers": [], "features": [], "channels": channels, "threads": [], "members": members,
        "member_count": len(members), "voice_states": [], "presences": [], "large": False,
        "unavailable": False, "joined_at": TIMESTAMP, "verification_level": 0, "default_message_notifications": 0,
        "explicit_content_filter": 0, "mfa_level": 0, "premium_tier": 0, "system_channel_flags": 0,
        "preferred_locale": "en-US", "nsfw_level": 0, "stage_instances": [], "guild_scheduled_events": [],
        "premium_progress_bar_enabled": False,
    }  # fmt: skip


def message(author_id: int, name: str, content: str, *, channel_id: int = CHANNEL_ID, guild_id: int | None = GUILD_ID,
            mentions: list[dict] = (), reply_to: dict | None = None) -> dict[str, Any]:  # fmt: skip
    data = {
        "id": snowflake(), "channel_id": str(channel_id), "author": user(author_id, name), "content": content,
        "timestamp": TIMESTAMP, "edited_timestamp": None, "tts": False, "mention_everyone": False,
        "mentions": list(mentions), "mention_roles": [], "attachments": [], "embeds": [], "pinned": False,
        "type": 19 if reply_to else 0, "flags": 0,
    }  # fmt: skip
    if guild_id is not None:
        data["guild_id"] = str(guild_id)
        data["member"] = {k: v for k, v in member(author_id, name).items() if k != "user"}
    if reply_to is not None:
        data["message_reference"] = {"message_id": reply_to["id"], "channel_id": reply_to["channel_id"]}
        data["referenced_message"] = reply_to
    return data


def interaction(command: str, author_id: int, name: str, options: list[dict] | None = None, *,
                guild_id: int | None = GUILD_ID, channel_id: int = CHANNEL_ID) -> dict[str, Any]:  # fmt: skip
    data = {
        "id": snowflake(), "application_id": str(APP_ID), "type": 2, "token": f"token-{snowflake()}", "version": 1,
        "data": {"id": snowflake(), "name": command, "type": 1, "options": options or []},
        "channel_id": str(channel_id), "locale": "en-US", "app_permissions": "0", "entitlements": [],
        "authorizing_integration_owners": {"0": str(guild_id or 0)}, "context": 0 if guild_id else 1,
        "attachment_size_limit": 8 * 1024 * 1024,
    }  # fmt: skip
    if guild_id is not None:
        data["guild_id"] = str(guild_id)
        data["guild_locale"] = "en-US"
        data["channel"] = {
            "id": str(channel_id),
            "type": 0,
            "name": "general",
            "guild_id": str(guild_id),
            "position": 0,
        }
        data["member"] = {**member(author_id, name), "permissions": "0"}
    else:
        data["user"] = user(author_id, name)
        data["channel"] = {"id": str(channel_id), "type": 1, "recipients": [user(author_id, name)]}
    return data


def _json(data: Any, status: int = 200) -> web.Response:
    # Exactly 'application/json', as Discord sends it (discord.py compares the header verbatim).
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json")


class FakeDiscord:
    """The REST side of Discord: records every request, answers like Discord would."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.posted: dict[str, dict] = {}

    def messages(self, channel_id: int | None = None) -> list[dict]:
        return [
            body
            for method, path, body in self.requests
            if method == "POST"
            and path.endswith("/messages")
            and (channel_id is None or path == f"/api/v10/channels/{channel_id}/messages")
        ]

    def count(self, method: str, fragment: str) -> int:
        return sum(1 for m, path, _ in self.requests if m == method and fragment in path)

    def interaction_replies(self) -> list[dict]:
        return [body for method, path, body in self.requests if method == "POST" and path.endswith("/callback")]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = raw
        path = request.path
        self.requests.append((request.method, path, body))
        if request.headers.get("Authorization") != "Bot test-token" and "/interactions/" not in path:
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        if path == "/api/v10/users/@me":
            return _json(BOT_USER)
        if path == "/api/v10/oauth2/applications/@me":
            return _json({"id": str(APP_ID), "name": "companion", "icon": None, "description": "",
                                      "bot_public": True, "bot_require_code_grant": False, "verify_key": "00",
                                      "flags": 0, "owner": user(1, "owner"), "team": None, "summary": ""})  # fmt: skip
        if path.endswith("/commands") and request.method == "PUT":
            return _json([{**c, "id": snowflake(), "application_id": str(APP_ID), "version": "1"} for c in body])
        if path.endswith("/typing") or "/reactions/" in path:
            return web.Response(status=204)
        if path.endswith("/messages") and request.method == "POST":
            channel_id = path.split("/")[4]
            sent = {"id": snowflake(), "channel_id": channel_id, "author": BOT_USER, "content": body.get("content", ""),
                    "timestamp": TIMESTAMP, "edited_timestamp": None, "tts": False, "mention_everyone": False,
                    "mentions": [], "mention_roles": [], "attachments": [], "embeds": [], "pinned": False,
                    "type": 19 if body.get("message_reference") else 0, "flags": 0}  # fmt: skip
            self.posted[sent["id"]] = sent
            return _json(sent)
        if path.endswith("/callback"):
            interaction_id = path.split("/")[3]
            flags = (body or {}).get("data", {}).get("flags", 0)
            return _json({"interaction": {"id": interaction_id, "type": 2,
                                                      "response_message_ephemeral": bool(flags & 64)}})  # fmt: skip
        return _json({"message": "404: Not Found", "code": 0}, status=404)


@asynccontextmanager
async def discord_session(bot: discord.Client, *, guilds: list[dict] | None = None):
    """Log `bot` in against a fake Discord and hand it READY and GUILD_CREATE, as the gateway would."""
    fake = FakeDiscord()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    old_base = discord.http.Route.BASE
    discord.http.Route.BASE = f"http://127.0.0.1:{port}/api/v10"
    try:
        await bot.login("test-token")
        state = bot._connection
        state.parse_ready({"v": 10, "user": BOT_USER, "guilds": [], "session_id": "s", "resume_gateway_url": "ws://x",
                           "application": {"id": str(APP_ID), "flags": 0}})  # fmt: skip
        for data in guilds if guilds is not None else [guild()]:
            state.parse_guild_create(data)
        yield fake
    finally:
        discord.http.Route.BASE = old_base
        await bot.close()
        await runner.cleanup()


async def settle(bot: discord.Client, fake: FakeDiscord, *, timeout: float = 30.0) -> None:
    """Wait until the bot's event handlers have finished."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await asyncio.sleep(0.05)
    while loop.time() < deadline:
        pending = [
            t
            for t in asyncio.all_tasks()
            if t.get_name().startswith(("discord.py:", "CommandTree-invoker")) and not t.done()
        ]
        if not pending:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("bot handlers still running")
