"""The review court's database: SQLite in WAL mode, schema migrations, one transaction per act.

Tables: `users` (name, token version, points, role), `submissions` (a question and the
character's answer, optional state and mood, vote counts, status), `votes` (one per voter and
submission, each carrying the ballot it spent), `points` (a ledger: every change of a user's
points, with the reason), `meta` (the signing secret). Every write runs in `BEGIN IMMEDIATE`,
so concurrent voters (threads or processes, each with its own connection) are serialised by
SQLite's write lock: a vote is counted once or refused, never lost.

Refusals raise `CourtError` with a `code` an HTTP frontend maps to a status:
`unauthorized` (bad or revoked token), `forbidden` (own submission, banned, barred by points),
`not_found`, `conflict` (double vote, ballot replay, already decided, duplicate), `invalid`
(quality rules; `problems` lists why).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from companion.errors import CompanionError
from training.court import tokens
from training.court.rules import VERDICTS, check_submission, decide, sided_with
from training.court.settings import CourtSettings
from training.dedupe import Deduplicator, exact_key

SCHEMA_VERSION = 2
STATUSES = ("pending", "approved", "rejected", "undecided", "withdrawn")
_NAME = re.compile(r"^[^\x00-\x1f\x7f<>&\"'/\\]{1,40}$")


class CourtError(CompanionError):
    def __init__(self, code: str, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.problems = problems or []


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- migrations ---------------------------------------------------------------------------------
def _m1(conn: sqlite3.Connection) -> None:
    for statement in (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            role TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'admin')),
            token_version INTEGER NOT NULL DEFAULT 1,
            points INTEGER NOT NULL DEFAULT 0,
            banned INTEGER NOT NULL DEFAULT 0,
            created TEXT NOT NULL)""",
        """CREATE TABLE submissions (
            id INTEGER PRIMARY KEY,
            character TEXT NOT NULL,
            author_id INTEGER NOT NULL REFERENCES users(id),
            question TEXT NOT NULL,
            answer TEXT NOT NULL,
            state TEXT,
            mood TEXT,
            qkey TEXT NOT NULL,
            dkey TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'approved', 'rejected', 'undecided', 'withdrawn')),
            approvals INTEGER NOT NULL DEFAULT 0,
            rejections INTEGER NOT NULL DEFAULT 0,
            skips INTEGER NOT NULL DEFAULT 0,
            created TEXT NOT NULL,
            decided TEXT,
            UNIQUE (character, dkey))""",
        "CREATE INDEX submissions_by_status ON submissions (character, status)",
        "CREATE INDEX submissions_by_author ON submissions (author_id, status)",
        """CREATE TABLE votes (
            submission_id INTEGER NOT NULL REFERENCES submissions(id),
            voter_id INTEGER NOT NULL REFERENCES users(id),
            verdict TEXT NOT NULL CHECK (verdict IN ('approve', 'reject', 'skip')),
            ballot TEXT NOT NULL UNIQUE,
            created TEXT NOT NULL,
            PRIMARY KEY (submission_id, voter_id))""",
        "CREATE INDEX votes_by_voter ON votes (voter_id)",
        """CREATE TABLE points (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            submission_id INTEGER REFERENCES submissions(id),
            delta INTEGER NOT NULL,
            reason TEXT NOT NULL,
            created TEXT NOT NULL)""",
    ):
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('secret', ?)", (secrets.token_hex(32),))
    conn.execute("INSERT INTO meta VALUES ('created', ?)", (_now(),))


def _m2(conn: sqlite3.Connection) -> None:
    """PII replaced at submission time, kept for the moderators' view."""
    conn.execute("ALTER TABLE submissions ADD COLUMN notes TEXT NOT NULL DEFAULT '{}'")
    conn.execute("CREATE INDEX points_by_user ON points (user_id)")


MIGRATIONS: list[tuple[int, Callable[[sqlite3.Connection], None]]] = [(1, _m1), (2, _m2)]


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    points: int
    banned: bool
    token_version: int
    created: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role, "points": self.points}


