"""Text that repeats itself: the words of a text, and loops at the end of a streaming reply.

Small models fall into loops ("红豆糖水，红豆糖水，红豆糖水，..." or "[box box] [box box] ...") and
then write them until `max_new_tokens`, seconds of text (and speech) nobody wants. `LoopGuard`
watches the reply as it streams and ends it once its tail is one part repeated: three times for a
part of 4+ words (CJK: characters), four times for 2-3; single words ("no no no no", "哈哈哈哈哈哈")
are speech, not a loop. The reply keeps the part once.

    guard = LoopGuard()
    for piece in stream:
        emit(guard.feed(piece))
        if guard.looped: break          # guard.text: the reply up to and with the first round
"""

from __future__ import annotations

import re

from companion.scripts import CJK

_UNITS = re.compile(f"[{CJK}]|\\w+")
MAX_PART_CHARS = 200
"""Longer repeated parts are not looked for (a model repeating a whole paragraph ends anyway)."""


def units(text: str) -> list[str]:
    """Words, and CJK characters one by one."""
    return _UNITS.findall(text.lower())


def _copies_needed(part: str) -> int | None:
    if (part + part).find(part, 1) != len(part):
        return None  # itself a repeat ("哈哈" of "哈"): judged by its own part
    count = len(units(part))
    return 3 if count >= 4 else 4 if count >= 2 else None


def looping_tail(text: str) -> int | None:
    """Where the first round of a loop at the end of `text` ends (the reply is cut there), or None."""
    for period in range(1, min(MAX_PART_CHARS, len(text) // 3) + 1):
        part = text[-period:]
        if text[-2 * period : -period] != part:
            continue  # the cheap test first: this runs on every streamed piece
        copies = _copies_needed(part)
        if copies is None or period * copies > len(text) or text[-period * copies :] != part * copies:
            continue
        start = len(text) - period * copies
        while start > 0 and text[start - 1] == text[start - 1 + period]:
            start -= 1  # the loop began earlier, inside a round
        return start + period
    return None


class LoopGuard:
    def __init__(self) -> None:
        self.text = ""
        self.looped = False

    def feed(self, piece: str) -> str:
        """The part of `piece` to pass on (all of it unless this piece completed a loop)."""
        if self.looped:
            return ""
        before = len(self.text)
        self.text += piece
        end = looping_tail(self.text)
        if end is None:
            return piece
        self.looped = True
        self.text = self.text[:end]
        return self.text[before:]
