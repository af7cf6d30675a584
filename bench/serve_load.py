"""Load on `companion serve`: N concurrent WebSocket sessions talking to the embedded model.

    .venv/bin/python bench/serve_load.py                      # 8 sessions x 3 turns, embedded Gemma-3-270M
    .venv/bin/python bench/serve_load.py --sessions 32 --llm scripted   # the server alone (fixed replies)
    .venv/bin/python bench/serve_load.py --abuse              # plus a client sending garbage all along

Prints throughput (turns/s, generated tokens/s), turn latency p50/p95 (send -> turn_end) and
time to first text p50/p95, server responsiveness under load (ping round trips from an idle
client), process memory (RSS before, peak, after), and checks that nothing was lost or
misdelivered: every turn_start answers this session's own message id, every turn's deltas add
up to its turn_end, turn ids never cross sessions, and what each session received is exactly
what the server recorded in that user's history. Results also go to bench/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = [
    "Hi! How are you today?",
    "What do you like to do on rainy days?",
    "Tell me about your favourite food.",
    "Do you like the stars?",
    "What did you do this morning?",
]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class ScriptedLLM:
    """A fixed reply at a fixed pace: measures the server, not the model."""

    def __init__(self, words: int, delay: float) -> None:
        self.reply = " ".join(["la"] * words)
        self.delay = delay

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1

    async def stream(self, request):
        for i, word in enumerate(self.reply.split()[: request.params.max_new_tokens]):
            await asyncio.sleep(self.delay)
            yield word if i == 0 else " " + word


def build(args) -> tuple:
    from companion.character import new_character
    from companion.config import Settings
    from companion.frontends.hub import CompanionHub
    from companion.frontends.server import create_app
    from companion.frontends.speech import Speech
    from companion.paths import contain_library_caches
    from companion.session import build_companion

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="companion-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    shared_models = REPO / ".data" / "test" / "models"
    if shared_models.is_dir() and not (data_dir / "models").exists():
        (data_dir / "models").symlink_to(shared_models, target_is_directory=True)
    contain_library_caches(data_dir)
    chars = data_dir / "characters"
    if args.character == "bench" and not (chars / "bench").exists():
        new_character(chars, "bench", "Bench")
    settings = Settings(data_dir=data_dir, characters_dir=chars, max_new_tokens=args.max_new_tokens, temperature=0.7)
    settings.serve.turns_per_minute = 1e9
    settings.serve.turn_burst = 10**6
    settings.serve.max_connections = args.sessions + 8
    settings.serve.voice = "off"
    scripted = ScriptedLLM(args.max_new_tokens, 0.02) if args.llm == "scripted" else None

    def factory(character_id: str, s: Settings):
        companion = build_companion(character_id, s)
        if scripted is not None:
            companion.llm = scripted
        if args.no_retrieval:
            companion.context_sources = []
        return companion

    hub = CompanionHub(settings, characters=[args.character], factory=factory, speech=Speech(settings, "off"))
    if scripted is None:
        started = time.perf_counter()
        hub.warm_up(args.character)
        print(f"model loaded in {time.perf_counter() - started:.1f}s", flush=True)
    return create_app(settings, hub), hub, settings


class Server:
    def __init__(self, app) -> None:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws_ping_interval=None)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1/ws"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)


class MemorySampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.peak = self.rss()
        self.running = True

    def rss(self) -> int:
        return self.process.memory_info().rss

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.05)


async def session(url: str, index: int, turns: int, results: dict) -> None:
    import websockets

    user = f"load-{index}"
    record = results.setdefault(user, {"turns": [], "errors": [], "misdelivered": 0})
    async with websockets.connect(f"{url}?user={user}&speak=0", max_size=None, ping_interval=None) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "session" and hello["user"] == user
        record["greeting"] = hello["greeting"]
        for turn in range(turns):
            text = f"{QUESTIONS[(index + turn) % len(QUESTIONS)]} (#{index}.{turn})"
            message_id = f"{user}-{turn}"
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "text", "text": text, "id": message_id}))
            first = None
            deltas: list[str] = []
            turn_ids: set[str] = set()
            started_for = None
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 900))
                kind = message["type"]
                if kind == "turn_start":
                    started_for = message["id"]
                    if message["id"] != message_id or message["text"] != text:
                        record["misdelivered"] += 1
                elif kind == "text_delta":
                    first = first or time.perf_counter()
                    deltas.append(message["text"])
                    turn_ids.add(message["turn_id"])
                elif kind == "error":
                    record["errors"].append(message)
                    break
                elif kind == "turn_end":
                    turn_ids.add(message["turn_id"])
                    record["turns"].append(
                        {
                            "question": text,
                            "reply": message["text"],
                            "deltas": "".join(deltas),
                            "turn_ids": sorted(turn_ids),
                            "started_for": started_for,
                            "latency": time.perf_counter() - sent,
                            "first_text": (first - sent) if first else None,
                        }
                    )
                    break


async def pinger(url: str, stop: asyncio.Event, rtts: list[float]) -> None:
    import websockets

    async with websockets.connect(f"{url}?user=pinger&speak=0", ping_interval=None) as ws:
        await ws.recv()
        n = 0
        while not stop.is_set():
            n += 1
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "ping", "id": str(n)}))
            while json.loads(await ws.recv())["type"] != "pong":
                pass
            rtts.append(time.perf_counter() - sent)
            await asyncio.sleep(0.1)


async def abuser(url: str, stop: asyncio.Event, counts: dict) -> None:
    import websockets

    garbage = ["{oops", "[]", json.dumps({"type": "nope"}), json.dumps({"type": "text"}), "x" * 5000]
    while not stop.is_set():
        try:
            async with websockets.connect(f"{url}?user=abuser", ping_interval=None) as ws:
                await ws.recv()
                for i in range(1000):
                    if stop.is_set():
                        return
                    await ws.send(garbage[i % len(garbage)])
                    reply = json.loads(await ws.recv())
                    counts[reply.get("code", reply["type"])] = counts.get(reply.get("code", reply["type"]), 0) + 1
                    await asyncio.sleep(0.01)
        except websockets.ConnectionClosed as closed:
            key = f"closed {closed.rcvd.code if closed.rcvd else '?'}"
            counts[key] = counts.get(key, 0) + 1


async def drive(url: str, args) -> tuple[dict, list[float], dict, float]:
    results: dict = {}
    rtts: list[float] = []
    abuse: dict = {}
    stop = asyncio.Event()
    side = [asyncio.create_task(pinger(url, stop, rtts))]
    if args.abuse:
        side.append(asyncio.create_task(abuser(url, stop, abuse)))
    started = time.perf_counter()
    await asyncio.gather(*(session(url, i, args.turns, results) for i in range(args.sessions)))
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*side, return_exceptions=True)
    return results, rtts, abuse, elapsed


def check(results: dict, hub, character: str, expected_turns: int) -> dict:
    from companion.history import ConversationKey
    from companion.session import clean_reply

    companion = hub.base(character)
    lost = misdelivered = mismatched = 0
    seen_turn_ids: dict[str, str] = {}
    for user, record in results.items():
        misdelivered += record["misdelivered"]
        lost += expected_turns - len(record["turns"])
        for turn in record["turns"]:
            if turn["reply"] != clean_reply(turn["deltas"], companion.name):
                mismatched += 1
            for turn_id in turn["turn_ids"]:
                if seen_turn_ids.setdefault(turn_id, user) != user:
                    misdelivered += 1
            if len(turn["turn_ids"]) != 1 or turn["started_for"] is None:
                mismatched += 1
        stored = [
            m.content for m in companion.history.load(ConversationKey(character=character, user=user, channel="web"))
        ]
        expected = [record["greeting"]] if record.get("greeting") else []
        for turn in record["turns"]:
            expected += [turn["question"], turn["reply"]] if turn["reply"] else [turn["question"]]
        if stored != expected:  # what this user received is exactly what was recorded for this user
            misdelivered += 1
    return {"lost": lost, "misdelivered": misdelivered, "mismatched": mismatched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument(
        "--llm",
        choices=["embedded", "scripted"],
        default="embedded",
        help="embedded: the configured LLM (llama.cpp Gemma-3-270M by default); scripted: fixed replies",
    )
    parser.add_argument("--character", default="bench", help="'bench' (a short card) or a character id, e.g. mochi")
    parser.add_argument("--data-dir")
    parser.add_argument("--no-retrieval", action="store_true", help="turns without knowledge/memory retrieval")
    parser.add_argument("--abuse", action="store_true", help="a client sends malformed frames throughout")
    args = parser.parse_args()

    app, hub, settings = build(args)
    memory = MemorySampler()
    before = memory.rss()
    memory.start()
    with Server(app) as url:
        results, rtts, abuse, elapsed = asyncio.run(drive(url, args))
    memory.running = False
    after = memory.rss()
    llm = hub.base(args.character).llm
    turns = [t for r in results.values() for t in r["turns"]]
    tokens = sum(llm.count_tokens(t["deltas"]) for t in turns if t["deltas"])
    latencies = [t["latency"] for t in turns]
    firsts = [t["first_text"] for t in turns if t["first_text"] is not None]
    checks = check(results, hub, args.character, args.turns)
    errors = [e for r in results.values() for e in r["errors"]]
    load = os.getloadavg()
    report = {
        "sessions": args.sessions,
        "turns_per_session": args.turns,
        "llm": "scripted" if args.llm == "scripted" else f"{settings.llm.plugin}:{settings.llm.options.get('model')}",
        "character": args.character,
        "max_new_tokens": args.max_new_tokens,
        "retrieval": not args.no_retrieval,
        "elapsed_s": round(elapsed, 2),
        "turns": len(turns),
        "turns_per_s": round(len(turns) / elapsed, 3),
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / elapsed, 2),
        "latency_p50_s": round(percentile(latencies, 50), 2),
        "latency_p95_s": round(percentile(latencies, 95), 2),
        "first_text_p50_s": round(percentile(firsts, 50), 2),
        "first_text_p95_s": round(percentile(firsts, 95), 2),
        "ping_p50_ms": round(percentile(rtts, 50) * 1000, 1),
        "ping_p95_ms": round(percentile(rtts, 95) * 1000, 1),
        "ping_max_ms": round(max(rtts) * 1000, 1) if rtts else None,
        "rss_before_mb": round(before / 2**20),
        "rss_peak_mb": round(memory.peak / 2**20),
        "rss_after_mb": round(after / 2**20),
        "errors": len(errors),
        **checks,
        "abuse_replies": abuse,
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 1) for x in load],
    }
    r = report
    lines = [
        f"{args.sessions} sessions x {args.turns} turns, llm={r['llm']}, max_new_tokens={args.max_new_tokens}, "
        f"retrieval={'on' if r['retrieval'] else 'off'}",
        f"  throughput      {r['turns_per_s']} turns/s, {r['tokens_per_s']} generated tokens/s",
        f"  turn latency    p50 {r['latency_p50_s']} s, p95 {r['latency_p95_s']} s (send -> turn_end)",
        f"  first text      p50 {r['first_text_p50_s']} s, p95 {r['first_text_p95_s']} s",
        f"  ping under load p50 {r['ping_p50_ms']} ms, p95 {r['ping_p95_ms']} ms, max {r['ping_max_ms']} ms",
        f"  memory (RSS)    {r['rss_before_mb']} MB before, {r['rss_peak_mb']} MB peak, {r['rss_after_mb']} MB after",
        f"  delivery        lost {checks['lost']}, misdelivered {checks['misdelivered']}, "
        f"inconsistent {checks['mismatched']}, errors {len(errors)}",
    ]
    if args.abuse:
        lines.append(f"  abuse replies   {abuse}")
    lines.append(f"  machine         {os.cpu_count()} cores, load average {r['load_average']}")
    print("\n" + "\n".join(lines))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps(report, indent=1))
    if checks["lost"] or checks["misdelivered"] or checks["mismatched"] or errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
