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
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

MAX_WAIT_S = 5.0
"""Background work waits at most this long after a hold began (a holder that hangs, say a stuck
espeak-ng, delays the LLM once, not at every step)."""


class Foreground:
    def __init__(self) -> None:
        self._holders = 0
        self._since = 0.0  # when the current hold began
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._changed:
            if not self._holders:
                self._since = time.monotonic()
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
        """Return once nothing holds the foreground, or `timeout` after the hold began (False)."""
        with self._changed:
            if not self._holders:
                return True
            left = self._since + timeout - time.monotonic()
            return self._changed.wait_for(lambda: not self._holders, max(0.0, left))


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


def quiet_onnx_options(onnxruntime: Any, threads: int = 0) -> Any:
    """ONNX Runtime session options for a model that runs beside the LLM: when a run ends its
    worker threads sleep instead of spinning for more work. Piper's spinning threads slowed the
    next ~5 decode steps of the LLM by 40% (17 against 12 ms a token, for ~70 ms after every
    sentence); without spinning a sentence took 3% longer to synthesise. `threads` 0: ONNX
    Runtime's choice (one per core)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
