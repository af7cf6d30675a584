"""The /court pages and JSON API over real HTTP (uvicorn on loopback), and the CLI."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from companion.config import Settings
from companion.frontends import court_pages
from tests.court.conftest import LINES, varied_line
from tests.support.uvicorn_server import running
from training.court.settings import CourtSettings
from training.court.store import open_court


@pytest.fixture
def court_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", court=CourtSettings(min_votes=2, open_registration=True))


@pytest.fixture
def server(court_settings: Settings):
    app = FastAPI()
    app.include_router(court_pages.router(court_settings, lambda: ["mochi", "lumi"]))
    with running(app) as url:
        yield url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_api_submit_review_vote_and_refusals(server: str, court_settings: Settings):
    court = open_court(court_settings)
    _, ann = court.add_user("ann")
    _, bo = court.add_user("bo")
    _, cy = court.add_user("cy")
    with httpx.Client(base_url=server) as http:
        line = {"character": "mochi", "question": LINES[0][0], "answer": LINES[0][1], "mood": "开心"}
        r = http.post("/court/api/submissions", json=line, headers=bearer(ann))
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        bad = {"character": "mochi", "question": "你好", "answer": "嗯"}
        r = http.post("/court/api/submissions", json=bad, headers=bearer(ann))
        assert r.status_code == 422 and r.json()["error"]["problems"]
        assert (
            http.post(
                "/court/api/submissions", json={"character": "mochi", "question": "q?", "answer": "a"}
            ).status_code
            == 401
        )
        # the author gets nothing to review and may not take a ballot for her own line
        assert http.get("/court/api/next", headers=bearer(ann)).json() == {"submission": None, "ballot": None}
        assert http.get(f"/court/api/submissions/{sid}/ballot", headers=bearer(ann)).status_code == 403
        nxt = http.get("/court/api/next", headers=bearer(bo)).json()
        assert nxt["submission"]["id"] == sid
        vote = {"ballot": nxt["ballot"], "verdict": "approve"}
        assert http.post("/court/api/votes", json=vote, headers=bearer(bo)).json()["status"] == "pending"
        replay = http.post("/court/api/votes", json=vote, headers=bearer(bo))
        assert replay.status_code == 409 and "replayed" in replay.json()["error"]["message"]
        # cy presents bo's ballot (a forged voter) and a token with bo's id under cy's signature
        assert http.post("/court/api/votes", json=vote, headers=bearer(cy)).status_code in (401, 409)
        forged = f"cu1.{court.user_named('bo').id}.1.{cy.split('.')[3]}"
        assert http.post("/court/api/votes", json=vote, headers=bearer(forged)).status_code == 401
        cy_ballot = http.get(f"/court/api/submissions/{sid}/ballot", headers={"X-Court-Token": cy}).json()["ballot"]
        done = http.post("/court/api/votes", json={"ballot": cy_ballot, "verdict": "approve"}, headers=bearer(cy))
        assert done.json()["status"] == "approved"
        assert http.get(f"/court/api/submissions/{sid}").json()["status"] == "approved"
        board = http.get("/court/api/leaderboard").json()
        assert board[0] == {"id": court.user_named("ann").id, "name": "ann", "role": "member", "points": 10}
        reg = http.post("/court/api/register", json={"name": "newbie"})
        assert (
            reg.status_code == 201
            and http.get("/court/api/me", headers=bearer(reg.json()["token"])).json()["name"] == "newbie"
        )
    assert court.check_integrity() == []


def test_pages_sign_in_submit_and_vote(server: str, court_settings: Settings):
    court = open_court(court_settings)
    _, ann = court.add_user("ann")
    _, bo = court.add_user("bo")
    with httpx.Client(base_url=server, follow_redirects=True) as alice, httpx.Client(base_url=server) as bob:
        assert "Sign in" in alice.get("/court").text
        assert alice.post("/court/login", data={"token": "cu1.1.1.forged"}).status_code == 401
        assert "Welcome, ann" in alice.post("/court/login", data={"token": ann}).text
        form = alice.get("/court/submit").text
        assert "<option selected>mochi</option>" in form
        form_token = re.search(r'name="form_token" value="([^"]+)"', form).group(1)
        data = {"character": "mochi", "question": LINES[1][0], "answer": LINES[1][1], "form_token": form_token}
        # without the form token (a cross-site form post) nothing is stored
        assert alice.post("/court/submit", data={**data, "form_token": ""}).status_code == 403
        page = alice.post("/court/submit", data=data)
        assert page.status_code == 200 and "Submitted" in page.text and "&lt;" not in LINES[1][1]
        tags = {"question": "你喜欢<script>alert(1)</script>吗？", "answer": "<b>才不喜欢呢</b>，我只喜欢面包。"}
        xss = alice.post("/court/submit", data={**data, **tags})
        assert "<script>" not in xss.text and "&lt;script&gt;" in xss.text
        assert "Nothing waits" in alice.get("/court/review").text  # only her own lines are pending
        again = alice.get("/court/submit").text
        assert "Questions others asked" in again and LINES[1][0] in again
        prefilled = alice.get("/court/submit", params={"character": "mochi", "q": LINES[1][0]}).text
        assert f"required>{LINES[1][0]}</textarea>" in prefilled
        bob.post("/court/login", data={"token": bo})
        review = bob.get("/court/review").text
        ballot = re.search(r'name="ballot" value="([^"]+)"', review).group(1)
        voted = bob.post("/court/vote", data={"ballot": ballot, "verdict": "approve"})
        assert voted.status_code == 303 and voted.headers["location"] == "/court/review"
        again = bob.post("/court/vote", data={"ballot": ballot, "verdict": "approve"})
        assert again.status_code == 409 and "already used" in again.text
        with httpx.Client(base_url=server) as stranger:
            assert stranger.get("/court/submit").headers["location"].startswith("/court")
            assert stranger.post("/court/vote", data={"ballot": ballot, "verdict": "reject"}).status_code == 303
        assert "ann" in alice.get("/court/leaderboard").text
    assert sum(s.approvals for s in court.submissions()) == 1


def test_concurrent_http_voters(tmp_path: Path):
    """Twelve voters vote on ten submissions at once over HTTP, each sending every vote twice."""
    settings = Settings(data_dir=tmp_path / "data", court=CourtSettings(min_votes=100))
    app = FastAPI()
    app.include_router(court_pages.router(settings))
    court = open_court(settings)
    author = court.add_user("author")[0]
    subs = [court.submit(author, "mochi", *varied_line(i)).id for i in range(10)]
    tokens = [court.add_user(f"v{i}")[1] for i in range(12)]
    results: list[int] = []

    def voter(token: str) -> None:
        with httpx.Client(base_url=server, timeout=60) as http:
            for sid in subs:
                ballot = http.get(f"/court/api/submissions/{sid}/ballot", headers=bearer(token)).json()["ballot"]
                body = {"ballot": ballot, "verdict": "approve"}
                results.append(http.post("/court/api/votes", json=body, headers=bearer(token)).status_code)
                results.append(http.post("/court/api/votes", json=body, headers=bearer(token)).status_code)

    with running(app) as server:
        threads = [threading.Thread(target=voter, args=(t,)) for t in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results.count(200) == len(subs) * len(tokens) and results.count(409) == len(subs) * len(tokens)
    assert all(court.submission(s).approvals == len(tokens) for s in subs)
    assert court.check_integrity() == []


def test_serve_app_mounts_the_court(court_settings: Settings):
    from companion.frontends.server.app import create_app

    app = create_app(court_settings)
    with running(app) as url:
        assert httpx.get(f"{url}/court/api/leaderboard").json() == []
        assert "Review court" in httpx.get(f"{url}/court").text


def test_cli_round_trip(tmp_path: Path, court_settings: Settings, monkeypatch):
    from companion.character import new_character
    from companion.cli import app

    chars = tmp_path / "chars"
    new_character(chars, "mochi", "Mochi")
    monkeypatch.setenv("COMPANION_CHARACTERS_DIR", str(chars))
    monkeypatch.setenv("COMPANION_COURT__MIN_VOTES", "2")
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data")]

    def run(*args, token=None):
        env = {"COMPANION_COURT_TOKEN": token} if token else {}
        result = runner.invoke(app, [*args, *base], env=env)
        result.text = result.output + str(result.exception or "")
        return result

    def token_of(name: str) -> str:
        result = run("court", "user", "add", name, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["token"]

    ann, bo, cy = token_of("ann"), token_of("bo"), token_of("cy")
    out = run("court", "submit", "mochi", "-q", LINES[0][0], "-a", LINES[0][1], "--json", token=ann)
    assert out.exit_code == 0, out.output
    sid = json.loads(out.stdout)["id"]
    refused = run("court", "submit", "mochi", "-q", "你好", "-a", "嗯", token=ann)
    assert refused.exit_code == 1 and "asks nothing" in refused.text
    assert "own submission" in run("court", "vote", str(sid), "approve", token=ann).text
    assert run("court", "vote", str(sid), "approve", token=bo).exit_code == 0
    assert "already voted" in run("court", "vote", str(sid), "reject", token=bo).text
    reviewed = runner.invoke(app, ["court", "review", "mochi", *base], input="a\n", env={"COMPANION_COURT_TOKEN": cy})
    assert reviewed.exit_code == 0 and "now approved" in reviewed.output
    out = run("court", "export", "mochi", "--json")
    paths = json.loads(out.stdout)
    assert paths["sft"]["records"] == 1
    record = json.loads(Path(paths["sft"]["path"]).read_text(encoding="utf-8"))
    assert record["conversations"][1]["value"] == LINES[0][1]
    assert run("court", "check").exit_code == 0
    status = json.loads(run("court", "status", "--json").stdout)
    assert status["submissions"]["approved"] == 1 and status["leaderboard"][0]["name"] == "ann"
