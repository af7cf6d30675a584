"""`[court]` in the config file: where the review court keeps its database, and its rules."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class CourtSettings(BaseModel):
    """The review court: a community writes a character's lines and votes on them."""

    db: Path | None = None
    """SQLite file (default: <data_dir>/court/court.db). One file serves every character."""
    min_votes: int = Field(3, ge=1)
    """Approve and reject votes (skips excluded) needed before a submission can be decided."""
    approve_ratio: float = Field(0.6, ge=0, lt=1)
    """Approved when more than this share of its approve+reject votes approve."""
    reject_ratio: float = Field(0.8, ge=0, lt=1)
    """Rejected when more than this share of its approve+reject votes reject."""
    max_votes: int = Field(0, ge=0)
    """Approve+reject votes after which a submission still undecided is closed as `undecided` (0: never)."""
    author_points: int = 10
    """Points for the author of an approved submission."""
    voter_points: int = 1
    """Points for each voter who sided with the final outcome."""
    spam_penalty: int = 5
    """Points taken from the author of a rejected submission."""
    min_points_to_submit: int = -20
    """Authors whose points fell below this (rejected spam) may no longer submit."""
    max_pending_per_user: int = Field(50, ge=1)
    """Submissions one author may have waiting for votes at a time."""
    max_answer_chars: int = Field(1000, ge=10)
    max_question_chars: int = Field(500, ge=5)
    max_note_chars: int = Field(60, ge=1)
    """Longest `state` and `mood` note."""
    near_duplicate_threshold: float = Field(0.85, gt=0, le=1)
    """A submission this similar (MinHash Jaccard) to an earlier one for the same character is refused."""
    ballot_ttl_s: int = Field(3600, ge=10)
    """How long a ballot (the one-time right to vote on one submission) stays valid."""
    open_registration: bool = False
    """Let anyone create an account on the web pages (otherwise: `companion court user add`)."""
