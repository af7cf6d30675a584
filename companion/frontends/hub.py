"""The characters a server or bot offers, and what every network frontend does with them.

One hub per process: characters are built once and share their LLM (same settings, one
model); turns of one conversation (character, user, channel) run one at a time, whatever
frontend or connection they come from, so a history never interleaves two turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from companion.character import list_characters
from companion.config import Settings
from companion.errors import CharacterNotFoundError, CompanionError
from companion.events import AudioEvent, Event, ExpressionEvent, TextDeltaEvent, TurnEndEvent
from companion.frontends.speech import Speech
from companion.frontends.text import display_text
from companion.history import ConversationKey
from companion.llm.base import GenerationParams, GenerationRequest
from companion.messages import ChatMessage
from companion.reply_filter import ReplyFilter
from companion.session import Companion, build_companion, clean_reply

log = logging.getLogger(__name__)

CompanionFactory = Callable[[str, Settings], Companion]


@dataclass
class Reply:
    """A whole turn, for frontends that post one message per reply (Discord, QQ)."""

    text: str
    """As recorded in history (tags included)."""
    display: str
    """As a chat shows it: emotion tags removed."""
    expressions: list[str] = field(default_factory=list)
    audio: list[AudioEvent] = field(default_factory=list)


class CompanionHub:
    def __init__(
        self,
        settings: Settings,
        *,
        characters: Sequence[str] = (),
        factory: CompanionFactory = build_companion,
        speech: Speech | None = None,
    ) -> None:
        self.settings = settings
        self.allowed = list(characters)
        self.factory = factory
        self.speech = speech or Speech(settings, mode=settings.serve.voice)
        self._base: dict[str, Companion] = {}
        self._variants: dict[tuple[str, bool], Companion] = {}
        self._locks: weakref.WeakValueDictionary[ConversationKey, asyncio.Lock] = weakref.WeakValueDictionary()

    # -- characters ------------------------------------------------------------------------
    def character_ids(self) -> list[str]:
        if self.allowed:
            return list(self.allowed)
        return [folder.name for folder in list_characters(self.settings.character_search_path)]

    def has(self, character_id: str) -> bool:
        return character_id in self.character_ids()

    def base(self, character_id: str) -> Companion:
        if character_id not in self._base:
            if not self.has(character_id):
                raise CharacterNotFoundError(f"no character {character_id!r} is served here")
            self._base[character_id] = self.factory(character_id, self.settings)
        return self._base[character_id]

    def companion(self, character_id: str, *, speak: bool = False) -> Companion:
        """The character with sentence/expression processors, and speech ones when `speak`."""
        key = (character_id, speak)
        if key not in self._variants:
            base = self.base(character_id)
            extra = self.speech.speech_processors(base) if speak else self.speech.text_processors(base)
            self._variants[key] = dataclasses.replace(base, processors=[*base.processors, *extra])
        return self._variants[key]

    def warm_up(self, character_id: str) -> None:
        """Load the character's model now rather than at the first turn."""
        llm = self.base(character_id).llm
        if hasattr(llm, "load"):
            llm.load()

    # -- turns -----------------------------------------------------------------------------
    def lock(self, key: ConversationKey) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def turn(
        self, character_id: str, key: ConversationKey, text: str, *, user_name: str, speak: bool = False
    ) -> AsyncIterator[Event]:
        """A turn's events; waits while another turn of the same conversation runs. Closing the
        iterator interrupts the turn (history keeps what was said)."""
        companion = self.companion(character_id, speak=speak)
        async with self.lock(key):
            stream = companion.turn(key, text, user_name=user_name)
            try:
                async for event in stream:
                    yield event
            finally:
                await stream.aclose()

    async def reply(
        self, character_id: str, key: ConversationKey, text: str, *, user_name: str, speak: bool = False
    ) -> Reply:
        companion = self.companion(character_id, speak=speak)
        final = ""
        expressions: list[str] = []
        audio: list[AudioEvent] = []
        async for event in self.turn(character_id, key, text, user_name=user_name, speak=speak):
            if isinstance(event, TurnEndEvent):
                final = event.text
            elif isinstance(event, ExpressionEvent):
                expressions.append(event.emotion)
            elif isinstance(event, AudioEvent):
                audio.append(event)
        emotions = companion.character.settings.expressions.keys()
        return Reply(text=final, display=display_text(final, emotions), expressions=expressions, audio=audio)

    async def complete(
        self,
        character_id: str,
        messages: Sequence[ChatMessage],
        *,
        user: str | None,
        params: GenerationParams,
        user_name: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> AsyncIterator[str]:
        """Stateless completion (the OpenAI-compatible API): the client's messages are the history;
        the card, retrieval and the character's adapter apply; nothing is stored, except per-user
        memory when the client names its user. `usage` gets the prompt's token count."""
        companion = self.base(character_id)
        turns = [m for m in messages if m.role != "system"]
        if not turns or turns[-1].role != "user":
            raise CompanionError("the last message must be the user's")
        text = turns[-1].content
        user_name = user_name or self.settings.user_name
        key = ConversationKey(character=character_id, user=f"api:{user}" if user else "api", channel="openai")
        prompt, _ = await companion.build_prompt(key, text, user_name, history=turns[:-1])
        if usage is not None:
            usage["prompt_tokens"] = prompt.tokens
        base = companion.generation_params(user_name)
        params = params.model_copy(update={"stop": [*base.stop, *params.stop]})
        request = GenerationRequest(
            messages=prompt.messages,
            params=params,
            adapter=companion.character.adapter_dir if companion.character.has_adapter() else None,
        )
        filtered = ReplyFilter(companion.name)
        async with contextlib.aclosing(filtered.stream(companion.llm.stream(request))) as pieces:
            async for piece in pieces:
                yield piece
        if user:
            reply = clean_reply(filtered.text, companion.name)
            for source in companion.context_sources:
                await source.remember(key.user, text, reply)


def turn_text(events: Sequence[Event]) -> str:
    """The streamed text of a list of events (for tests and logs)."""
    return "".join(e.text for e in events if isinstance(e, TextDeltaEvent))
