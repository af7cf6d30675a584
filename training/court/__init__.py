"""The review court: a community writes a character's lines and judges them.

    submit (question, her answer, optional state and mood) -> quality rules (training.cleaning)
      -> pending -> votes (approve / reject / skip, one per registered voter, never the author)
      -> approved (>60% approve) / rejected (>80% reject) after `min_votes` -> points
      -> export: approved -> SFT dialogues; votes -> preference pairs (DPO)

`store.Court` is the SQLite database (WAL, migrations); `rules` the checks and the verdict;
`tokens` the signed voter tokens and one-time ballots; `export` the training files.
`companion court ...` (companion/cli/court.py) and the /court pages of `companion serve`
(companion/frontends/court_pages.py) drive it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Court", "CourtError", "CourtSettings", "Submission", "User", "open_court"]


def __getattr__(name: str) -> Any:  # lazy: companion.config imports the settings on every start
    if name == "CourtSettings":
        from training.court.settings import CourtSettings

        return CourtSettings
    if name in __all__:
        from training.court import store

        return getattr(store, name)
    raise AttributeError(name)
