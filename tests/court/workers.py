"""Worker processes for the concurrent-voter tests: each opens its own connection to the court."""

from __future__ import annotations

import random
from pathlib import Path

from training.court.settings import CourtSettings
from training.court.store import Court, CourtError


def cast_many(path: str, rules: dict, tasks: list[tuple[str, str, str]], seed: int) -> list[tuple[str, str]]:
    """Cast (user token, ballot, verdict) tasks in a shuffled order; returns (ballot, "ok" or error code)."""
    court = Court(Path(path), CourtSettings(**rules))
    users: dict[str, object] = {}
    order = list(tasks)
    random.Random(seed).shuffle(order)
    results = []
    for token, ballot, verdict in order:
        user = users.get(token) or users.setdefault(token, court.authenticate(token))
        try:
            court.vote(user, ballot, verdict)  # type: ignore[arg-type]
            results.append((ballot, "ok"))
        except CourtError as error:
            results.append((ballot, error.code))
    court.close()
    return results
