"""The engine's compute thread: one thread, in order, reentrant, errors handed back, never blocks exit."""

from __future__ import annotations

import threading

import pytest

from companion.llm.compute_thread import ComputeThread


def test_calls_run_in_order_on_one_daemon_thread() -> None:
    compute = ComputeThread("test.compute")
    seen: list[tuple[int, int]] = []
    futures = [compute.submit(lambda i=i: seen.append((i, threading.get_ident()))) for i in range(20)]
    for future in futures:
        future.result(timeout=10)
    assert [i for i, _ in seen] == list(range(20))
    assert len({ident for _, ident in seen}) == 1 and seen[0][1] != threading.get_ident()
    assert compute._thread is not None and compute._thread.daemon


def test_a_call_from_the_thread_itself_runs_inline() -> None:
    compute = ComputeThread("test.compute")
    assert compute.run(lambda: compute.run(threading.get_ident)) == compute.run(threading.get_ident)


def test_errors_reach_the_caller_and_the_thread_goes_on() -> None:
    compute = ComputeThread("test.compute")

    def fail() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        compute.run(fail)
    assert compute.run(lambda: 42) == 42
