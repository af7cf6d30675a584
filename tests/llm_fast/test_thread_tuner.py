"""The decode thread tuner on simulated machines: it must keep all cores on an idle machine even
when a change of thread count makes the next step slow, and fall back to fewer cores when other
programs make the spinning workers stall each other."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from companion.llm.llamacpp import ThreadTuner, thread_candidates


def run(tuner: ThreadTuner, step_seconds: Callable[[int, bool], float], steps: int) -> Counter[int]:
    """Decode `steps` tokens; `step_seconds(threads, switched)` is what one step costs."""
    picks: Counter[int] = Counter()
    last = None
    for _ in range(steps):
        threads = tuner.next()
        tuner.record(threads, step_seconds(threads, threads != last))
        picks[threads] += 1
        last = threads
    return picks


def test_idle_machine_keeps_all_cores_although_a_switch_costs_a_slow_step():
    # 2 threads: 15 ms a token, but 60 ms on the step after a switch (workers waking); 1 thread: 25 ms
    def idle(threads: int, switched: bool) -> float:
        return (0.060 if switched else 0.015) if threads == 2 else 0.025

    tuner = ThreadTuner(thread_candidates(2))
    picks = run(tuner, idle, 1000)
    assert tuner.best() == 2
    assert picks[2] > 0.9 * 1000


def test_busy_machine_moves_to_one_thread_and_explores_rarely():
    def busy(threads: int, switched: bool) -> float:
        return 0.500 if threads == 2 else 0.060

    tuner = ThreadTuner(thread_candidates(2))
    picks = run(tuner, busy, 2000)
    assert tuner.best() == 1
    assert picks[2] < 0.05 * 2000


def test_it_follows_the_machine_when_the_load_goes_away():
    load = {"busy": True}

    def machine(threads: int, switched: bool) -> float:
        if load["busy"]:
            return 0.500 if threads == 2 else 0.060
        return 0.015 if threads == 2 else 0.025

    tuner = ThreadTuner(thread_candidates(2))
    run(tuner, machine, 500)
    assert tuner.best() == 1
    load["busy"] = False
    run(tuner, machine, 3000)
    assert tuner.best() == 2


def test_a_fixed_thread_count_is_never_changed():
    tuner = ThreadTuner([3])
    assert set(run(tuner, lambda threads, switched: 0.01, 50)) == {3}
