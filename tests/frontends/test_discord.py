"""The Discord bot's handlers on discord.py's own objects, replies over real HTTP to a fake Discord."""

from __future__ import annotations

import asyncio
import base64
import io
import wave

import pytest

pytest.importorskip("discord", reason="the bots extra (discord.py) is not installed")

from companion.frontends.discord_bot import DISCORD_LIMIT, CompanionBot, pcm_48k_stereo
from companion.history import ConversationKey
from tests.frontends.discord_fake import (
    BOT_ID,
    BOT_USER,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    GUILD_ID,
    OTHER_CHANNEL_ID,
    discord_session,
    guild,
    interaction,
    member,
    message,
    settle,
)
from tests.frontends.scripted import tone_wav

REPLY = "Hello there! I am so happy to see you. *waves* How was your day?"
ALICE, BOB, ADMIN = 100_000_000_000_000_001, 100_000_000_000_000_002, 100_000_000_000_000_003
MENTION = {**BOT_USER, "member": {k: v for k, v in member(BOT_ID, "companion-bot").items() if k != "user"}}
BOB_MENTION = {**member(BOB, "bob")["user"], "member": {k: v for k, v in member(BOB, "bob").items() if k != "user"}}


def make_bot(make_hub, settings) -> CompanionBot:
    settings.discord.character = "scripted"
    settings.discord.sync_commands = True
    settings.discord.admins = [ADMIN]
    return CompanionBot(settings, make_hub(settings=settings))


def test_mentions_dms_names_replies_typing_and_long_replies(make_hub, frontend_settings, scripted_llm) -> None:
    frontend_settings.max_new_tokens = 4000
    bot = make_bot(make_hub, frontend_settings)

    async def go() -> None:
        async with discord_session(bot, guilds=[guild(members=[member(ALICE, "alice"), member(BOB, "bob")])]) as fake:
            commands = next(
                body for method, path, body in fake.requests if method == "PUT" and path.endswith("/commands")
            )
            assert sorted(c["name"] for c in commands) == ["channel", "character", "join", "leave", "reset"]
            state = bot._connection
            # Not addressed: silence.
            state.parse_message_create(message(ALICE, "alice", "anyone seen my keys?"))
            await settle(bot, fake)
            assert fake.messages() == []
            # @-mention: typing, then a reply quoting her message, tags removed, the mention not in the prompt.
            mention = message(
                ALICE, "alice", f"<@{BOT_ID}> hi there, <@{BOB}> says hello <@42>", mentions=[MENTION, BOB_MENTION]
            )
            state.parse_message_create(mention)
            await settle(bot, fake)
            sent = fake.messages(CHANNEL_ID)
            assert len(sent) == 1 and sent[0]["content"] == REPLY
            assert str(sent[0]["message_reference"]["message_id"]) == mention["id"]
            assert fake.count("POST", f"/channels/{CHANNEL_ID}/typing") >= 1
            assert scripted_llm.requests[-1].messages[-1].content.endswith("hi there, @Bob says hello @someone")
            # Addressed by name, and a reply to one of her messages.
            state.parse_message_create(message(BOB, "bob", "hey Scripty, what's up?"))
            await settle(bot, fake)
            hers = fake.posted[next(reversed(fake.posted))]
            state.parse_message_create(message(BOB, "bob", "and then?", reply_to=hers))
            await settle(bot, fake)
            assert len(fake.messages(CHANNEL_ID)) == 3
            # A DM: answered without a quote.
            state.parse_message_create(message(ALICE, "alice", "psst", channel_id=DM_CHANNEL_ID, guild_id=None))
            await settle(bot, fake)
            dm = fake.messages(DM_CHANNEL_ID)
            assert len(dm) == 1 and dm[0]["content"] == REPLY and "message_reference" not in dm[0]
            # A reply longer than Discord's limit arrives in pieces, each under it, nothing lost.
            scripted_llm.script = " ".join(f"Sentence number {i} is here." for i in range(250))
            scripted_llm.delay = 0.0005
            state.parse_message_create(message(ALICE, "alice", f"<@{BOT_ID}> tell me a lot", mentions=[MENTION]))
            await settle(bot, fake)
            pieces = [m["content"] for m in fake.messages(CHANNEL_ID)[3:]]
            assert len(pieces) >= 3 and all(len(p) <= DISCORD_LIMIT for p in pieces)
            assert " ".join(pieces) == scripted_llm.script

    asyncio.run(go())
    history = bot.hub.base("scripted").history
    alice = history.load(
        ConversationKey(character="scripted", user=f"discord:{ALICE}", channel=f"discord:{CHANNEL_ID}")
    )
    bob = history.load(ConversationKey(character="scripted", user=f"discord:{BOB}", channel=f"discord:{CHANNEL_ID}"))
    alice_dm = history.load(ConversationKey(character="scripted", user=f"discord:{ALICE}", channel="discord:dm"))
    assert [m.content for m in bob if m.role == "user"] == ["hey Scripty, what's up?", "and then?"]
    assert "hey Scripty, what's up?" not in [m.content for m in alice]
    assert [m.content for m in alice_dm if m.role == "user"] == ["psst"]