@dataclass(frozen=True)
class Submission:
    id: int
    character: str
    author_id: int
    author: str
    question: str
    answer: str
    state: str | None
    mood: str | None
    status: str
    approvals: int
    rejections: int
    skips: int
    created: str
    decided: str | None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def votes(self) -> int:
        return self.approvals + self.rejections

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "character": self.character,
            "author": self.author,
            "question": self.question,
            "answer": self.answer,
            "state": self.state,
            "mood": self.mood,
            "status": self.status,
            "approvals": self.approvals,
            "rejections": self.rejections,
            "skips": self.skips,
            "created": self.created,
            "decided": self.decided,
        }


@dataclass(frozen=True)
class VoteResult:
    submission_id: int
    verdict: str
    status: str
    decided_now: bool
    approvals: int
    rejections: int
    skips: int


_SUBMISSION_COLUMNS = (
    "s.id, s.character, s.author_id, u.name, s.question, s.answer, s.state, s.mood, s.status, "
    "s.approvals, s.rejections, s.skips, s.created, s.decided, s.notes"
)


def _submission(row: tuple) -> Submission:
    return Submission(*row[:-1], notes=json.loads(row[-1] or "{}"))


def _user(row: tuple) -> User:
    uid, name, role, points, banned, version, created = row
    return User(uid, name, role, points, bool(banned), version, created)


def question_key(question: str, state: str | None, mood: str | None) -> str:
    """Answers to the same question in the same state and mood compete with each other."""
    return exact_key(f"{question}\x1f{state or ''}\x1f{mood or ''}")


