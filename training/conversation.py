"""The conversation model every importer produces and every exporter consumes.

A `Message` keeps who said it (`speaker`, and `speaker_id` where the source has a stable id
such as a wxid or QQ number), what was said, when, and where it came from. `role` is set only
where the source itself says who the assistant is (ShareGPT, Alpaca, OpenAI messages); for
chat logs, scripts and novels the role is chosen later (`--as` / `--me`, see
`training.dataset.assign_roles`). `is_self` is the exporter's own "sent by me" flag (WeChat
`IsSender`), which lets `--me` be left out for a WeChat export.

`kind` separates what a person typed (`text`) from media placeholders (`media`, text like
`[图片]`), system notices (`system`) and narration in scripts and novels (`narration`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Role = Literal["system", "user", "assistant"]
Kind = Literal["text", "media", "system", "narration"]


class Message(BaseModel):
    speaker: str = ""
    role: Role | None = None
    text: str
    time: datetime | None = None
    source: str | None = None
    speaker_id: str | None = None
    is_self: bool | None = None
    kind: Kind = "text"
    translations: dict[str, str] = Field(default_factory=dict)

    def with_text(self, text: str) -> Message:
        return self.model_copy(update={"text": text})


class Conversation(BaseModel):
    messages: list[Message] = Field(default_factory=list)
    source: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def speakers(self) -> list[str]:
        seen: dict[str, None] = {}
        for message in self.messages:
            if message.speaker and message.kind != "narration":
                seen.setdefault(message.speaker, None)
        return list(seen)

    def fingerprint(self) -> str:
        """A content hash: the same conversation gets the same value on every machine."""
        digest = hashlib.blake2b(digest_size=16)
        for message in self.messages:
            digest.update(f"{message.role or ''}\x1f{message.speaker}\x1f{message.text}\x1e".encode())
        return digest.hexdigest()

    def in_language(self, lang: str) -> Conversation:
        """The conversation with each message's translation into `lang` where there is one, and
        speakers renamed by `meta['speaker_names'][lang]`; untranslated messages are left out."""
        names = self.meta.get("speaker_names", {}).get(lang, {})
        messages = [
            m.model_copy(update={"text": m.translations[lang], "speaker": names.get(m.speaker, m.speaker)})
            for m in self.messages
            if lang in m.translations
        ]
        return self.model_copy(update={"messages": messages, "meta": {**self.meta, "language": lang}})


def count_speakers(conversations: Iterable[Conversation]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for conversation in conversations:
        for message in conversation.messages:
            if message.kind == "narration":
                continue
            counts[message.speaker] = counts.get(message.speaker, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))
