"""A character at work: runs turns for any conversation and emits typed events.

    user text -> context sources (lorebook, knowledge, memory) -> prompt -> LLM stream
              -> processors (sentences, expressions, speech...) -> frontends

Processors are async event-stream transformers (pipecat's frames, in miniature): each takes
the stream of events and yields its own, so speech can start while text is still coming.
Closing the stream (the user interrupted) cancels every stage; history keeps what was said.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from companion import plugins
from companion.card.macros import substitute
from companion.character import Character, find_character
from companion.config import PluginSpec, Settings
from companion.events import ContextBlock, ContextEvent, Event, TextDeltaEvent, TurnEndEvent
from companion.history import ConversationKey, HistoryStore
from companion.llm.base import LLM, GenerationParams, GenerationRequest
from companion.messages import ChatMessage
from companion.prompt import AssembledPrompt, TokenCounter, assemble
from companion.reply_filter import ReplyFilter

Processor = Callable[[AsyncIterator[Event]], AsyncIterator[Event]]


class ContextSource(Protocol):
    """Retrieval for a turn (the knowledge package implements it)."""

    async def build(
        self,
        user_text: str,
        *,
        user_id: str,
        recent: Sequence[ChatMessage],
        budget_tokens: int,
        count_tokens: TokenCounter,
    ) -> list[ContextBlock]: ...

    async def remember(self, user_id: str, user_text: str, reply: str) -> None: ...


@dataclass
class Companion:
    character: Character
    settings: Settings
    llm: LLM
    history: HistoryStore
    context_sources: list[ContextSource] = field(default_factory=list)
    processors: list[Processor] = field(default_factory=list)
    _prepared: dict[ConversationKey, tuple[str, str, AssembledPrompt, list[ContextBlock]]] = field(
        default_factory=dict, repr=False
    )

    @property
    def name(self) -> str:
        return self.character.card.name

    def key(self, user: str = "local", channel: str = "terminal") -> ConversationKey:
        return ConversationKey(character=self.character.id, user=user, channel=channel)

    def greeting(self, key: ConversationKey, user_name: str | None = None) -> str | None:
        """The card's greeting, recorded as her first message, when the conversation is new."""
        if self.history.load(key, limit=1) or not self.character.card.first_mes.strip():
            return None
        text = substitute(self.character.card.first_mes, char=self.name, user=user_name or self.settings.user_name)
        self.history.append(key, [ChatMessage(role="assistant", content=text)])
        return text

    def record_heard(self, key: ConversationKey, heard_text: str) -> None:
        """After the user interrupted her: history keeps what was actually heard, not what was generated."""
        self._prepared.pop(key, None)
        self.history.revise_last_reply(key, heard_text)

    def reset(self, key: ConversationKey) -> None:
        self._prepared.pop(key, None)
        self.history.clear(key)

    async def forget(self, key: ConversationKey) -> int:
        """/forget: drop everything she remembers about this user (per-user memory); returns how much."""
        self._prepared.pop(key, None)
        count = 0
        for source in self.context_sources:
            forget = getattr(source, "forget", None)
            if forget is not None:
                count += await forget(key.user)
        return count

    def generation_params(self, user_name: str) -> GenerationParams:
        s = self.settings
        return GenerationParams(
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            repetition_penalty=s.repetition_penalty,
            stop=[f"\n{user_name}:", f"\n{user_name}：", f"\n{self.name}:", f"\n{self.name}："],
        )

    async def build_prompt(
        self, key: ConversationKey, text: str, user_name: str, history: Sequence[ChatMessage] | None = None
    ) -> tuple[AssembledPrompt, list]:
        """`history` replaces the stored conversation (stateless APIs send their own)."""
        history = self.history.load(key) if history is None else list(history)
        blocks: list[ContextBlock] = []
        for source in self.context_sources:
            blocks += await source.build(
                text,
                user_id=key.user,
                recent=history[-6:],
                budget_tokens=self.settings.context_budget_tokens,
                count_tokens=self.llm.count_tokens,
            )
        prompt = assemble(
            self.character.card,
            history,
            text,
            user_name=user_name,
            count_tokens=self.llm.count_tokens,
            budget_tokens=self.settings.max_context_tokens - self.settings.max_new_tokens,
            context=blocks,
        )
        return prompt, blocks

    async def prepare_prompt(self, key: ConversationKey, text: str, user_name: str) -> AssembledPrompt:
        """The prompt of a turn saying `text`, built ahead and kept for that turn, which then skips
        retrieval (the voice loop prefills it while the user pauses). The conversation's next turn
        takes it, or drops it when its words differ."""
        prompt, blocks = await self.build_prompt(key, text, user_name)
        self._prepared[key] = (text, user_name, prompt, blocks)
        return prompt

    async def turn(self, key: ConversationKey, text: str, *, user_name: str | None = None) -> AsyncIterator[Event]:
        stream = self._text_turn(key, text, user_name or self.settings.user_name)
        for processor in self.processors:
            stream = processor(stream)
        async for event in stream:
            yield event

    async def _text_turn(self, key: ConversationKey, text: str, user_name: str) -> AsyncIterator[Event]:
        turn_id = uuid.uuid4().hex[:12]
        prepared = self._prepared.pop(key, None)
        if prepared is not None and prepared[:2] == (text, user_name):
            prompt, blocks = prepared[2:]
        else:
            prompt, blocks = await self.build_prompt(key, text, user_name)
        if blocks:
            yield ContextEvent(turn_id=turn_id, blocks=blocks)
        request = GenerationRequest(
            messages=prompt.messages,
            params=self.generation_params(user_name),
            adapter=self.character.adapter_dir if self.character.has_adapter() else None,
        )
        filtered = ReplyFilter(self.name)
        finished = False
        try:
            async with contextlib.aclosing(filtered.stream(self.llm.stream(request))) as pieces:
                async for passed in pieces:
                    yield TextDeltaEvent(turn_id=turn_id, text=passed)
            finished = True
        finally:
            reply = clean_reply(filtered.text, self.name)
            said = [ChatMessage(role="user", content=text)]
            if reply:
                said.append(ChatMessage(role="assistant", content=reply))
            self.history.append(key, said, interrupted=not finished)
        for source in self.context_sources:
            await source.remember(key.user, text, reply)
        yield TurnEndEvent(turn_id=turn_id, text=reply)