class Court:
    """One court database. Safe to share between threads (a connection per thread)."""

    def __init__(self, path: Path, rules: CourtSettings | None = None, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.rules = rules or CourtSettings()
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._dedupe: dict[str, tuple[Deduplicator, int]] = {}
        self._dedupe_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()
        self.key = bytes.fromhex(self._meta("secret"))

    # -- connections and transactions -------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise CourtError("invalid", f"{self.path}: SQLite refused WAL mode ({mode}); use a local disk")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        try:
            with self._write() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise CourtError(
                        "invalid",
                        f"{self.path}: court database schema {version} is newer than this companion "
                        f"({SCHEMA_VERSION}): upgrade companion",
                    )
                for number, migration in MIGRATIONS:
                    if number > version:
                        migration(conn)
                        conn.execute(f"PRAGMA user_version = {number}")
        except sqlite3.DatabaseError as error:
            raise CourtError("invalid", f"{self.path}: not a court database ({error})") from None

    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    def _meta(self, key: str) -> str:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise CourtError("invalid", f"{self.path}: court database has no {key}")
        return row[0]

    # -- users ------------------------------------------------------------------------------
    def add_user(self, name: str, role: str = "member") -> tuple[User, str]:
        """Register a user; returns the user and their token (shown once: keep it)."""
        name = name.strip()
        if not _NAME.match(name):
            raise CourtError("invalid", "a user name is 1-40 characters, without control characters, <>&\"'/\\")
        if role not in ("member", "admin"):
            raise CourtError("invalid", "role is member or admin")
        try:
            with self._write() as conn:
                cursor = conn.execute("INSERT INTO users (name, role, created) VALUES (?, ?, ?)", (name, role, _now()))
                user_id = int(cursor.lastrowid or 0)
        except sqlite3.IntegrityError:
            raise CourtError("conflict", f"the user name {name!r} is taken") from None
        user = self.user(user_id)
        return user, tokens.user_token(self.key, user.id, user.token_version)

    def token_for(self, name: str, *, rotate: bool = False) -> str:
        """A user's token (rotating revokes every earlier one)."""
        user = self.user_named(name)
        if rotate:
            with self._write() as conn:
                conn.execute("UPDATE users SET token_version = token_version + 1 WHERE id = ?", (user.id,))
            user = self.user(user.id)
        return tokens.user_token(self.key, user.id, user.token_version)

    def set_banned(self, name: str, banned: bool = True) -> User:
        user = self.user_named(name)
        with self._write() as conn:
            conn.execute("UPDATE users SET banned = ? WHERE id = ?", (int(banned), user.id))
        return self.user(user.id)

    def user(self, user_id: int) -> User:
        row = (
            self._conn()
            .execute(
                "SELECT id, name, role, points, banned, token_version, created FROM users WHERE id = ?", (user_id,)
            )
            .fetchone()
        )
        if row is None:
            raise CourtError("not_found", f"no user #{user_id}")
        return _user(row)

    def user_named(self, name: str) -> User:
        row = (
            self._conn()
            .execute(
                "SELECT id, name, role, points, banned, token_version, created FROM users WHERE name = ?",
                (name.strip(),),
            )
            .fetchone()
        )
        if row is None:
            raise CourtError("not_found", f"no user named {name!r} (add one with `companion court user add`)")
        return _user(row)

    def users(self) -> list[User]:
        rows = (
            self._conn()
            .execute("SELECT id, name, role, points, banned, token_version, created FROM users ORDER BY id")
            .fetchall()
        )
        return [_user(r) for r in rows]

    def authenticate(self, token: str | None) -> User:
        """The registered user a token belongs to; refused when forged, revoked or banned."""
        if not token:
            raise CourtError("unauthorized", "a court token is required (`companion court user add NAME` makes one)")
        try:
            user_id, version = tokens.read_user_token(self.key, token)
        except tokens.TokenError as error:
            raise CourtError("unauthorized", str(error)) from None
        try:
            user = self.user(user_id)
        except CourtError:
            raise CourtError("unauthorized", "the token names no registered user") from None
        if user.token_version != version:
            raise CourtError("unauthorized", "this token was revoked (a newer one was issued)")
        if user.banned:
            raise CourtError("forbidden", f"{user.name} is banned from the court")
        return user

    def leaderboard(self, limit: int = 20) -> list[User]:
        rows = (
            self._conn()
            .execute(
                "SELECT id, name, role, points, banned, token_version, created FROM users WHERE banned = 0 "
                "ORDER BY points DESC, id LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return [_user(r) for r in rows]

    def ledger(self, user_id: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT user_id, submission_id, delta, reason, created FROM points"
        args: tuple = ()
        if user_id is not None:
            sql += " WHERE user_id = ?"
            args = (user_id,)
        keys = ("user_id", "submission_id", "delta", "reason", "created")
        return [dict(zip(keys, row, strict=True)) for row in self._conn().execute(sql + " ORDER BY id", args)]

    # -- submissions ------------------------------------------------------------------------
    def _near_duplicate(self, conn: sqlite3.Connection, character: str, text: str) -> str | None:
        """'near' when `text` is close to an earlier submission for the character; remembers it otherwise."""
        with self._dedupe_lock:
            dedupe, last = self._dedupe.get(character) or (Deduplicator(self.rules.near_duplicate_threshold), 0)
            rows = conn.execute(
                "SELECT id, question, answer FROM submissions WHERE character = ? AND id > ? ORDER BY id",
                (character, last),
            ).fetchall()
            for row_id, question, answer in rows:
                dedupe.check(f"{question}\n{answer}")
                last = row_id
            verdict = dedupe.check(text)
            self._dedupe[character] = (dedupe, last)
            return verdict

    def submit(
        self,
        user: User,
        character: str,
        question: str,
        answer: str,
        *,
        state: str | None = None,
        mood: str | None = None,
        public_text: str = "",
    ) -> Submission:
        """Check with the quality rules and store for review; CourtError('invalid') lists the problems."""
        character = character.strip()
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", character):
            raise CourtError("invalid", f"invalid character id {character!r}")
        checked = check_submission(question, answer, state, mood, self.rules, public_text=public_text)
        if not checked.ok:
            raise CourtError("invalid", "refused: " + "; ".join(checked.problems), checked.problems)
        qkey = question_key(checked.question, checked.state, checked.mood)
        dkey = exact_key(f"{qkey}\x1e{checked.answer}")
        notes = json.dumps({"pii_replaced": dict(checked.pii)} if checked.pii else {}, ensure_ascii=False)
        with self._write() as conn:
            points, banned = conn.execute("SELECT points, banned FROM users WHERE id = ?", (user.id,)).fetchone()
            if banned:
                raise CourtError("forbidden", f"{user.name} is banned from the court")
            if points < self.rules.min_points_to_submit:
                raise CourtError(
                    "forbidden", f"{user.name} has {points} points (rejected submissions): below the floor to submit"
                )
            pending = conn.execute(
                "SELECT COUNT(*) FROM submissions WHERE author_id = ? AND status = 'pending'", (user.id,)
            ).fetchone()[0]
            if pending >= self.rules.max_pending_per_user:
                raise CourtError(
                    "forbidden", f"{user.name} already has {pending} submissions waiting for votes: wait for verdicts"
                )
            same = conn.execute(
                "SELECT id FROM submissions WHERE character = ? AND dkey = ?", (character, dkey)
            ).fetchone()
            if same:
                raise CourtError("conflict", f"duplicate of submission #{same[0]}")
            text = f"{checked.question}\n{checked.answer}"
            if self._near_duplicate(conn, character, text):
                raise CourtError("conflict", "too close to an earlier submission for this character")
            cursor = conn.execute(
                "INSERT INTO submissions (character, author_id, question, answer, state, mood, qkey, dkey, created,"
                " notes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (character, user.id, checked.question, checked.answer, checked.state, checked.mood, qkey, dkey,
                 _now(), notes),
            )  # fmt: skip
            submission_id = int(cursor.lastrowid or 0)
        return self.submission(submission_id)

    def submission(self, submission_id: int) -> Submission:
        row = (
            self._conn()
            .execute(
                f"SELECT {_SUBMISSION_COLUMNS} FROM submissions s JOIN users u ON u.id = s.author_id WHERE s.id = ?",
                (submission_id,),
            )
            .fetchone()
        )
        if row is None:
            raise CourtError("not_found", f"no submission #{submission_id}")
        return _submission(row)

    def submissions(
        self,
        *,
        character: str | None = None,
        status: str | None = None,
        author_id: int | None = None,
        limit: int | None = None,
    ) -> list[Submission]:
        where, args = [], []
        for column, value in (("s.character", character), ("s.status", status), ("s.author_id", author_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {_SUBMISSION_COLUMNS} FROM submissions s JOIN users u ON u.id = s.author_id"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY s.id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_submission(r) for r in self._conn().execute(sql, args)]

    def characters(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT DISTINCT character FROM submissions ORDER BY character")]

    def withdraw(self, user: User, submission_id: int) -> Submission:
        with self._write() as conn:
            row = conn.execute("SELECT author_id, status FROM submissions WHERE id = ?", (submission_id,)).fetchone()
            if row is None:
                raise CourtError("not_found", f"no submission #{submission_id}")
            if row[0] != user.id and user.role != "admin":
                raise CourtError("forbidden", "only the author (or an admin) may withdraw a submission")
            if row[1] != "pending":
                raise CourtError("conflict", f"submission #{submission_id} is already {row[1]}")
            conn.execute(
                "UPDATE submissions SET status = 'withdrawn', decided = ? WHERE id = ?", (_now(), submission_id)
            )
        return self.submission(submission_id)

    # -- review and votes -------------------------------------------------------------------
    def next_for_review(self, user: User, character: str | None = None) -> Submission | None:
        """The pending submission this user may vote on that is closest to a verdict (then the oldest)."""
        sql = (
            f"SELECT {_SUBMISSION_COLUMNS} FROM submissions s JOIN users u ON u.id = s.author_id "
            "WHERE s.status = 'pending' AND s.author_id != ? "
            "AND NOT EXISTS (SELECT 1 FROM votes v WHERE v.submission_id = s.id AND v.voter_id = ?)"
        )
        args: list[Any] = [user.id, user.id]
        if character:
            sql += " AND s.character = ?"
            args.append(character)
        sql += " ORDER BY (s.approvals + s.rejections) DESC, s.id LIMIT 1"
        row = self._conn().execute(sql, args).fetchone()
        return _submission(row) if row else None

    def ballot(self, user: User, submission_id: int) -> tokens.Ballot:
        """The one-time right to vote on a submission (refused where the vote would be)."""
        submission = self.submission(submission_id)
        self._check_can_vote(self._conn(), user.id, submission.id, submission.author_id, submission.status)
        return tokens.new_ballot(self.key, user.id, submission.id, self.rules.ballot_ttl_s)

    @staticmethod
    def _check_can_vote(conn: sqlite3.Connection, voter_id: int, submission_id: int, author_id: int, status: str):
        if author_id == voter_id:
            raise CourtError("forbidden", "no one votes on their own submission")
        if status != "pending":
            raise CourtError("conflict", f"submission #{submission_id} is already {status}")
        if conn.execute(
            "SELECT 1 FROM votes WHERE submission_id = ? AND voter_id = ?", (submission_id, voter_id)
        ).fetchone():
            raise CourtError("conflict", f"you already voted on submission #{submission_id}")

    def vote(self, user: User, ballot_token: str, verdict: str) -> VoteResult:
        """Cast `verdict` with a ballot issued to `user`. Decides the submission when the votes say so."""
        if verdict not in VERDICTS:
            raise CourtError("invalid", f"a vote is one of {', '.join(VERDICTS)}")
        try:
            ballot = tokens.read_ballot(self.key, ballot_token)
        except tokens.TokenError as error:
            raise CourtError("unauthorized", str(error)) from None
        if ballot.voter_id != user.id:
            raise CourtError("unauthorized", "this ballot was issued to another voter")
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM votes WHERE ballot = ?", (ballot.token,)).fetchone():
                raise CourtError("conflict", "this ballot was already used (replayed vote refused)")
            voter = conn.execute("SELECT banned, token_version FROM users WHERE id = ?", (user.id,)).fetchone()
            if voter is None or voter[1] != user.token_version:
                raise CourtError("unauthorized", "the voter's token is no longer valid")
            if voter[0]:
                raise CourtError("forbidden", f"{user.name} is banned from the court")
            row = conn.execute(
                "SELECT author_id, status, approvals, rejections, skips FROM submissions WHERE id = ?",
                (ballot.submission_id,),
            ).fetchone()
            if row is None:
                raise CourtError("not_found", f"no submission #{ballot.submission_id}")
            author_id, status, approvals, rejections, skips = row
            self._check_can_vote(conn, user.id, ballot.submission_id, author_id, status)
            conn.execute(
                "INSERT INTO votes (submission_id, voter_id, verdict, ballot, created) VALUES (?, ?, ?, ?, ?)",
                (ballot.submission_id, user.id, verdict, ballot.token, _now()),
            )
            approvals += verdict == "approve"
            rejections += verdict == "reject"
            skips += verdict == "skip"
            outcome = decide(approvals, rejections, self.rules)
            conn.execute(
                "UPDATE submissions SET approvals = ?, rejections = ?, skips = ?, status = ?, decided = ? WHERE id = ?",
                (approvals, rejections, skips, outcome, None if outcome == "pending" else _now(), ballot.submission_id),
            )
            if outcome != "pending":
                self._award(conn, ballot.submission_id, author_id, outcome)
        return VoteResult(ballot.submission_id, verdict, outcome, outcome != "pending", approvals, rejections, skips)

    def _award(self, conn: sqlite3.Connection, submission_id: int, author_id: int, outcome: str) -> None:
        changes: list[tuple[int, int, str]] = []
        if outcome == "approved" and self.rules.author_points:
            changes.append((author_id, self.rules.author_points, "author: approved"))
        elif outcome == "rejected" and self.rules.spam_penalty:
            changes.append((author_id, -self.rules.spam_penalty, "author: rejected"))
        if self.rules.voter_points:
            for voter_id, verdict in conn.execute(
                "SELECT voter_id, verdict FROM votes WHERE submission_id = ? ORDER BY voter_id", (submission_id,)
            ).fetchall():
                if sided_with(verdict, outcome):
                    changes.append((voter_id, self.rules.voter_points, f"voter: sided with {outcome}"))
        now = _now()
        for user_id, delta, reason in changes:
            conn.execute(
                "INSERT INTO points (user_id, submission_id, delta, reason, created) VALUES (?, ?, ?, ?, ?)",
                (user_id, submission_id, delta, reason, now),
            )
            conn.execute("UPDATE users SET points = points + ? WHERE id = ?", (delta, user_id))

    def votes(self, submission_id: int | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT v.submission_id, u.name, v.voter_id, v.verdict, v.created FROM votes v "
            "JOIN users u ON u.id = v.voter_id"
        )
        args: tuple = ()
        if submission_id is not None:
            sql += " WHERE v.submission_id = ?"
            args = (submission_id,)
        keys = ("submission_id", "voter", "voter_id", "verdict", "created")
        return [dict(zip(keys, row, strict=True)) for row in self._conn().execute(sql + " ORDER BY v.rowid", args)]

    # -- summaries --------------------------------------------------------------------------
    def stats(self, character: str | None = None) -> dict[str, Any]:
        conn = self._conn()
        where, args = ("WHERE character = ?", (character,)) if character else ("", ())
        by_status = dict(conn.execute(f"SELECT status, COUNT(*) FROM submissions {where} GROUP BY status", args))
        votes = conn.execute(
            "SELECT COUNT(*) FROM votes v JOIN submissions s ON s.id = v.submission_id"
            + (" WHERE s.character = ?" if character else ""),
            args,
        ).fetchone()[0]
        return {
            "character": character,
            "submissions": {s: by_status.get(s, 0) for s in STATUSES},
            "votes": votes,
            "users": conn.execute("SELECT COUNT(*) FROM users").fetchone()[0],
        }

    def check_integrity(self) -> list[str]:
        """Cross-checks: stored counts equal the votes table, points equal the ledger, statuses
        follow the rules. Returns the problems found (empty when consistent)."""
        conn = self._conn()
        problems = []
        for sid, status, a, r, s, va, vr, vs in conn.execute(
            "SELECT s.id, s.status, s.approvals, s.rejections, s.skips, "
            "COALESCE(SUM(v.verdict = 'approve'), 0), COALESCE(SUM(v.verdict = 'reject'), 0), "
            "COALESCE(SUM(v.verdict = 'skip'), 0) FROM submissions s LEFT JOIN votes v ON v.submission_id = s.id "
            "GROUP BY s.id"
        ):
            if (a, r, s) != (va, vr, vs):
                problems.append(f"#{sid}: stored counts {(a, r, s)} but votes table {(va, vr, vs)}")
            if status == "pending" and decide(a, r, self.rules) != "pending":
                problems.append(f"#{sid}: status {status} but the votes say {decide(a, r, self.rules)}")
        for uid, points, ledger in conn.execute(
            "SELECT u.id, u.points, COALESCE(SUM(p.delta), 0) FROM users u LEFT JOIN points p ON p.user_id = u.id "
            "GROUP BY u.id"
        ):
            if points != ledger:
                problems.append(f"user #{uid}: points {points} but ledger sums to {ledger}")
        return problems


def open_court(settings: Any) -> Court:
    """The court of these settings (`settings.court.db`, default <data_dir>/court/court.db)."""
    rules: CourtSettings = getattr(settings, "court", None) or CourtSettings()
    path = rules.db or Path(settings.data_dir) / "court" / "court.db"
    return Court(Path(path).expanduser(), rules)
