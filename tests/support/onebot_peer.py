"""A OneBot v11 implementation stand-in (what NapCat, Lagrange or LLOneBot do), as a process.

    python -m tests.support.onebot_peer reverse ws://127.0.0.1:PORT/onebot/v11/ws --self-id 10001 \
        --token T --script events.json --expect 5
    python -m tests.support.onebot_peer forward --token T --script events.json --expect 5

reverse: connects to the bot with `X-Self-ID`, `X-Client-Role: Universal` and the Bearer token.
forward: listens on a loopback port (printed as `LISTENING <port>`), checks the bot's token.
Either way it sends a lifecycle event, then each scripted event (`{"wait": s}` entries pause),
answers every API call like a real implementation (status ok, a fresh message_id), and exits
after `--expect` send_* calls or `--timeout` seconds, printing each API call as a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time

import websockets

message_ids = itertools.count(90_001)


def lifecycle(self_id: int) -> dict:
    return {"time": int(time.time()), "self_id": self_id, "post_type": "meta_event",
            "meta_event_type": "lifecycle", "sub_type": "connect"}  # fmt: skip


async def converse(ws, self_id: int, script: list[dict], expect: int, timeout: float) -> list[dict]:
    calls: list[dict] = []
    sends = 0
    await ws.send(json.dumps(lifecycle(self_id)))

    async def feed() -> None:
        for item in script:
            if "wait" in item:
                await asyncio.sleep(item["wait"])
                continue
            event = {"time": int(time.time()), "self_id": self_id, "message_id": next(message_ids), "font": 0, **item}
            await ws.send(json.dumps(event, ensure_ascii=False))

    feeder = asyncio.create_task(feed())
    deadline = time.monotonic() + timeout
    try:
        while sends < expect:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                raw = await asyncio.wait_for(ws.recv(), remaining)
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                break
            call = json.loads(raw)
            calls.append(call)
            print(json.dumps(call, ensure_ascii=False), flush=True)
            data = {"message_id": next(message_ids)} if call.get("action", "").startswith("send_") else {}
            if call.get("action") == "get_login_info":
                data = {"user_id": self_id, "nickname": "bot"}
            await ws.send(json.dumps({"status": "ok", "retcode": 0, "data": data, "echo": call.get("echo")}))
            if call.get("action", "").startswith("send_"):
                sends += 1
        await asyncio.sleep(0.3)  # anything extra (it would be a bug) still gets printed
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                break
            print(json.dumps(json.loads(raw), ensure_ascii=False), flush=True)
    finally:
        feeder.cancel()
    return calls


async def reverse(args) -> None:
    headers = {"X-Self-ID": str(args.self_id), "X-Client-Role": "Universal", "User-Agent": "OneBot/11 test-peer"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    try:
        async with websockets.connect(args.url, additional_headers=headers, max_size=None) as ws:
            await converse(ws, args.self_id, args.events, args.expect, args.timeout)
    except websockets.InvalidStatus as exc:
        print(f"REFUSED {exc.response.status_code}", flush=True)


async def forward(args) -> None:
    done = asyncio.Event()

    async def handler(ws) -> None:
        auth = ws.request.headers.get("Authorization", "")
        if args.token and auth != f"Bearer {args.token}":
            print("BAD TOKEN", flush=True)
            await ws.close(1008)
            return
        await converse(ws, args.self_id, args.events, args.expect, args.timeout)
        done.set()

    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"LISTENING {port}", flush=True)
        try:
            await asyncio.wait_for(done.wait(), args.timeout + 30)
        except asyncio.TimeoutError:
            print("NO CONNECTION", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["reverse", "forward"])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--self-id", type=int, default=10001)
    parser.add_argument("--token")
    parser.add_argument("--script", required=True)
    parser.add_argument("--expect", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    with open(args.script, encoding="utf-8") as handle:
        args.events = json.load(handle)
    asyncio.run(reverse(args) if args.mode == "reverse" else forward(args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
