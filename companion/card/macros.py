"""SillyTavern macros in card text: {{char}}, {{user}}, <BOT>, <USER>, {{original}}."""

from __future__ import annotations

import re

_CHAR = re.compile(r"\{\{char\}\}|<BOT>", re.IGNORECASE)
_USER = re.compile(r"\{\{user\}\}|<USER>", re.IGNORECASE)
_ORIGINAL = re.compile(r"\{\{original\}\}", re.IGNORECASE)


def substitute(text: str, *, char: str, user: str) -> str:
    text = _CHAR.sub(lambda _: char, text)
    return _USER.sub(lambda _: user, text)


def apply_original(template: str, original: str) -> str:
    """A card's system_prompt may wrap the default with {{original}}; without it, it replaces it."""
    if not template.strip():
        return original
    if _ORIGINAL.search(template):
        return _ORIGINAL.sub(lambda _: original, template)
    return template