def test_slash_commands_admins_and_guild_allowlist(make_hub, frontend_settings, tmp_path) -> None:
    frontend_settings.discord.guilds = [GUILD_ID]
    bot = make_bot(make_hub, frontend_settings)
    other_guild = GUILD_ID + 1

    async def go() -> None:
        guilds = [guild(members=[member(ALICE, "alice")]), guild(other_guild, members=[member(ALICE, "alice")])]
        async with discord_session(bot, guilds=guilds) as fake:
            state = bot._connection
            state.parse_message_create(message(ALICE, "alice", f"<@{BOT_ID}> hello", mentions=[MENTION]))
            await settle(bot, fake)
            key = ConversationKey(character="scripted", user=f"discord:{ALICE}", channel=f"discord:{CHANNEL_ID}")
            assert bot.hub.base("scripted").history.load(key)
            # /character: list, then pick; unknown names refused.
            state.parse_interaction_create(interaction("character", ALICE, "alice"))
            state.parse_interaction_create(
                interaction("character", ALICE, "alice", [{"name": "name", "type": 3, "value": "nobody"}])
            )
            state.parse_interaction_create(
                interaction("character", ALICE, "alice", [{"name": "name", "type": 3, "value": "tester"}])
            )
            await settle(bot, fake)
            replies = [r["data"] for r in fake.interaction_replies()]
            assert "scripted" in replies[0]["content"] and "tester" in replies[0]["content"]
            assert "No character" in replies[1]["content"] and "Tester" in replies[2]["content"]
            assert all(r["flags"] & 64 for r in replies), "answers to commands are ephemeral"
            assert bot.character_for(ALICE) == "tester"
            # /reset forgets her conversation with the current character in this channel.
            state.parse_interaction_create(
                interaction("character", ALICE, "alice", [{"name": "name", "type": 3, "value": "scripted"}])
            )
            state.parse_interaction_create(interaction("reset", ALICE, "alice"))
            await settle(bot, fake)
            assert bot.hub.base("scripted").history.load(key) == []
            # /channel: not for everyone; an admin turns on answering every message here.
            state.parse_interaction_create(interaction("channel", ALICE, "alice", channel_id=OTHER_CHANNEL_ID))
            await settle(bot, fake)
            assert "Only admins" in fake.interaction_replies()[-1]["data"]["content"]
            state.parse_interaction_create(interaction("channel", ADMIN, "admin", channel_id=OTHER_CHANNEL_ID))
            await settle(bot, fake)
            state.parse_message_create(message(ALICE, "alice", "no mention needed here", channel_id=OTHER_CHANNEL_ID))
            await settle(bot, fake)
            assert len(fake.messages(OTHER_CHANNEL_ID)) == 1
            # /join without voice set up says why, instead of failing.
            state.parse_interaction_create(interaction("join", ADMIN, "admin"))
            await settle(bot, fake)
            assert "Voice replies are off" in fake.interaction_replies()[-1]["data"]["content"]
            # Another guild: not on the allowlist, so nothing.
            before = len(fake.messages())
            state.parse_message_create(
                message(ALICE, "alice", f"<@{BOT_ID}> hi", guild_id=other_guild, mentions=[MENTION])
            )
            state.parse_interaction_create(interaction("reset", ALICE, "alice", guild_id=other_guild))
            await settle(bot, fake)
            assert len(fake.messages()) == before
            assert "not enabled" in fake.interaction_replies()[-1]["data"]["content"]

    asyncio.run(go())
    # Preferences survive a restart.
    again = CompanionBot(frontend_settings, bot.hub)
    assert OTHER_CHANNEL_ID in again.prefs.channels and again.character_for(ALICE) == "scripted"


def test_per_user_rate_limits_spare_admins(make_hub, frontend_settings) -> None:
    frontend_settings.discord.turns_per_minute = 0.001
    frontend_settings.discord.turn_burst = 2
    bot = make_bot(make_hub, frontend_settings)

    async def go() -> None:
        async with discord_session(
            bot, guilds=[guild(members=[member(ALICE, "alice"), member(ADMIN, "admin")])]
        ) as fake:
            state = bot._connection
            for i in range(3):
                state.parse_message_create(message(ALICE, "alice", f"<@{BOT_ID}> hi {i}", mentions=[MENTION]))
                state.parse_message_create(message(ADMIN, "admin", f"<@{BOT_ID}> hi {i}", mentions=[MENTION]))
                await settle(bot, fake)
            sent = fake.messages(CHANNEL_ID)
            assert len(sent) == 5  # alice: 2 of 3; the admin: 3 of 3
            assert fake.count("PUT", "/reactions/") == 1  # alice's third message gets a ⏳

    asyncio.run(go())


def test_voice_playback_audio_is_48k_stereo_pcm() -> None:
    from companion.events import AudioEvent

    wav = tone_wav(0.5, rate=16_000)
    event = AudioEvent(
        sentence_index=0, text="hi", sample_rate=16_000, volumes=[], audio_wav_b64=base64.b64encode(wav).decode()
    )
    pcm = pcm_48k_stereo([event, event])
    seconds = len(pcm) / (48_000 * 2 * 2)
    assert abs(seconds - 1.0) < 0.01
    with wave.open(io.BytesIO(wav)) as source:
        assert source.getnframes() == 8000
