"""`companion court ...`: the review court from the command line.

    companion court user add NAME [--admin]        register a voter; prints their token (keep it)
    companion court user list | token NAME [--rotate] | ban NAME [--unban]
    companion court submit CHARACTER -q QUESTION -a ANSWER [--state S] [--mood M]
    companion court review [CHARACTER]             vote on pending lines one by one (approve/reject/skip)
    companion court vote ID approve|reject|skip    one vote
    companion court list [CHARACTER] [--status S] | show ID | status [CHARACTER] | check
    companion court export CHARACTER               approved -> corpus/dialogues/court.jsonl,
                                                   votes -> preference/court.jsonl (DPO pairs)

Voting and submitting take the voter's token (`--token`, or COMPANION_COURT_TOKEN). The same
database backs the /court pages of `companion serve`.
"""

# No `from __future__ import annotations`: see `with_opened`.
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from companion.cli.common import ConfigOption, DataDirOption, console, err_console, settings_from, with_opened
from companion.config import Settings
from companion.errors import CompanionError

if TYPE_CHECKING:
    from training.court.store import Court

app = typer.Typer(help="Review court: a community writes a character's lines and votes on them.", no_args_is_help=True)
user_app = typer.Typer(help="Registered voters and their tokens.", no_args_is_help=True)
app.add_typer(user_app, name="user")

TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="COMPANION_COURT_TOKEN", help="Your court token.", show_default=False)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DbOption = Annotated[Path | None, typer.Option("--db", help="The court database (default: from the config).")]


def _open_court(db: DbOption = None, config: ConfigOption = None, data_dir: DataDirOption = None) -> dict[str, Any]:
    from training.court.store import open_court

    settings = settings_from(config, data_dir)
    if db is not None:
        settings.court = settings.court.model_copy(update={"db": db})
    return {"court": open_court(settings), "settings": settings}


# Every command below gets --db, --config and --data-dir after its own options, and the court they open.
_with_court = with_opened(_open_court, "court", "settings")


def _me(court, token: str | None):
    if not token:
        raise CompanionError("pass --token (or set COMPANION_COURT_TOKEN): `companion court user add NAME` makes one")
    return court.authenticate(token)


def _public_text(settings, character_id: str) -> str:
    from companion.character import find_character
    from companion.errors import CharacterNotFoundError
    from training.dataset import public_text

    try:
        character = find_character(character_id, settings.character_search_path)
    except CharacterNotFoundError:
        return ""
    return public_text(character.folder, character.card)


def _print(obj) -> None:
    console.print_json(json.dumps(obj, ensure_ascii=False))


def _show(submission) -> None:
    s = submission
    console.print(f"[bold]#{s.id}[/] [dim]{s.character} · by {s.author} · {s.status}[/]", highlight=False)
    if s.state or s.mood:
        console.print(f"[dim]state: {s.state or '-'} · mood: {s.mood or '-'}[/]", highlight=False)
    console.print(f"[cyan]Q:[/] {s.question}", highlight=False)
    console.print(f"[magenta]A:[/] {s.answer}", highlight=False)
    console.print(f"[dim]approve {s.approvals} · reject {s.rejections} · skip {s.skips}[/]", highlight=False)


