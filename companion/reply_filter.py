"""What the model streams is not all her reply. Before it she may write her name ("Mochi: ") or
SillyTavern's new-chat marker, which small models copy from the prompt (her greeting follows one
there); and she may fall into a loop (`companion.repeats`). `ReplyFilter` passes the rest on as it
streams, for every path that streams a reply (a turn, the OpenAI-compatible API), so what was
passed is exactly her reply:

    reply = ReplyFilter("Mochi")
    async with contextlib.aclosing(reply.stream(llm.stream(request))) as pieces:
        async for piece in pieces: ...   # reply.text: all that was passed
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from companion.prompt import NEW_CHAT_MARKER
from companion.repeats import LoopGuard

log = logging.getLogger(__name__)


class ReplyFilter:
    def __init__(self, name: str) -> None:
        self.prefixes = [prefix.lower() for prefix in (f"{name}:", f"{name}：", NEW_CHAT_MARKER)]
        self.head: str | None = ""
        """The start, held while it may still be one of the prefixes (None once decided)."""
        self.guard = LoopGuard()

    @property
    def looped(self) -> bool:
        return self.guard.looped

    @property
    def text(self) -> str:
        return self.guard.text[: self.guard.passed]

    async def stream(self, pieces: AsyncIterator[str]) -> AsyncIterator[str]:
        """`pieces` filtered. Close this stream to close `pieces`; a reply that loops closes it too,
        so the model stops."""
        async with contextlib.aclosing(pieces) as source:
            async for piece in source:
                if passed := self.feed(piece):
                    yield passed
                if self.looped:
                    log.info("the reply looped; it ends after its first round")
                    return
        if rest := self.flush():
            yield rest

    def feed(self, piece: str) -> str:
        if self.head is None:
            return self.guard.feed(piece)
        self.head = self._without_prefixes(self.head + piece)
        if any(prefix.startswith(self.head.lower()) for prefix in self.prefixes):
            return ""  # could still become one: wait
        start, self.head = self.head, None
        return self.guard.feed(start)

    def flush(self) -> str:
        """The rest, at the end of the reply."""
        start, self.head = (self.head or "").rstrip(), None
        return (self.guard.feed(start) if start else "") + self.guard.flush()

    def _without_prefixes(self, text: str) -> str:
        text = text.lstrip()
        while prefix := next((p for p in self.prefixes if text.lower().startswith(p)), None):
            text = text[len(prefix) :].lstrip()
        return text
