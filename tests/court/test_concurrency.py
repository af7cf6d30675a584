"""Real concurrent writers: processes with their own SQLite connections vote at once, and every
ballot is cast twice (the vote and its replay, racing in different processes)."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import threading
from collections import Counter

from tests.court.conftest import LINES, varied_line
from tests.court.workers import cast_many
from training.court.rules import decide
from training.court.settings import CourtSettings
from training.court.store import Court, CourtError


def verdict_for(voter: int, submission: int) -> str:
    h = int(hashlib.sha256(f"{voter}:{submission}".encode()).hexdigest(), 16) % 10
    return "approve" if h < 6 else "reject" if h < 9 else "skip"


def test_concurrent_voters_and_replays_in_processes(tmp_path):
    rules = CourtSettings(min_votes=6)
    court = Court(tmp_path / "court.db", rules)
    authors = [court.add_user(f"author{i}")[0] for i in range(3)]
    voters = [court.add_user(f"voter{i}") for i in range(16)]
    subs = []
    for i in range(24):
        subs.append(court.submit(authors[i % 3], "mochi", *varied_line(i)))
    tasks = []
    for v, (user, token) in enumerate(voters):
        for s in subs:
            tasks.append((token, court.ballot(user, s.id).token, verdict_for(v, s.id)))
    processes = 4
    chunks = [tasks[i::processes] for i in range(processes)]
    replays = [chunks[(i + 1) % processes] for i in range(processes)]  # every ballot goes to two processes
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        jobs = [
            pool.apply_async(cast_many, (str(court.path), rules.model_dump(), chunks[i] + replays[i], i))
            for i in range(processes)
        ]
        results = [r for job in jobs for r in job.get(timeout=300)]
    per_ballot: dict[str, Counter] = {}
    for ballot, outcome in results:
        per_ballot.setdefault(ballot, Counter())[outcome] += 1
    assert len(per_ballot) == len(tasks)
    for outcomes in per_ballot.values():
        assert sum(outcomes.values()) == 2
        assert outcomes["ok"] <= 1  # never counted twice
        assert set(outcomes) <= {"ok", "conflict"}  # replay, or the submission was decided first
    accepted = {b for b, o in results if o == "ok"}
    conn = sqlite3.connect(court.path)
    stored = {row[0] for row in conn.execute("SELECT ballot FROM votes")}
    assert stored == accepted  # no vote lost, none invented
    assert court.check_integrity() == []
    for s in court.submissions():
        if s.status == "pending":
            assert decide(s.approvals, s.rejections, rules) == "pending"
            assert s.votes + s.skips == len(voters)  # nobody was refused a pending vote
        else:
            assert decide(s.approvals, s.rejections, rules) == s.status
    decided = [s for s in court.submissions() if s.status != "pending"]
    assert decided, "the load should decide some submissions"
    ledger = sum(e["delta"] for e in court.ledger())
    assert ledger == sum(u.points for u in court.users())


def test_concurrent_threads_one_voter_one_submission(tmp_path):
    """Sixteen threads of one voter race fresh ballots for the same submission: one vote counts."""
    court = Court(tmp_path / "court.db", CourtSettings(min_votes=50))
    author = court.add_user("author")[0]
    voter, token = court.add_user("voter")
    s = court.submit(author, "mochi", *LINES[0])
    ballots = [court.ballot(voter, s.id).token for _ in range(16)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(ballots))

    def go(ballot: str) -> None:
        me = Court(court.path)  # its own connection, as another server worker would have
        user = me.authenticate(token)
        barrier.wait()
        try:
            me.vote(user, ballot, "approve")
            outcomes.append("ok")
        except CourtError as error:
            outcomes.append(str(error))
        me.close()

    threads = [threading.Thread(target=go, args=(b,)) for b in ballots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1
    assert all("already voted" in o for o in outcomes if o != "ok")
    assert court.submission(s.id).approvals == 1
