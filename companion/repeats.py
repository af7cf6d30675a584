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
    emit(guard.flush())                 # a part said twice, then the reply ended: it was speech
"""

from __future__ import annotations

import re
from collections.abc import Iterator

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


def _repeats_at_end(text: str) -> Iterator[tuple[int, int, int]]:
    """(end of the first round, rounds so far, rounds that make a loop) for each part of 2+ words
    (CJK: characters) whose repeat the text ends in, the last round maybe unfinished."""
    for period in range(1, min(MAX_PART_CHARS, len(text) - 1) + 1):
        if text[-1] != text[-1 - period]:
            continue  # the cheap test first: this runs on every streamed piece
        start = len(text) - 1 - period
        while start > 0 and text[start - 1] == text[start - 1 + period]:
            start -= 1  # the repeat began earlier
        needed = _copies_needed(text[start : start + period])
        if needed is not None:
            yield start + period, (len(text) - start) // period, needed


def looping_tail(text: str) -> int | None:
    """Where the first round of a loop at the end of `text` ends (the reply is cut there), or None."""
    return next((end for end, rounds, needed in _repeats_at_end(text) if rounds >= needed), None)


class LoopGuard:
    """Passes a streaming reply on, except a part it starts to repeat: that waits until the reply
    moves on (then it is passed) or loops (then it is dropped), so what was passed is the reply."""

    def __init__(self) -> None:
        self.text = ""
        self.passed = 0
        self.looped = False

    def feed(self, piece: str) -> str:
        if self.looped:
            return ""
        self.text += piece
        end = looping_tail(self.text)
        if end is not None:
            self.looped = True
            self.text = self.text[: max(end, self.passed)]
            return self.flush()
        return self._release(min((end for end, _, _ in _repeats_at_end(self.text)), default=len(self.text)))

    def flush(self) -> str:
        """What is still held, at the end of the reply."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        out = self.text[self.passed : upto]
        self.passed = max(self.passed, upto)
        return out
