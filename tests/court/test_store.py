"""The court's rules on the real SQLite database: verdicts, points, refusals, migrations."""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.court.conftest import LINES, cast
from training.court import tokens
from training.court.settings import CourtSettings
from training.court.store import MIGRATIONS, SCHEMA_VERSION, Court, CourtError


def submit(court, user, n=0, **kw):
    q, a = LINES[n]
    return court.submit(user, "mochi", q, a, **kw)


def test_database_is_wal_and_migrated(court: Court):
    conn = sqlite3.connect(court.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == court.schema_version()
    conn.close()
    again = Court(court.path, court.rules)  # reopening is idempotent and keeps the secret
    assert again.key == court.key


def test_old_schema_migrates_keeping_data(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    MIGRATIONS[0][1](conn)  # schema 1 only, as an older release left it
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO users (name, created) VALUES ('old', 'then')")
    conn.execute("COMMIT")
    conn.close()
    court = Court(path)
    assert court.schema_version() == SCHEMA_VERSION
    assert court.user_named("old").name == "old"
    _, token = court.add_user("new")
    s = court.submit(court.authenticate(token), "mochi", *LINES[0])
    assert s.notes == {}


def test_newer_schema_and_garbage_are_refused(tmp_path):
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(CourtError, match="newer than this companion"):
        Court(newer)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CourtError, match="not a court database"):
        Court(garbage)


def test_approved_above_60_percent_after_min_votes(court, people):
    ann = people["ann"][0]
    s = submit(court, ann)
    assert cast(court, people["bo"][0], s.id, "approve").status == "pending"
    assert cast(court, people["cy"][0], s.id, "skip").status == "pending"  # skips do not count
    assert cast(court, people["di"][0], s.id, "approve").status == "pending"  # 2 votes < min 3
    result = cast(court, people["ed"][0], s.id, "reject")  # 2/3 = 67% > 60%
    assert (result.status, result.decided_now, result.approvals, result.rejections, result.skips) == (
        "approved",
        True,
        2,
        1,
        1,
    )
    with pytest.raises(CourtError, match="already approved") as refused:
        cast(court, people["flo"][0], s.id, "approve")
    assert refused.value.code == "conflict"


def test_exactly_60_percent_is_not_enough_and_80_percent_reject_is_not_rejected(tmp_path):
    court = Court(tmp_path / "c.db", CourtSettings(min_votes=5))
    users = [court.add_user(f"u{i}")[0] for i in range(12)]
    s = court.submit(users[0], "mochi", *LINES[0])
    for u, v in zip(users[1:6], ["approve"] * 3 + ["reject"] * 2, strict=True):
        result = cast(court, u, s.id, v)
    assert result.status == "pending"  # 3/5 = 60%: not more than 60%
    s2 = court.submit(users[0], "mochi", *LINES[1])
    for u, v in zip(users[1:6], ["reject"] * 4 + ["approve"], strict=True):
        result = cast(court, u, s2.id, v)
    assert result.status == "pending"  # 4/5 = 80%: not more than 80%
    assert cast(court, users[6], s2.id, "reject").status == "rejected"  # 5/6 = 83%


def test_points_for_authors_and_voters_who_sided_with_the_outcome(court, people):
    ann, bo, cy, di, ed = (people[n][0] for n in ("ann", "bo", "cy", "di", "ed"))
    good = submit(court, ann, 0)
    for u, v in ((bo, "approve"), (ed, "skip"), (cy, "approve"), (di, "reject")):
        result = cast(court, u, good.id, v)
    assert result.status == "approved"  # 2 of 3 counted votes
    spam = court.submit(bo, "mochi", "你是谁？", "我是全宇宙最便宜的代购，加我微信领优惠券哦")
    for u in (ann, cy, di):
        cast(court, u, spam.id, "reject")
    points = {u.name: u.points for u in court.users()}
    # ann: +10 authored approved, +1 sided with rejected; bo: +1 sided with approved, -5 rejected spam
    assert points == {"ann": 11, "bo": -4, "cy": 2, "di": 1, "ed": 0, "flo": 0}
    assert court.check_integrity() == []
    reasons = {(e["user_id"], e["reason"]) for e in court.ledger()}
    assert (bo.id, "author: rejected") in reasons and (ann.id, "author: approved") in reasons


def test_no_self_votes_no_double_votes_no_replays(court, people):
    (ann, _), (bo, _), (cy, _) = people["ann"], people["bo"], people["cy"]
    s = submit(court, ann)
    with pytest.raises(CourtError, match="own submission") as refused:
        court.ballot(ann, s.id)
    assert refused.value.code == "forbidden"
    # a ballot forged for the author by someone else's hand is refused at vote time too
    forged = tokens.new_ballot(court.key, ann.id, s.id, 60)
    with pytest.raises(CourtError, match="own submission"):
        court.vote(ann, forged.token, "approve")
    ballot = court.ballot(bo, s.id)
    court.vote(bo, ballot.token, "approve")
    with pytest.raises(CourtError, match="replayed") as replay:
        court.vote(bo, ballot.token, "approve")
    assert replay.value.code == "conflict"
    with pytest.raises(CourtError, match="already voted"):
        court.ballot(bo, s.id)
    second = tokens.new_ballot(court.key, bo.id, s.id, 60)  # even a fresh valid ballot
    with pytest.raises(CourtError, match="already voted"):
        court.vote(bo, second.token, "reject")
    with pytest.raises(CourtError, match="another voter"):
        court.vote(cy, court.ballot(bo, submit(court, ann, 1).id).token, "approve")
    assert court.submission(s.id).approvals == 1 and court.check_integrity() == []


def test_forged_altered_expired_and_revoked_tokens_are_refused(court, people, tmp_path):
    (ann, ann_token), (bo, bo_token) = people["ann"], people["bo"]
    s = submit(court, ann)
    # a user token naming another id, with a signature copied from a real token
    _, version, sig = bo_token.split(".")[1:]
    with pytest.raises(CourtError, match="signature") as forged:
        court.authenticate(f"cu1.{people['cy'][0].id}.{version}.{sig}")
    assert forged.value.code == "unauthorized"
    # a token signed by another court's secret
    other = Court(tmp_path / "other.db")
    _, foreign = other.add_user("bo")
    with pytest.raises(CourtError, match="signature"):
        court.authenticate(foreign)
    for junk in ("", "cu1.x.1.y", "hello", "cu1.99999.1.AAAA"):
        with pytest.raises(CourtError):
            court.authenticate(junk)
    # ballots: altered submission id, expired, garbage
    ballot = court.ballot(bo, s.id)
    parts = ballot.token.split(".")
    parts[2] = str(s.id + 1)
    with pytest.raises(CourtError, match="signature"):
        court.vote(bo, ".".join(parts), "approve")
    expired = tokens.new_ballot(court.key, bo.id, s.id, 10, now=time.time() - 60)
    with pytest.raises(CourtError, match="expired"):
        court.vote(bo, expired.token, "approve")
    with pytest.raises(CourtError, match="not a ballot"):
        court.vote(bo, "approve", "approve")
    with pytest.raises(CourtError, match="one of"):
        court.vote(bo, ballot.token, "maybe")
    # rotating a token revokes the old one
    fresh = court.token_for("bo", rotate=True)
    with pytest.raises(CourtError, match="revoked"):
        court.authenticate(bo_token)
    assert court.authenticate(fresh).name == "bo"
    with pytest.raises(CourtError, match="no longer valid"):
        court.vote(bo, ballot.token, "approve")  # the old identity object is stale too
    court.set_banned("ann")
    with pytest.raises(CourtError, match="banned"):
        court.authenticate(ann_token)
    assert court.submission(s.id).votes == 0


def test_quality_rules_check_submissions(court, people):
    ann = people["ann"][0]
    cases = {
        ("你好", "你好呀，今天过得怎么样？"): "asks nothing",
        ("你喜欢什么？", "不知道"): "non-answer",
        ("你喜欢什么？", "你喜欢什么？"): "repeats the question",
        ("你喜欢什么？", "哈" * 30): "spam",
        ("你喜欢什么？", "复制这段内容打开淘宝 ￥AbCdEfGh12￥"): "shopping code",
        ("", "好的呀好的呀"): "empty",
        ("你喜欢什么？", "喜" * 1001): "longer than",
    }
    for (q, a), reason in cases.items():
        with pytest.raises(CourtError) as refused:
            court.submit(ann, "mochi", q, a)
        assert refused.value.code == "invalid"
        assert any(reason in p for p in refused.value.problems), (q, a, refused.value.problems)
    with pytest.raises(CourtError, match="mood is longer"):
        court.submit(ann, "mochi", *LINES[0], mood="开" * 61)
    s = court.submit(ann, "mochi", "你的电话是多少？", "我的手机号是13812345678，有事打给我呀。")
    assert "13812345678" not in s.answer and s.notes["pii_replaced"]
    assert court.submissions() == [court.submission(s.id)]  # nothing refused was stored


def test_duplicates_are_refused(court, people):
    ann, bo = people["ann"][0], people["bo"][0]
    first = submit(court, ann, 0)
    with pytest.raises(CourtError, match=f"duplicate of submission #{first.id}"):
        court.submit(bo, "mochi", LINES[0][0], LINES[0][1] + "！！")
    with pytest.raises(CourtError, match="too close"):
        court.submit(bo, "mochi", LINES[0][0], LINES[0][1] + "呀")
    court.submit(bo, "other", *LINES[0])  # another character: fine
    sad = court.submit(ann, "mochi", LINES[0][0], "今天什么都不想吃，连糯米糍都没胃口了。", mood="难过")
    assert sad.mood == "难过"


def test_spammers_fall_below_the_floor_and_pending_is_capped(tmp_path):
    court = Court(tmp_path / "c.db", CourtSettings(min_votes=1, spam_penalty=15, min_points_to_submit=-20))
    spammer = court.add_user("spammer")[0]
    judge = court.add_user("judge")[0]
    for n in range(2):
        s = court.submit(spammer, "mochi", *LINES[n])
        cast(court, judge, s.id, "reject")
    with pytest.raises(CourtError, match="below the floor") as barred:
        court.submit(court.user(spammer.id), "mochi", *LINES[2])
    assert barred.value.code == "forbidden"
    capped = Court(tmp_path / "d.db", CourtSettings(max_pending_per_user=2))
    eager = capped.add_user("eager")[0]
    capped.submit(eager, "mochi", *LINES[0])
    capped.submit(eager, "mochi", *LINES[1])
    with pytest.raises(CourtError, match="waiting for votes"):
        capped.submit(eager, "mochi", *LINES[2])


def test_max_votes_closes_undecided_and_review_order(tmp_path):
    court = Court(tmp_path / "c.db", CourtSettings(min_votes=2, max_votes=4))
    users = [court.add_user(f"u{i}")[0] for i in range(6)]
    s = court.submit(users[0], "mochi", *LINES[0])
    later = court.submit(users[0], "mochi", *LINES[1])
    for u, v in zip(users[1:5], ["approve", "reject", "reject", "approve"], strict=True):
        assert court.next_for_review(u).id == s.id  # closest to a verdict first
        result = cast(court, u, s.id, v)
    assert result.status == "undecided"
    assert court.next_for_review(users[1]).id == later.id
    assert court.next_for_review(users[0]) is None  # only own submissions left
    assert court.next_for_review(users[1], "nobody") is None


def test_withdraw(court, people):
    ann, bo = people["ann"][0], people["bo"][0]
    s = submit(court, ann)
    with pytest.raises(CourtError, match="only the author"):
        court.withdraw(bo, s.id)
    assert court.withdraw(ann, s.id).status == "withdrawn"
    with pytest.raises(CourtError, match="already withdrawn"):
        cast(court, bo, s.id, "approve")
