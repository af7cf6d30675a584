"""Review court under load: many voters at once, every vote also replayed; nothing lost or double-counted.

    .venv/bin/python bench/court_load.py [--voters 120] [--submissions 40] [--processes 8] [--http-clients 24]

Part 1 (direct): `--processes` worker processes, each with its own SQLite connection to one
court database (WAL), cast every voter's ballot for every submission; each ballot is handed to
two processes, so every vote races its own replay. Part 2 (HTTP): a real uvicorn server with the
/court router in a separate process; `--http-clients` threads vote through the JSON API (fetch
ballot, vote, replay the vote). Both parts then cross-check the database: stored votes equal the
accepted ones, counts equal the votes table, points equal the ledger, statuses follow the rules.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.court.rules import decide
from training.court.settings import CourtSettings
from training.court.store import Court, CourtError

CHARS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定"
    "行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些"
)


def line(i: int) -> tuple[str, str]:
    rng = random.Random(i)
    return f"你觉得{''.join(rng.sample(CHARS, 8))}怎么样？", "".join(rng.sample(CHARS, 24)) + "。"


def verdict_for(voter: int, submission: int) -> str:
    h = int(hashlib.sha256(f"{voter}:{submission}".encode()).hexdigest(), 16) % 10
    return "approve" if h < 6 else "reject" if h < 9 else "skip"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.2f}"


def reason(error: CourtError) -> str:
    text = str(error)
    if "replayed" in text:
        return "replay refused"
    if "already voted" in text:
        return "double vote refused"
    if "is already" in text:
        return "refused: already decided"
    return error.code


def worker(path: str, rules: dict, tasks: list, seed: int) -> tuple[list[tuple[str, str]], list[float]]:
    court = Court(Path(path), CourtSettings(**rules))
    users: dict[str, object] = {}
    order = list(tasks)
    random.Random(seed).shuffle(order)
    results, latencies = [], []
    for token, ballot, verdict in order:
        user = users.get(token) or users.setdefault(token, court.authenticate(token))
        started = time.perf_counter()
        try:
            court.vote(user, ballot, verdict)  # type: ignore[arg-type]
            results.append((ballot, "ok"))
        except CourtError as error:
            results.append((ballot, reason(error)))
        latencies.append(time.perf_counter() - started)
    court.close()
    return results, latencies


def setup(path: Path, rules: CourtSettings, voters: int, submissions: int):
    court = Court(path, rules)
    authors = [court.add_user(f"author{i}")[0] for i in range(max(1, submissions // 10))]
    subs = [court.submit(authors[i % len(authors)], "mochi", *line(i)) for i in range(submissions)]
    people = [court.add_user(f"voter{i}") for i in range(voters)]
    return court, subs, people


def check(court: Court, rules: CourtSettings, accepted: set[str]) -> dict[str, object]:
    conn = sqlite3.connect(court.path)
    stored = [row[0] for row in conn.execute("SELECT ballot FROM votes")]
    counted = conn.execute("SELECT COALESCE(SUM(approvals + rejections + skips), 0) FROM submissions").fetchone()[0]
    conn.close()
    wrong_status = sum(
        1
        for s in court.submissions()
        if decide(s.approvals, s.rejections, rules) != s.status and s.status != "withdrawn"
    )
    return {
        "accepted": len(accepted),
        "stored": len(stored),
        "counted": counted,
        "lost": len(accepted - set(stored)),
        "invented": len(set(stored) - accepted),
        "double": len(stored) - len(set(stored)),
        "wrong_status": wrong_status,
        "integrity_problems": len(court.check_integrity()),
        "decided": sum(1 for s in court.submissions() if s.status != "pending"),
    }


def direct(args, rules: CourtSettings, folder: Path) -> None:
    court, subs, people = setup(folder / "direct.db", rules, args.voters, args.submissions)
    tasks = [
        (tok, court.ballot(u, s.id).token, verdict_for(v, s.id)) for v, (u, tok) in enumerate(people) for s in subs
    ]
    n = args.processes
    chunks = [tasks[i::n] for i in range(n)]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(n) as pool:
        jobs = [
            pool.apply_async(worker, (str(court.path), rules.model_dump(), chunks[i] + chunks[(i + 1) % n], i))
            for i in range(n)
        ]
        outputs = [job.get() for job in jobs]
    wall = time.perf_counter() - started
    results = [r for out, _ in outputs for r in out]
    latencies = [x for _, lat in outputs for x in lat]
    per = Counter(o for _, o in results)
    accepted = {b for b, o in results if o == "ok"}
    per_ballot = Counter(b for b, o in results if o == "ok")
    report = check(court, rules, accepted)
    print(f"direct: {n} processes, {args.voters} voters x {args.submissions} submissions, every ballot cast twice")
    print(f"  attempts {len(results)} in {wall:.2f}s = {len(results) / wall:.0f} attempts/s; outcomes {dict(per)}")
    print(f"  vote latency p50 {ms(latencies, 0.5)} ms, p95 {ms(latencies, 0.95)} ms, p99 {ms(latencies, 0.99)} ms")
    print(f"  ballots counted twice: {sum(1 for c in per_ballot.values() if c > 1)}; database check: {report}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER = """
