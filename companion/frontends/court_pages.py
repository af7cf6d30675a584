"""The review court on the web: pages for people, a JSON API for scripts. Mounted by `companion serve`.

Pages (a court token in a cookie, set by the sign-in form):
    GET  /court                 sign in, your points, what to do next
    GET  /court/submit          write a question and her answer (state and mood optional)
    GET  /court/review          the next line waiting for your vote: approve / reject / skip
    GET  /court/leaderboard     points
    GET  /court/s/{id}          one submission and its verdict
JSON (`Authorization: Bearer <court token>` or `X-Court-Token`):
    GET  /court/api/me | /court/api/next?character= | /court/api/submissions[?character=&status=]
    GET  /court/api/submissions/{id} | /court/api/submissions/{id}/ballot | /court/api/leaderboard
    POST /court/api/submissions {character, question, answer, state?, mood?}
    POST /court/api/votes {ballot, verdict}
    POST /court/api/register {name}            only with court.open_registration

Court tokens are HMAC-signed and bound to a registered user; every vote spends a one-time
ballot bound to its voter and submission, so forged voter ids and replayed votes are refused
(see training/court/tokens.py). Forms that change state carry a signed form token or a ballot,
and the cookie is SameSite=Strict, so another site cannot vote in a visitor's name.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

COOKIE = "court_token"
STATUS = {"unauthorized": 401, "forbidden": 403, "not_found": 404, "conflict": 409, "invalid": 422}
STYLE = """
body{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#222}
nav a{margin-right:1rem} .card{border:1px solid #ddd;border-radius:8px;padding:1rem;margin:1rem 0}
.q{color:#245} .a{color:#625} .dim{color:#777;font-size:.9em} .err{color:#b00} .ok{color:#070}
textarea,input[type=text],select{width:100%;box-sizing:border-box;margin:.2rem 0 .8rem;padding:.4rem}
button{padding:.4rem 1rem;margin-right:.5rem} table{border-collapse:collapse} td,th{padding:.2rem .8rem}
"""


class SubmissionIn(BaseModel):
    character: str = Field(max_length=64)
    question: str = Field(max_length=4000)
    answer: str = Field(max_length=8000)
    state: str | None = Field(None, max_length=500)
    mood: str | None = Field(None, max_length=500)


class VoteIn(BaseModel):
    ballot: str = Field(max_length=200)
    verdict: str = Field(max_length=10)


class RegisterIn(BaseModel):
    name: str = Field(max_length=40)


def _e(value: Any) -> str:
    return html.escape(str(value if value is not None else ""), quote=True)


def router(settings: Any, characters: Callable[[], list[str]] | None = None) -> APIRouter:
    """The /court routes over the court database of `settings` (opened on first use)."""
    from training.court.store import CourtError

    api = APIRouter()
    lock = threading.Lock()
    holder: dict[str, Any] = {}
    public_texts: dict[str, str] = {}

    def court():
        with lock:
            if "court" not in holder:
                from training.court.store import open_court

                holder["court"] = open_court(settings)
            return holder["court"]

    def character_ids() -> list[str]:
        try:
            return list(characters()) if characters else []
        except Exception:  # a broken character folder must not take the court down
            return []

    def public_text(character_id: str) -> str:
        if character_id not in public_texts:
            from companion.character import find_character
            from training.dataset import public_text as published

            try:
                character = find_character(character_id, settings.character_search_path)
                public_texts[character_id] = published(character.folder, character.card)
            except Exception:
                public_texts[character_id] = ""
        return public_texts[character_id]

    def token_of(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and auth[7:].strip().startswith("cu1."):
            return auth[7:].strip()
        return request.headers.get("x-court-token") or request.cookies.get(COOKIE)

    def api_error(error: CourtError) -> JSONResponse:
        body = {"error": {"code": error.code, "message": str(error), "problems": error.problems}}
        return JSONResponse(body, status_code=STATUS.get(error.code, 400))

    def page(title: str, body: str, user=None, status: int = 200) -> HTMLResponse:
        who = (
            f'<span class="dim">{_e(user.name)} · {user.points} points</span> '
            f'<form method="post" action="/court/logout" style="display:inline"><button>sign out</button></form>'
            if user
            else ""
        )
        nav = (
            '<nav><a href="/court">court</a><a href="/court/submit">submit</a><a href="/court/review">review</a>'
            f'<a href="/court/leaderboard">leaderboard</a>{who}</nav>'
        )
        doc = (
            f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width,initial-scale=1'><title>{_e(title)} · court</title>"
            f"<style>{STYLE}</style></head><body>{nav}<h1>{_e(title)}</h1>{body}</body></html>"
        )
        return HTMLResponse(doc, status_code=status, headers={"Cache-Control": "no-store"})

    def viewer(request: Request):
        token = token_of(request)
        if not token:
            return None
        try:
            return court().authenticate(token)
        except CourtError:
            return None

    def sign_in_first() -> RedirectResponse:
        return RedirectResponse("/court?next=signin", status_code=303)

    def card(s) -> str:
        notes = " · ".join(
            x for x in (f"state: {_e(s.state)}" if s.state else "", f"mood: {_e(s.mood)}" if s.mood else "") if x
        )
        return (
            f'<div class="card"><div class="dim">#{s.id} · {_e(s.character)} · by {_e(s.author)} · {_e(s.status)}'
            f"{' · ' + notes if notes else ''}</div>"
            f'<p class="q"><b>Q</b> {_e(s.question)}</p><p class="a"><b>A</b> {_e(s.answer)}</p>'
            f'<div class="dim">approve {s.approvals} · reject {s.rejections} · skip {s.skips}</div></div>'
        )

    # -- pages ----------------------------------------------------------------------------------
    @api.get("/court", include_in_schema=False)
    def home(request: Request) -> HTMLResponse:
        user = viewer(request)
        c = court()
        stats = c.stats()
        counts = ", ".join(f"{k} {v}" for k, v in stats["submissions"].items())
        body = f'<p class="dim">{counts}; {stats["votes"]} votes</p>'
        if user is None:
            body += (
                "<p>Sign in with the court token you were given (<code>companion court user add NAME</code>).</p>"
                '<form method="post" action="/court/login"><input type="text" name="token" placeholder="cu1...." '
                'autocomplete="off"><button>sign in</button></form>'
            )
            if c.rules.open_registration:
                body += (
                    '<h2>New here?</h2><form method="post" action="/court/register">'
                    '<input type="text" name="name" placeholder="your name" maxlength="40">'
                    "<button>register</button></form>"
                )
        else:
            mine = c.submissions(author_id=user.id)
            body += (
                f"<p>Welcome, {_e(user.name)}. You have <b>{user.points}</b> points.</p>"
                '<p><a href="/court/review">Review lines waiting for votes</a> or '
                '<a href="/court/submit">write one</a>.</p>'
            )
            if mine:
                body += "<h2>Your submissions</h2>" + "".join(card(s) for s in reversed(mine[-10:]))
        return page("Review court", body, user)

    @api.post("/court/login", include_in_schema=False)
    def login(token: str = Form("")) -> Response:
        try:
            court().authenticate(token.strip())
        except CourtError as error:
            return page("Review court", f'<p class="err">{_e(error)}</p><p><a href="/court">back</a></p>', status=401)
        response = RedirectResponse("/court", status_code=303)
        response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict", max_age=90 * 86400)
        return response

    @api.post("/court/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/court", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @api.post("/court/register", include_in_schema=False)
    def register_page(name: str = Form("")) -> Response:
        c = court()
        if not c.rules.open_registration:
            return page("Register", '<p class="err">Registration is closed: ask for a token.</p>', status=403)
        try:
            user, token = c.add_user(name)
        except CourtError as error:
            return page("Register", f'<p class="err">{_e(error)}</p>', status=STATUS.get(error.code, 400))
        body = (
            f"<p>Welcome, {_e(user.name)}. Your token (keep it; it is how you sign in elsewhere):</p>"
            f'<p><code>{_e(token)}</code></p><p><a href="/court">continue</a></p>'
        )
        response = page("Registered", body, user)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=90 * 86400)
        return response

    @api.get("/court/submit", include_in_schema=False)
    def submit_form(request: Request, character: str = "", q: str = "") -> Response:
        from training.court.tokens import form_token

        user = viewer(request)
        if user is None:
            return sign_in_first()
        ids = character_ids()
        chosen = character or (ids[0] if ids else "")
        if ids:
            options = "".join(f"<option{' selected' if i == chosen else ''}>{_e(i)}</option>" for i in ids)
            pick = f'<select name="character">{options}</select>'
        else:
            pick = f'<input type="text" name="character" value="{_e(chosen)}">'
        body = (
            '<form method="post" action="/court/submit">'
            f'<input type="hidden" name="form_token" value="{_e(form_token(court().key, user.id, "submit"))}">'
            f"<label>Character</label>{pick}"
            f'<label>Someone asks her</label><textarea name="question" rows="2" required>{_e(q[:500])}</textarea>'
            '<label>She answers (in her voice)</label><textarea name="answer" rows="4" required></textarea>'
            '<label>Her state at the time (optional)</label><input type="text" name="state" maxlength="60">'
            '<label>Her mood (optional)</label><input type="text" name="mood" maxlength="60">'
            "<button>submit for review</button></form>"
        )
        asked = list(dict.fromkeys(s.question for s in reversed(court().submissions(character=chosen, limit=None))))
        if asked:  # answers to the same question compete: that is where preference pairs come from
            links = "".join(
                f'<li><a href="/court/submit?character={quote(chosen)}&q={quote(text)}">{_e(text)}</a></li>'
                for text in asked[:10]
            )
            body += f"<h2>Questions others asked: answer one your way</h2><ul>{links}</ul>"
        return page("Write a line", body, user)

    @api.post("/court/submit", include_in_schema=False)
    def submit_page(
        request: Request,
        character: str = Form(""),
        question: str = Form(""),
        answer: str = Form(""),
        state: str = Form(""),
        mood: str = Form(""),
        form_token: str = Form(""),
    ) -> Response:
        from training.court.tokens import TokenError, check_form_token

        user = viewer(request)
        if user is None:
            return sign_in_first()
        c = court()
        try:
            check_form_token(c.key, form_token, user.id, "submit")
            s = c.submit(
                user, character, question, answer, state=state or None, mood=mood or None,
                public_text=public_text(character.strip()),
            )  # fmt: skip
        except TokenError as error:
            return page("Write a line", f'<p class="err">{_e(error)}</p>', user, status=403)
        except CourtError as error:
            problems = "".join(f"<li>{_e(p)}</li>" for p in error.problems) or f"<li>{_e(error)}</li>"
            body = f'<p class="err">Not accepted:</p><ul>{problems}</ul><p><a href="/court/submit">try again</a></p>'
            return page("Write a line", body, user, status=STATUS.get(error.code, 400))
        body = (
            f'<p class="ok">Submitted: it waits for votes.</p>{card(s)}<p><a href="/court/submit">write another</a></p>'
        )
        return page("Write a line", body, user)

    @api.get("/court/review", include_in_schema=False)
    def review_page(request: Request, character: str | None = None) -> Response:
        user = viewer(request)
        if user is None:
            return sign_in_first()
        c = court()
        s = c.next_for_review(user, character or None)
        if s is None:
            return page("Review", "<p>Nothing waits for your vote right now. Thank you!</p>", user)
        try:
            ballot = c.ballot(user, s.id)
        except CourtError:  # decided between the two reads: show the next one
            return RedirectResponse(request.url.path + (f"?character={quote(character)}" if character else ""), 303)
        buttons = "".join(f'<button name="verdict" value="{v}">{v}</button>' for v in ("approve", "reject", "skip"))
        body = (
            f"{card(s)}<p class='dim'>Would she say this? Approve lines true to her, reject spam and wrong voices.</p>"
            f'<form method="post" action="/court/vote"><input type="hidden" name="ballot" value="{_e(ballot.token)}">'
            f'<input type="hidden" name="character" value="{_e(character or "")}">{buttons}</form>'
        )
        return page("Review", body, user)

    @api.post("/court/vote", include_in_schema=False)
    def vote_page(
        request: Request, ballot: str = Form(""), verdict: str = Form(""), character: str = Form("")
    ) -> Response:
        user = viewer(request)
        if user is None:
            return sign_in_first()
        try:
            court().vote(user, ballot, verdict)
        except CourtError as error:
            body = f'<p class="err">{_e(error)}</p><p><a href="/court/review">next</a></p>'
            return page("Review", body, user, status=STATUS.get(error.code, 400))
        target = "/court/review" + (f"?character={quote(character)}" if character else "")
        return RedirectResponse(target, status_code=303)

    @api.get("/court/leaderboard", include_in_schema=False)
    def leaderboard_page(request: Request) -> HTMLResponse:
        user = viewer(request)
        rows = "".join(
            f"<tr><td>{rank}</td><td>{_e(u.name)}</td><td>{u.points}</td></tr>"
            for rank, u in enumerate(court().leaderboard(50), 1)
        )
        return page("Leaderboard", f"<table><tr><th>#</th><th>name</th><th>points</th></tr>{rows}</table>", user)

    @api.get("/court/s/{submission_id}", include_in_schema=False)
    def submission_page(request: Request, submission_id: int) -> HTMLResponse:
        user = viewer(request)
        try:
            s = court().submission(submission_id)
        except CourtError as error:
            return page("Submission", f'<p class="err">{_e(error)}</p>', user, status=404)
        return page(f"Submission #{s.id}", card(s), user)

    # -- JSON API -------------------------------------------------------------------------------
    def api_user(request: Request):
        return court().authenticate(token_of(request))

    @api.get("/court/api/me")
    def api_me(request: Request) -> Any:
        try:
            return api_user(request).public()
        except CourtError as error:
            return api_error(error)

    @api.post("/court/api/register")
    def api_register(body: RegisterIn) -> Any:
        c = court()
        if not c.rules.open_registration:
            return api_error(CourtError("forbidden", "registration is closed: ask an admin for a token"))
        try:
            user, token = c.add_user(body.name)
        except CourtError as error:
            return api_error(error)
        return JSONResponse({**user.public(), "token": token}, status_code=201)

    @api.get("/court/api/next")
    def api_next(request: Request, character: str | None = None) -> Any:
        try:
            user = api_user(request)
            c = court()
            s = c.next_for_review(user, character)
            if s is None:
                return {"submission": None, "ballot": None}
            return {"submission": s.public(), "ballot": c.ballot(user, s.id).token}
        except CourtError as error:
            return api_error(error)

    @api.get("/court/api/submissions/{submission_id}/ballot")
    def api_ballot(request: Request, submission_id: int) -> Any:
        try:
            ballot = court().ballot(api_user(request), submission_id)
        except CourtError as error:
            return api_error(error)
        return {"ballot": ballot.token, "expires": ballot.expires}

    @api.post("/court/api/votes")
    def api_vote(request: Request, body: VoteIn) -> Any:
        try:
            result = court().vote(api_user(request), body.ballot, body.verdict)
        except CourtError as error:
            return api_error(error)
        return vars(result)

    @api.post("/court/api/submissions")
    def api_submit(request: Request, body: SubmissionIn) -> Any:
        try:
            user = api_user(request)
            s = court().submit(
                user, body.character, body.question, body.answer, state=body.state, mood=body.mood,
                public_text=public_text(body.character.strip()),
            )  # fmt: skip
        except CourtError as error:
            return api_error(error)
        return JSONResponse({**s.public(), "notes": s.notes}, status_code=201)

    @api.get("/court/api/submissions")
    def api_list(character: str | None = None, status: str | None = None, limit: int = 100) -> Any:
        return [s.public() for s in court().submissions(character=character, status=status, limit=min(limit, 1000))]

    @api.get("/court/api/submissions/{submission_id}")
    def api_get(submission_id: int) -> Any:
        try:
            return court().submission(submission_id).public()
        except CourtError as error:
            return api_error(error)

    @api.get("/court/api/leaderboard")
    def api_leaderboard(limit: int = 20) -> Any:
        return [u.public() for u in court().leaderboard(min(limit, 200))]

    return api
