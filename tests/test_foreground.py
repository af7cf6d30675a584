"""The foreground gate: background steps wait while someone holds it, never forever."""

from __future__ import annotations

import threading
import time

from companion.foreground import FOREGROUND, Foreground, hurried


def test_a_background_step_waits_until_the_hold_ends() -> None:
    gate = Foreground()
    waited: list[float] = []

    def background() -> None:
        started = time.monotonic()
        assert gate.wait(timeout=5)
        waited.append(time.monotonic() - started)

    with gate.hold():
        with gate.hold():  # holds nest: free only when the last ends
            worker = threading.Thread(target=background)
            worker.start()
            time.sleep(0.1)
        time.sleep(0.1)
        assert not waited and gate.held
    worker.join(5)
    assert waited and waited[0] >= 0.18 and not gate.held
    assert gate.wait(timeout=0)  # free: no wait at all


def test_a_hold_that_never_ends_delays_background_work_once() -> None:
    gate = Foreground()
    with gate.hold():
        started = time.monotonic()
        assert gate.wait(timeout=0.2) is False
        assert 0.15 < time.monotonic() - started < 1
        started = time.monotonic()
        assert gate.wait(timeout=0.2) is False  # the next steps go on at once
        assert time.monotonic() - started < 0.05


def test_hurried_holds_while_computing_and_never_while_handing_on() -> None:
    seen: list[bool] = []

    def chunks():
        for i in range(3):
            seen.append(FOREGROUND.held)  # computing this chunk
            yield i

    for _ in hurried(chunks()):
        assert not FOREGROUND.held
    assert seen == [True, True, True]
    stopped = hurried(chunks())
    next(stopped)  # a consumer that stops early (barge-in) leaves nothing held
    assert not FOREGROUND.held
