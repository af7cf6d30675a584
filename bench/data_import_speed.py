"""Import throughput: a generated 100k-message WeChat log (MemoTrace CSV layout).

Times (1) reading the export into conversations and (2) the whole build: role choice,
cleaning, PII scrubbing, sessions, windows, near-duplicate removal and the split. Goal: well
under a minute for 100k messages. The log is synthetic but shaped like a real one: two
people, bursts of short messages, stickers and images, a phone number now and then, long
gaps between sessions.

    .venv/bin/python bench/data_import_speed.py [--messages 100000] [--format memotrace-csv|qq-txt]
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.cleaning import CleanConfig  # noqa: E402
from training.dataset import Selection, build_dataset  # noqa: E402
from training.importers import ReadOptions, read_paths  # noqa: E402

PHRASES = [
    "在吗", "吃了没", "今天好累啊", "哈哈哈哈", "周末去哪玩", "我到了", "等我五分钟", "好的好的", "晚安[月亮]",
    "这个好好笑[捂脸]", "明天几点见", "你看这个链接", "下班了吗", "在路上了", "你猜怎么着", "笑死我了😂",
    "我跟你说个事", "老板又加班了", "那家店超好吃", "记得带伞", "生日快乐！🎂", "想喝奶茶", "(≧▽≦)", "嗯嗯",
    "我电话13812345678你存一下", "发我邮箱 someone@example.com 吧", "刚看完那部电影，结局太意外了",
    "周六下午三点在人民广场地铁站2号口见", "你上次说的那本书叫什么名字来着", "今天的晚霞好美，可惜你没看到",
]  # fmt: skip


def generate(path: Path, count: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    now = datetime(2023, 1, 1, 8, 0, 0)
    header = "localId,TalkerId,Type,SubType,IsSender,CreateTime,Status,StrContent,StrTime,Remark,NickName,Sender"
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header.split(","))
        sender = 0
        for i in range(count):
            now += timedelta(seconds=rng.choice([5, 20, 60, 300])) if rng.random() > 0.02 else timedelta(hours=9)
            if rng.random() < 0.45:
                sender = 1 - sender
            kind = rng.choices([1, 3, 47, 34], weights=[90, 4, 5, 1])[0]
            text = rng.choice(PHRASES) + (f" {i % 97}" if rng.random() < 0.3 else "") if kind == 1 else ""
            stamp = now.strftime("%Y-%m-%d %H:%M:%S")
            writer.writerow(
                [i, "wxid_friend", kind, 0, sender, int(now.timestamp()), 2, text, stamp, "小林", "林晓", ""]
            )


def generate_qq(path: Path, count: int, seed: int = 7) -> None:
    """The same kind of log as a QQ txt export."""
    rng = random.Random(seed)
    now = datetime(2023, 1, 1, 8, 0, 0)
    people = ["小林(123456789)", "我<me@example.com>"]
    lines = ["消息记录（此消息记录为文本格式，不支持重新导入）", "", "=" * 64, "消息分组:我的好友", "=" * 64]
    lines += ["消息对象:小林", "=" * 64, ""]
    sender = 0
    for _ in range(count):
        now += timedelta(seconds=rng.choice([5, 20, 60, 300])) if rng.random() > 0.02 else timedelta(hours=9)
        if rng.random() < 0.45:
            sender = 1 - sender
        text = rng.choice(PHRASES) if rng.random() > 0.05 else "[图片]"
        lines += [f"{now:%Y-%m-%d %H:%M:%S} {people[sender]}", text, ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--format", choices=["memotrace-csv", "qq-txt"], default="memotrace-csv")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        if args.format == "qq-txt":
            path = Path(folder) / "小林.txt"
            generate_qq(path, args.messages)
        else:
            path = Path(folder) / "小林_utf8.csv"
            generate(path, args.messages)
        print(
            f"generated {args.messages:,} messages ({path.stat().st_size / 1e6:.1f} MB) in "
            f"{time.perf_counter() - started:.1f} s"
        )

        started = time.perf_counter()
        read = sum(len(c.messages) for _, convs in read_paths([path], ReadOptions()) for c in convs)
        read_seconds = time.perf_counter() - started
        print(
            f"import (detect + read): {read:,} messages in {read_seconds:.2f} s = {read / read_seconds:,.0f} messages/s"
        )

        started = time.perf_counter()
        me = Selection(names=("me@example.com",)) if args.format == "qq-txt" else Selection()
        dataset = build_dataset(read_paths([path], ReadOptions()), selection=me, config=CleanConfig())
        build_seconds = time.perf_counter() - started
        report = dataset.report
        print(
            f"full build (read, clean, PII, sessions, dedupe, split): {report.messages_read:,} messages in "
            f"{build_seconds:.2f} s = {report.messages_read / build_seconds:,.0f} messages/s; "
            f"{report.train:,} train + {report.eval:,} eval samples"
        )
        print(f"goal: well under 60 s for 100k messages -> {'met' if build_seconds < 30 else 'NOT met'}")


if __name__ == "__main__":
    main()
