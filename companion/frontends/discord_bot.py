"""The character as a Discord bot (discord.py).

She answers in DMs, when mentioned (or replied to, or addressed by name) in guild channels, and
every message in channels an admin turned on with /channel. Slash commands: /reset, /character,
/channel (admins), /join and /leave (voice). She shows "typing…" while she thinks, splits long
replies at Discord's 2000-character limit, and keeps history and memory per Discord user (per
channel), with per-user rate limits and an allowlist of guilds and admins.

Discord setup: in the Developer Portal, Bot -> Privileged Gateway Intents -> enable MESSAGE
CONTENT INTENT (without it she sees the text of DMs and of messages that mention her only).
Invite with the `bot` and `applications.commands` scopes and the Send Messages, Read Message
History (and Connect, Speak for voice) permissions.

Voice: with `voice_replies` she speaks her replies in the voice channel she joined with /join
(needs the voice extra for TTS, `pip install "discord.py[voice]"` and libopus). discord.py
cannot receive audio, so she does not listen in voice channels.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import re
import wave
from pathlib import Path
from typing import Any

import discord
from discord import app_commands

from companion import atomic
from companion.config import Settings
from companion.events import AudioEvent
from companion.frontends.hub import CompanionHub
from companion.frontends.ratelimit import RateLimiter
from companion.frontends.text import split_message
from companion.history import ConversationKey
from companion.scripts import HAN, KANA

log = logging.getLogger(__name__)
DISCORD_LIMIT = 2000


class Preferences:
    """Who talks with which character, and where she answers every message (survives restarts)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            data = {}
        self.characters: dict[str, str] = dict(data.get("characters", {}))
        self.channels: set[int] = {int(c) for c in data.get("channels", [])}

    def save(self) -> None:
        data = {"characters": self.characters, "channels": sorted(self.channels)}
        atomic.write_text(self.path, json.dumps(data, indent=1))


def pcm_48k_stereo(audio: list[AudioEvent]) -> bytes:
    """Her speech as the 48 kHz 16-bit stereo PCM that discord.PCMAudio plays."""
    import numpy as np

    from companion.voice.audio import from_int16, resample, to_int16

    parts = []
    for event in audio:
        with wave.open(io.BytesIO(base64.b64decode(event.audio_wav_b64)), "rb") as wav:
            if wav.getsampwidth() != 2:
                continue
            samples = from_int16(wav.readframes(wav.getnframes()))
            if wav.getnchannels() > 1:
                samples = samples.reshape(-1, wav.getnchannels()).mean(axis=1)
            parts.append(resample(samples, wav.getframerate(), 48_000))
    if not parts:
        return b""
    mono = to_int16(np.concatenate(parts))
    return np.repeat(mono, 2).astype("<i2").tobytes()


