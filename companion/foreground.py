"""Work someone is waiting for goes first on a small CPU.

On a laptop's few cores, her speech synthesis and the LLM writing her next sentence run at the
same time and each slows the other: the bench measured the first sentence's synthesis at ~0.17 s
beside the decoding LLM against ~0.08 s alone, and the listener waits for exactly that sentence.
Synthesis on this CPU therefore holds the foreground while it computes, and background loops
(the local LLMs, between tokens and prompt batches) wait at their next step until it is free.
Nothing is lost: the LLM is ahead of playback (speech is synthesised ~20x faster than it plays).

    for chunk in hurried(voice.synthesize(text)): ...   # each step holds the foreground
    FOREGROUND.wait()                                     # a background loop, between steps
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

MAX_WAIT_S = 5.0
"""A background step never waits longer than this (a holder that hangs cannot stall the LLM)."""


class Foreground:
    def __init__(self) -> None:
        self._holders = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._changed:
            self._holders += 1
        try:
            yield
        finally:
            with self._changed:
                self._holders -= 1
                if not self._holders:
                    self._changed.notify_all()

    @property
    def held(self) -> bool:
        return self._holders > 0

    def wait(self, timeout: float = MAX_WAIT_S) -> bool:
        """Return once nothing holds the foreground (False if `timeout` passed first)."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._holders, timeout)


FOREGROUND = Foreground()


def hurried(items: Iterable[T]) -> Iterator[T]:
    """`items`, each computed while holding the foreground. The hold is released before an item is
    handed on, so a consumer that stops iterating never leaves it held."""
    iterator = iter(items)
    while True:
        with FOREGROUND.hold():
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item