# -- users -------------------------------------------------------------------------------------
@user_app.command("add")
@_with_court
def user_add(
    court: "Court",
    name: Annotated[str, typer.Argument(help="The voter's name (unique).")],
    admin: Annotated[bool, typer.Option("--admin", help="May withdraw anyone's submission.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Register a voter and print their token (shown once: it is how they vote)."""
    user, token = court.add_user(name, "admin" if admin else "member")
    if as_json:
        _print({**user.public(), "token": token})
        return
    console.print(f"registered [bold]{user.name}[/] (#{user.id}); token:", highlight=False)
    console.print(token, highlight=False, soft_wrap=True)


@user_app.command("list")
@_with_court
def user_list(court: "Court", as_json: JsonOption = False) -> None:
    """Every registered voter with their points."""
    users = court.users()
    if as_json:
        _print([{**u.public(), "banned": u.banned} for u in users])
        return
    table = Table()
    for column in ("id", "name", "role", "points", "banned"):
        table.add_column(column)
    for u in users:
        table.add_row(str(u.id), u.name, u.role, str(u.points), "yes" if u.banned else "")
    console.print(table)


@user_app.command("token")
@_with_court
def user_token(
    court: "Court",
    name: Annotated[str, typer.Argument(help="The voter's name.")],
    rotate: Annotated[bool, typer.Option("--rotate", help="Issue a new token; every older one stops working.")] = False,
) -> None:
    """Print a voter's token (or rotate it when it leaked)."""
    console.print(court.token_for(name, rotate=rotate), highlight=False, soft_wrap=True)


@user_app.command("ban")
@_with_court
def user_ban(
    court: "Court",
    name: Annotated[str, typer.Argument(help="The voter's name.")],
    unban: Annotated[bool, typer.Option("--unban", help="Lift the ban.")] = False,
) -> None:
    """Stop (or let again) a voter submitting and voting."""
    user = court.set_banned(name, not unban)
    err_console.print(f"{user.name}: {'banned' if user.banned else 'not banned'}", highlight=False)


# -- submitting and voting ---------------------------------------------------------------------
@app.command("submit")
@_with_court
def submit(
    court: "Court",
    settings: Settings,
    character: Annotated[str, typer.Argument(help="Character id.")],
    question: Annotated[str, typer.Option("--question", "-q", help="What someone asks her.")],
    answer: Annotated[str, typer.Option("--answer", "-a", help="Her answer, in her voice.")],
    state: Annotated[str | None, typer.Option("--state", help="Her state at the time (optional).")] = None,
    mood: Annotated[str | None, typer.Option("--mood", help="Her mood at the time (optional).")] = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Submit a line for review (checked by the quality rules first)."""
    me = _me(court, token)
    submission = court.submit(
        me, character, question, answer, state=state, mood=mood, public_text=_public_text(settings, character)
    )
    if as_json:
        _print({**submission.public(), "notes": submission.notes})
        return
    err_console.print(f"submitted #{submission.id}: waiting for votes", highlight=False)
    if submission.notes.get("pii_replaced"):
        err_console.print(f"personal data replaced: {submission.notes['pii_replaced']}", highlight=False)


@app.command("vote")
@_with_court
def vote(
    court: "Court",
    submission_id: Annotated[int, typer.Argument(help="Submission number.")],
    verdict: Annotated[str, typer.Argument(help="approve, reject or skip.")],
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Vote on one submission."""
    me = _me(court, token)
    ballot = court.ballot(me, submission_id)
    result = court.vote(me, ballot.token, verdict.strip().lower())
    if as_json:
        _print(vars(result))
        return
    err_console.print(
        f"#{result.submission_id}: {result.status} (approve {result.approvals}, reject {result.rejections})",
        highlight=False,
    )


@app.command("review")
@_with_court
def review(
    court: "Court",
    character: Annotated[str | None, typer.Argument(help="Only this character's submissions.")] = None,
    token: TokenOption = None,
    limit: Annotated[int, typer.Option("--limit", help="Stop after this many votes (0: until none are left).")] = 0,
) -> None:
    """Vote on pending submissions one after another: a(pprove), r(eject), s(kip), q(uit)."""
    me = _me(court, token)
    answers = {"a": "approve", "r": "reject", "s": "skip"}
    done = 0
    while not limit or done < limit:
        submission = court.next_for_review(me, character)
        if submission is None:
            err_console.print("nothing left to review", highlight=False)
            return
        ballot = court.ballot(me, submission.id)
        _show(submission)
        choice = typer.prompt("approve / reject / skip / quit [a/r/s/q]", default="s").strip().lower()[:1]
        if choice == "q":
            return
        if choice not in answers:
            err_console.print("type a, r, s or q", highlight=False)
            continue
        result = court.vote(me, ballot.token, answers[choice])
        done += 1
        if result.decided_now:
            err_console.print(f"#{result.submission_id} is now {result.status}", highlight=False)


# -- looking ---------------------------------------------------------------------------------
@app.command("list")
@_with_court
def list_(
    court: "Court",
    character: Annotated[str | None, typer.Argument(help="Only this character.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="pending, approved, rejected, ...")] = None,
    as_json: JsonOption = False,
) -> None:
    """Submissions, with their votes and status."""
    found = court.submissions(character=character, status=status)
    if as_json:
        _print([s.public() for s in found])
        return
    table = Table()
    for column in ("id", "character", "author", "status", "+", "-", "question", "answer"):
        table.add_column(column, overflow="fold")
    for s in found:
        table.add_row(
            *(str(s.id), s.character, s.author, s.status, str(s.approvals), str(s.rejections)),
            *(s.question[:40], s.answer[:60]),
        )
    console.print(table)


@app.command("show")
@_with_court
def show(
    court: "Court",
    submission_id: Annotated[int, typer.Argument(help="Submission number.")],
    as_json: JsonOption = False,
) -> None:
    """One submission and who voted how."""
    submission = court.submission(submission_id)
    votes = court.votes(submission_id)
    if as_json:
        _print({**submission.public(), "notes": submission.notes, "votes": votes})
        return
    _show(submission)
    for v in votes:
        console.print(f"  {v['voter']}: {v['verdict']}", highlight=False)


@app.command("status")
@_with_court
def status(
    court: "Court",
    character: Annotated[str | None, typer.Argument(help="Only this character.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Counts per status and the leaderboard."""
    stats = court.stats(character)
    board = [u.public() for u in court.leaderboard(10)]
    if as_json:
        _print({**stats, "leaderboard": board, "database": str(court.path)})
        return
    console.print(f"court database: {court.path}", highlight=False)
    console.print(
        ", ".join(f"{k} {v}" for k, v in stats["submissions"].items()) + f"; {stats['votes']} votes", highlight=False
    )
    for rank, user in enumerate(board, 1):
        console.print(f"{rank:>3}. {user['name']}  {user['points']}", highlight=False)


@app.command("check")
@_with_court
def check(court: "Court") -> None:
    """Cross-check the database: vote counts against votes, points against the ledger."""
    problems = court.check_integrity()
    for problem in problems:
        err_console.print(problem, highlight=False)
    if problems:
        raise CompanionError(f"{len(problems)} inconsistencies in {court.path}")
    err_console.print(f"{court.path}: consistent (schema {court.schema_version()})", highlight=False)


@app.command("export")
@_with_court
def export(
    court: "Court",
    settings: Settings,
    character: Annotated[str, typer.Argument(help="Character id.")],
    sft: Annotated[
        Path | None, typer.Option("--sft", help="Approved lines as ShareGPT (default: <character>/corpus/dialogues/).")
    ] = None,
    pairs: Annotated[
        Path | None, typer.Option("--pairs", help="Preference pairs (default: <character>/preference/court.jsonl).")
    ] = None,
    margin: Annotated[float, typer.Option("--margin", help="Least approval-share gap, chosen vs rejected.")] = 0.3,
    as_json: JsonOption = False,
) -> None:
    """Approved lines -> SFT dialogues; votes -> preference pairs for `companion train --method dpo`."""
    from companion.character import find_character
    from training.court.export import COURT_DIALOGUES, COURT_PAIRS, export_pairs, export_sft

    if sft is None or pairs is None:
        folder = find_character(character, settings.character_search_path).folder
        sft = sft or folder / COURT_DIALOGUES
        pairs = pairs or folder / COURT_PAIRS
    n_sft = export_sft(court, character, sft)
    n_pairs = export_pairs(court, character, pairs, margin=margin)
    if as_json:
        _print({"sft": {"path": str(sft), "records": n_sft}, "pairs": {"path": str(pairs), "records": n_pairs}})
        return
    err_console.print(f"{n_sft} approved lines -> {sft}", highlight=False)
    err_console.print(f"{n_pairs} preference pairs -> {pairs}", highlight=False)
    if n_sft:
        err_console.print(f"next: companion data build {character} && companion train {character}", highlight=False)