import sys, uvicorn
from fastapi import FastAPI
from companion.config import Settings
from companion.frontends import court_pages
from training.court.settings import CourtSettings
settings = Settings(data_dir=sys.argv[1], court=CourtSettings.model_validate_json(sys.argv[2]))
app = FastAPI()
app.include_router(court_pages.router(settings))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning")
"""


def http(args, rules: CourtSettings, folder: Path) -> None:
    import httpx

    data_dir = folder / "http"
    (data_dir / "court").mkdir(parents=True)
    court, subs, people = setup(data_dir / "court" / "court.db", rules, args.voters, args.submissions)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(data_dir), rules.model_dump_json(), str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/court/api/leaderboard", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        queue = [(v, tok, s.id) for v, (_, tok) in enumerate(people) for s in subs]
        random.Random(1).shuffle(queue)
        lock = threading.Lock()
        accepted: set[str] = set()
        outcomes: Counter[str] = Counter()
        latencies: list[float] = []

        def client() -> None:
            with httpx.Client(base_url=base, timeout=60) as session:
                while True:
                    with lock:
                        if not queue:
                            return
                        v, tok, sid = queue.pop()
                    headers = {"Authorization": f"Bearer {tok}"}
                    got = session.get(f"/court/api/submissions/{sid}/ballot", headers=headers)
                    if got.status_code != 200:
                        with lock:
                            outcomes[f"ballot {got.status_code}"] += 1
                        continue
                    body = {"ballot": got.json()["ballot"], "verdict": verdict_for(v, sid)}
                    for attempt in ("vote", "replay"):
                        started = time.perf_counter()
                        r = session.post("/court/api/votes", json=body, headers=headers)
                        with lock:
                            latencies.append(time.perf_counter() - started)
                            outcomes[f"{attempt} {r.status_code}"] += 1
                            if r.status_code == 200:
                                accepted.add(body["ballot"])

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.http_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(10)
    requests = sum(outcomes.values())
    report = check(court, rules, accepted)
    print(f"http: {args.http_clients} client threads against one uvicorn process, {len(people) * len(subs)} ballots")
    print(f"  vote requests {requests} in {wall:.2f}s = {requests / wall:.0f}/s; outcomes {dict(outcomes)}")
    print(f"  request latency p50 {ms(latencies, 0.5)} ms, p95 {ms(latencies, 0.95)} ms, p99 {ms(latencies, 0.99)} ms")
    print(f"  database check: {report}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voters", type=int, default=120)
    parser.add_argument("--submissions", type=int, default=40)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--http-clients", type=int, default=24)
    parser.add_argument("--http-voters", type=int, default=40, help="Voters in the HTTP part (fewer: it is slower).")
    parser.add_argument("--min-votes", type=int, default=None, help="Default: 80%% of the voters.")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="court-load-") as tmp:
        folder = Path(tmp)
        direct(args, CourtSettings(min_votes=args.min_votes or max(1, int(args.voters * 0.8))), folder)
        if not args.skip_http:
            args.voters = args.http_voters
            http(args, CourtSettings(min_votes=args.min_votes or max(1, int(args.voters * 0.8))), folder)


if __name__ == "__main__":
    main()
