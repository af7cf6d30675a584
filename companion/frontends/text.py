"""Reply text for chat frontends: emotion tags out, long replies split at a platform's limit."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Emotions a model may tag its lines with ([joy] ...); the card's expression map adds its own.
COMMON_EMOTIONS = frozenset(
    "joy happy smile sad angry surprise surprised shy blush think thinking neutral fear scared disgust "
    "love excited confused sleepy proud embarrassed worried calm laugh smirk cry".split()
)
_BRACKET = re.compile(r"\[([^\[\]\n]{1,40})\]\s*")
_SENTENCE_END = re.compile(r"(?<=[。！？!?…])|(?<=[.;；])\s")


def display_text(reply: str, emotions: Iterable[str] = ()) -> str:
    """The reply as a chat shows it: `[joy]`-style emotion tags removed; other text kept."""
    known = {e.lower() for e in emotions} | COMMON_EMOTIONS

    def drop(match: re.Match[str]) -> str:
        return "" if match.group(1).strip().lower() in known else match.group(0)

    text = _BRACKET.sub(drop, reply)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def split_message(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at the best boundary available (paragraph,
    line, sentence, space, then anywhere). A code block cut in two is closed and reopened."""
    if limit < 16:
        raise ValueError("limit too small")
    text = text.strip()
    pieces: list[str] = []
    reopen = ""
    while text:
        text = reopen + text
        if len(text) <= limit:
            pieces.append(text)
            break
        budget = limit - 4  # room to close an open code fence
        cut = _best_cut(text, budget)
        head, text = text[:cut].rstrip(), text[cut:].lstrip("\n ")
        fence = re.findall(r"^```(\S*)", head, flags=re.M)
        if len(fence) % 2 == 1:
            head += "\n```"
            reopen = f"```{fence[-1]}\n"
        else:
            reopen = ""
        if head.strip():
            pieces.append(head)
    return pieces


def _best_cut(text: str, budget: int) -> int:
    window = text[:budget]
    floor = budget // 3  # never cut so early that a piece is mostly empty
    for pattern in ("\n\n", "\n"):
        at = window.rfind(pattern)
        if at >= floor:
            return at + len(pattern)
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() >= floor]
    if ends:
        return ends[-1]
    at = max(window.rfind(" "), window.rfind("，"), window.rfind(","), window.rfind("、"))
    if at >= floor:
        return at + 1
    return budget
