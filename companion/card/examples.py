"""Parse `mes_example`: <START>-separated blocks of `{{user}}:` / `{{char}}:` lines."""

from __future__ import annotations

import re

from companion.messages import ChatMessage

_START = re.compile(r"^\s*<START>\s*$", re.IGNORECASE | re.MULTILINE)
_SPEAKER = re.compile(r"^\s*(\{\{user\}\}|<USER>|\{\{char\}\}|<BOT>)\s*:\s?(.*)$", re.IGNORECASE)


def parse_examples(mes_example: str) -> list[list[ChatMessage]]:
    """Blocks of alternating messages; lines without a speaker continue the previous message."""
    blocks: list[list[ChatMessage]] = []
    for raw_block in _START.split(mes_example):
        messages: list[ChatMessage] = []
        for line in raw_block.splitlines():
            match = _SPEAKER.match(line)
            if match:
                role = "user" if match.group(1).lower() in ("{{user}}", "<user>") else "assistant"
                messages.append(ChatMessage(role=role, content=match.group(2).strip()))
            elif messages and line.strip():
                last = messages[-1]
                messages[-1] = last.model_copy(update={"content": f"{last.content}\n{line.strip()}"})
        if messages:
            blocks.append(messages)
    return blocks
