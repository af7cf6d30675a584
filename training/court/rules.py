"""What a submission must be to go to review, and how votes decide it.

A submission is checked with the data pipeline's quality rules (`training.cleaning`) before it
is accepted: system/app noise and repeated-character spam are refused, PII is replaced by
placeholders (the stored text is the scrubbed one), the question must ask something, the answer
must answer with some substance and not repeat the question; lengths are bounded. Near copies
of an earlier submission for the same character are refused by the store.

Deciding: only approve and reject votes count (a skip means "not for me", and only stops the
submission coming back to that voter). Once at least `min_votes` of them are in, a submission
is approved when more than `approve_ratio` of them approve, rejected when more than
`reject_ratio` reject; with `max_votes` set, one still undecided at that many is closed as
`undecided`. Points then go to the author (approved: +author_points; rejected: -spam_penalty)
and to every voter whose vote matched the outcome (+voter_points).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from training.cleaning import NOISE, CleanConfig, answer_problem, asks_something, is_spam, normalize_text
from training.court.settings import CourtSettings
from training.pii import scrub

VERDICTS = ("approve", "reject", "skip")


@dataclass
class Checked:
    """A submission after the quality rules: cleaned text, or the reasons it is refused."""

    question: str
    answer: str
    state: str | None
    mood: str | None
    problems: list[str] = field(default_factory=list)
    pii: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems


def _note(value: str | None, what: str, limit: int, problems: list[str]) -> str | None:
    if value is None:
        return None
    text = " ".join(normalize_text(value).split())
    if not text:
        return None
    if len(text) > limit:
        problems.append(f"{what} is longer than {limit} characters")
    return text


def check_submission(
    question: str,
    answer: str,
    state: str | None,
    mood: str | None,
    rules: CourtSettings,
    *,
    public_text: str = "",
) -> Checked:
    problems: list[str] = []
    pii: Counter[str] = Counter()
    config = CleanConfig(public_text=public_text)
    q, a = normalize_text(question or ""), normalize_text(answer or "")
    if not q:
        problems.append("the question is empty")
    if not a:
        problems.append("the answer is empty")
    if len(q) > rules.max_question_chars:
        problems.append(f"the question is longer than {rules.max_question_chars} characters")
    if len(a) > rules.max_answer_chars:
        problems.append(f"the answer is longer than {rules.max_answer_chars} characters")
    for what, text in (("question", q), ("answer", a)):
        for reason, pattern in NOISE:
            if text and pattern.search(text):
                problems.append(f"the {what} looks like {reason}")
        if text and is_spam(text, config.spam_repeats):
            problems.append(f"the {what} is repeated-character spam")
    state_text = _note(state, "state", rules.max_note_chars, problems)
    mood_text = _note(mood, "mood", rules.max_note_chars, problems)
    if q and a and not problems:
        if not asks_something(q):
            problems.append("the question asks nothing (end it with ? or ask who/what/why/how)")
        if problem := answer_problem(q, a, config):
            problems.append(problem)
    q, a = scrub(q, pii, public_text), scrub(a, pii, public_text)
    if state_text:
        state_text = scrub(state_text, pii, public_text)
    if mood_text:
        mood_text = scrub(mood_text, pii, public_text)
    return Checked(question=q, answer=a, state=state_text, mood=mood_text, problems=problems, pii=pii)


def decide(approvals: int, rejections: int, rules: CourtSettings) -> str:
    """'approved', 'rejected', 'undecided' (closed at max_votes) or 'pending'."""
    counted = approvals + rejections
    if counted < rules.min_votes:
        return "pending"
    if approvals / counted > rules.approve_ratio:
        return "approved"
    if rejections / counted > rules.reject_ratio:
        return "rejected"
    if rules.max_votes and counted >= rules.max_votes:
        return "undecided"
    return "pending"


def sided_with(verdict: str, outcome: str) -> bool:
    return (verdict, outcome) in (("approve", "approved"), ("reject", "rejected"))
