"""One long-lived thread for every call into a native engine that computes with a thread pool.

llama.cpp (built with OpenMP, as llama-cpp-python builds it) computes on a libgomp thread team
that belongs to the thread calling it, and the team lives as long as that thread does. When the
model is loaded on one thread and each turn generates on a fresh one, two teams exist; libgomp
counts more threads than cores and throttles its spin-waits, so the workers sleep at every one
of the ~900 barriers of a decode step. On the 2-core test machine that cut decoding from ~57 to
~37 tokens/s. Running load, prefill, decoding and scoring on this one thread keeps one team.

The thread is a daemon: leaving the program never waits for a computation (a turn's stream
cancels its generation itself).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class ComputeThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[object, ...]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        """Queue `fn(*args)` on the thread (calls run in submission order)."""
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()
        future: Future[T] = Future()
        self._jobs.put((future, fn, args))
        return future

    def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on the thread, waiting for it; called from the thread itself, runs inline."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        return self.submit(fn, *args).result()

    def _serve(self) -> None:
        while True:
            future, fn, args = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            try:
                future.set_result(fn(*args))
            except BaseException as error:  # handed to whoever waits on the future
                future.set_exception(error)
