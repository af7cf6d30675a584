"""One long-lived thread for every call into a native engine that computes with a thread pool.

llama.cpp (built with OpenMP, as llama-cpp-python builds it) computes on a libgomp thread team
that belongs to the thread calling it, and the team lives as long as that thread does. When the
model is loaded on one thread and each turn generates on a fresh one, two teams exist; libgomp
counts more threads than cores and throttles its spin-waits, so the workers sleep at every one
of the ~900 barriers of a decode step. On the 2-core test machine that cut decoding from ~57 to
~37 tokens/s. Running load, prefill, decoding and scoring on this one thread keeps one team.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class ComputeThread:
    def __init__(self, name: str) -> None:
        self._ident: int | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=self._mark)

    def _mark(self) -> None:
        self._ident = threading.get_ident()

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        """Queue `fn(*args)` on the thread (calls run in submission order)."""
        return self._executor.submit(fn, *args)

    def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on the thread, waiting for it; called from the thread itself, runs inline."""
        if threading.get_ident() == self._ident:
            return fn(*args)
        return self.submit(fn, *args).result()