class CompanionBot(discord.Client):
    def __init__(self, settings: Settings, hub: CompanionHub, **options: Any) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        options.setdefault(
            "allowed_mentions", discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False)
        )
        super().__init__(intents=intents, **options)
        self.settings = settings
        self.config = settings.discord
        self.hub = hub
        self.prefs = Preferences(settings.data_dir / "discord" / "preferences.json")
        self.limiter = RateLimiter(self.config.turns_per_minute, self.config.turn_burst)
        self.tree = app_commands.CommandTree(self)
        self._add_commands()

    # -- who, where ---------------------------------------------------------------------------
    def is_admin(self, user: discord.abc.User, guild: discord.Guild | None = None) -> bool:
        if user.id in self.config.admins:
            return True
        if self.config.admins:
            return False
        perms = getattr(user, "guild_permissions", None)
        return bool(guild and perms and perms.manage_guild)

    def guild_allowed(self, guild_id: int | None) -> bool:
        return guild_id is None or not self.config.guilds or guild_id in self.config.guilds

    def character_for(self, user_id: int) -> str:
        chosen = self.prefs.characters.get(str(user_id))
        return chosen if chosen and self.hub.has(chosen) else self.config.character

    def key(self, character: str, user_id: int, channel: discord.abc.Messageable, guild: discord.Guild | None):
        where = f"discord:{channel.id}" if guild is not None else "discord:dm"  # type: ignore[attr-defined]
        return ConversationKey(character=character, user=f"discord:{user_id}", channel=where)

    def addressed(self, message: discord.Message) -> bool:
        if message.guild is None:
            return self.config.dms
        if not self.guild_allowed(message.guild.id):
            return False
        if message.channel.id in self.config.channels or message.channel.id in self.prefs.channels:
            return True
        if self.user is not None and self.user in message.mentions:
            return True
        ref = message.reference
        resolved = ref.resolved if ref is not None else None
        if isinstance(resolved, discord.Message) and self.user is not None and resolved.author.id == self.user.id:
            return True
        if self.config.answer_to_name:
            card = self.hub.base(self.character_for(message.author.id)).character.card
            names = [n for n in (card.name, card.nickname) if n]
            content = message.content.lower()
            return any(_named(name.lower(), content) for name in names)
        return False

    def text_of(self, message: discord.Message) -> str:
        """The message without her mention; other mentions as @display names."""
        text = message.content
        if self.user is not None:
            text = re.sub(rf"<@!?{self.user.id}>", " ", text)
        for user in message.mentions:
            text = re.sub(rf"<@!?{user.id}>", f"@{user.display_name}", text)
        for role in message.role_mentions:
            text = text.replace(f"<@&{role.id}>", f"@{role.name}")
        for channel in message.channel_mentions:
            text = text.replace(f"<#{channel.id}>", f"#{channel.name}")
        text = re.sub(r"<@[!&]?\d+>", "@someone", text)
        text = re.sub(r"<a?:(\w+):\d+>", r":\1:", text)  # custom emoji
        return re.sub(r"\s+", " ", text).strip()

    # -- messages ------------------------------------------------------------------------------
    async def on_ready(self) -> None:
        log.info("Discord: logged in as %s (%s guilds)", self.user, len(self.guilds))

    async def setup_hook(self) -> None:
        if self.config.sync_commands:
            await self.tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or (self.user is not None and message.author.id == self.user.id):
            return
        if not self.addressed(message):
            return
        text = self.text_of(message)
        if not text:
            return
        if not self.is_admin(message.author, message.guild):
            decision = self.limiter.check(("discord", message.author.id))
            if not decision.allowed:
                log.info("Discord: rate limited %s", message.author.id)
                with contextlib.suppress(discord.HTTPException):
                    await message.add_reaction("⏳")
                return
        character = self.character_for(message.author.id)
        key = self.key(character, message.author.id, message.channel, message.guild)
        speak = self._voice_client(message.guild) is not None
        async with message.channel.typing():
            reply = await self.hub.reply(character, key, text, user_name=message.author.display_name[:32], speak=speak)
        if not reply.display:
            return
        for i, piece in enumerate(split_message(reply.display, DISCORD_LIMIT)):
            if i == 0 and message.guild is not None:
                await message.reply(piece, mention_author=False)
            else:
                await message.channel.send(piece)
        if speak and reply.audio:
            await self.play(message.guild, reply.audio)

    # -- voice ---------------------------------------------------------------------------------
    def _voice_client(self, guild: discord.Guild | None) -> discord.VoiceClient | None:
        if guild is None or not self.config.voice_replies:
            return None
        client = guild.voice_client
        return client if isinstance(client, discord.VoiceClient) and client.is_connected() else None

    async def play(self, guild: discord.Guild | None, audio: list[AudioEvent]) -> None:
        client = self._voice_client(guild)
        if client is None:
            return
        pcm = await asyncio.to_thread(pcm_48k_stereo, audio)
        if not pcm:
            return
        if client.is_playing():
            client.stop()  # a new reply supersedes the one still playing
        client.play(discord.PCMAudio(io.BytesIO(pcm)))

    # -- slash commands ------------------------------------------------------------------------
    def _add_commands(self) -> None:
        bot = self

        async def refuse_outside(interaction: discord.Interaction) -> bool:
            if bot.guild_allowed(interaction.guild_id):
                return False
            await interaction.response.send_message("I'm not enabled in this server.", ephemeral=True)
            return True

        @self.tree.command(name="reset", description="Forget our conversation in this channel")
        async def reset(interaction: discord.Interaction) -> None:
            if await refuse_outside(interaction):
                return
            character = bot.character_for(interaction.user.id)
            key = bot.key(character, interaction.user.id, interaction.channel, interaction.guild)  # type: ignore[arg-type]
            companion = bot.hub.base(character)
            async with bot.hub.lock(key):
                companion.reset(key)
            await interaction.response.send_message(f"Fresh start with {companion.name}.", ephemeral=True)

        @self.tree.command(name="character", description="Choose who you talk with")
        @app_commands.describe(name="Character id (leave empty to see who is here)")
        async def character(interaction: discord.Interaction, name: str | None = None) -> None:
            if await refuse_outside(interaction):
                return
            available = bot.hub.character_ids()
            if name is None:
                current = bot.character_for(interaction.user.id)
                await interaction.response.send_message(
                    f"You're talking with **{current}**. Here: {', '.join(available)}", ephemeral=True
                )
                return
            if name not in available:
                await interaction.response.send_message(
                    f"No character {name!r}. Here: {', '.join(available)}", ephemeral=True
                )
                return
            bot.prefs.characters[str(interaction.user.id)] = name
            bot.prefs.save()
            await interaction.response.send_message(
                f"You're now talking with **{bot.hub.base(name).name}**.", ephemeral=True
            )

        @character.autocomplete("name")
        async def character_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            ids = [c for c in bot.hub.character_ids() if current.lower() in c.lower()]
            return [app_commands.Choice(name=c, value=c) for c in ids[:25]]

        @self.tree.command(name="channel", description="Admins: answer every message in this channel, or stop")
        async def channel(interaction: discord.Interaction) -> None:
            if await refuse_outside(interaction):
                return
            if interaction.guild is None or not bot.is_admin(interaction.user, interaction.guild):
                await interaction.response.send_message("Only admins can change this.", ephemeral=True)
                return
            channel_id = interaction.channel_id
            if channel_id in bot.prefs.channels:
                bot.prefs.channels.discard(channel_id)
                answer = "I'll answer here only when mentioned."
            else:
                bot.prefs.channels.add(channel_id)  # type: ignore[arg-type]
                answer = "I'll answer every message in this channel."
            bot.prefs.save()
            await interaction.response.send_message(answer, ephemeral=True)

        @self.tree.command(name="join", description="Join your voice channel and speak my replies")
        async def join(interaction: discord.Interaction) -> None:
            if await refuse_outside(interaction):
                return
            problem = bot.voice_problem(interaction)
            if problem:
                await interaction.response.send_message(problem, ephemeral=True)
                return
            target = interaction.user.voice.channel  # type: ignore[union-attr]
            await interaction.response.defer(ephemeral=True, thinking=True)
            if interaction.guild.voice_client is not None:  # type: ignore[union-attr]
                await interaction.guild.voice_client.move_to(target)  # type: ignore[union-attr]
            else:
                await target.connect()
            await interaction.followup.send(f"Joined {target.name}. (I can speak here, not listen.)", ephemeral=True)

        @self.tree.command(name="leave", description="Leave the voice channel")
        async def leave(interaction: discord.Interaction) -> None:
            client = interaction.guild.voice_client if interaction.guild else None
            if client is None:
                await interaction.response.send_message("I'm not in a voice channel.", ephemeral=True)
                return
            await client.disconnect(force=False)
            await interaction.response.send_message("Left the voice channel.", ephemeral=True)

    def voice_problem(self, interaction: discord.Interaction) -> str | None:
        if interaction.guild is None:
            return "Voice works in servers, not DMs."
        if not self.config.voice_replies:
            return "Voice replies are off (discord.voice_replies in the config)."
        if self.config.admins and not self.is_admin(interaction.user, interaction.guild):
            return "Only admins can bring me into voice."
        if not self.hub.speech.tts_available:
            return "I can't speak here: the voice extra is not installed (pip install 'companion[voice]')."
        from discord import voice_client

        if not voice_client.has_nacl:
            return "Voice needs PyNaCl and davey: pip install 'discord.py[voice]'."
        voice = getattr(interaction.user, "voice", None)
        if voice is None or voice.channel is None:
            return "Join a voice channel first."
        return None


def _named(name: str, content: str) -> bool:
    """Whether `content` addresses `name` (as a word for Latin names; anywhere for CJK ones)."""
    if re.search(f"[{KANA}{HAN}]", name):
        return name in content
    return re.search(rf"(?<![a-z0-9]){re.escape(name)}(?![a-z0-9])", content) is not None


def run_bot(settings: Settings, hub: CompanionHub) -> None:
    bot = CompanionBot(settings, hub)
    bot.run(settings.discord.token or "", log_handler=None)