def clean_reply(text: str, char_name: str) -> str:
    """Trim whitespace and a leading 'Name:' the model may write before its line."""
    text = text.strip()
    return re.sub(rf"^{re.escape(char_name)}\s*[:：]\s*", "", text).strip()


def build_companion(character_id: str, settings: Settings) -> Companion:
    """The character with her plugins as configured (the card may pick her own LLM settings)."""
    character = find_character(character_id, settings.character_search_path)
    llm_spec = settings.llm.merged(character.settings.llm.model_dump(exclude_none=True))
    llm = shared_plugin("llm", llm_spec, settings)
    from knowledge.retrieval import ContextBuilder  # lorebook, knowledge, classic lines, per-user memory

    knowledge = ContextBuilder.for_character(character, settings)
    knowledge.start()  # the index is checked (or built) in the background while the model loads
    return Companion(
        character=character, settings=settings, llm=llm, history=history_store(settings), context_sources=[knowledge]
    )


_shared: dict[tuple[str, str, str], object] = {}


def shared_plugin(kind: plugins.PluginKind, spec: PluginSpec, settings: Settings):
    """One instance per (kind, settings, data dir): characters on the same base model share it."""
    key = (kind, spec.model_dump_json(), str(settings.data_dir))
    if key not in _shared:
        _shared[key] = plugins.create(kind, spec, plugins.PluginContext(data_dir=settings.data_dir))
    return _shared[key]


def history_store(settings: Settings) -> HistoryStore:
    key = ("history", "", str(settings.data_dir))
    if key not in _shared:
        _shared[key] = HistoryStore(settings.data_dir / "history.sqlite3")
    return _shared[key]  # type: ignore[return-value]
