"""The classic QQ PC client's "导出消息记录 → txt" export.

```
消息记录（此消息记录为文本格式，不支持重新导入）
================================================================
消息分组:我的好友
================================================================
消息对象:小明
================================================================

2019-09-23 20:43:38 昵称(123456789)
message line(s)
```
A header is `date time[ AM/PM] [【头衔】]nick(QQ号)` or `nick<email>`; a message runs until the
next header. Each `消息对象` section (one export may hold many) becomes one conversation. The
QQ number or email goes to `speaker_id`, so `--me 123456789` works as well as `--me 昵称`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from training.conversation import Conversation, Message
from training.importers.base import BaseImporter, ReadOptions, source_label
from training.textio import read_text, sniff_text

HEADER = re.compile(
    r"^(\d{4}-\d{1,2}-\d{1,2}) (\d{1,2}:\d{2}:\d{2})(?: ?([AP]M))? (?:【[^】]*】)?"
    r"(.*?)(?:\((\d{5,12})\)|<([^<>\s]+)>)\s*$"
)
SECTION = re.compile(r"^消息对象[:：](.*)$")
GROUP = re.compile(r"^消息分组[:：](.*)$")
RULE = re.compile(r"^={10,}\s*$")
SYSTEM_IDS = {"10000", "1000000"}


def _time(day: str, clock: str, meridiem: str | None) -> datetime | None:
    try:
        stamp = datetime.strptime(f"{day} {clock}", "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    if meridiem == "PM" and stamp.hour < 12:
        stamp = stamp.replace(hour=stamp.hour + 12)
    elif meridiem == "AM" and stamp.hour == 12:
        stamp = stamp.replace(hour=0)
    return stamp


class QQText(BaseImporter):
    name = "qq-txt"
    description = "QQ PC client txt export (消息记录 / 消息对象 / 'date time nick(QQ号)')"
    extensions = (".txt",)

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        head = sniff_text(path, 8192)
        lines = head.split("\n")[:80]
        headers = sum(1 for line in lines if HEADER.match(line))
        if "消息记录" in head[:200] and ("消息对象" in head or headers):
            return 0.97
        if headers >= 2:
            return 0.75
        return 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        text = read_text(path).text
        group = peer = ""
        messages: list[Message] = []
        pending: dict | None = None
        body: list[str] = []

        def flush() -> None:
            nonlocal pending
            if pending is not None:
                content = "\n".join(body).strip()
                kind = "system" if pending["speaker_id"] in SYSTEM_IDS else "text"
                if content == "[图片]" or content == "[表情]":
                    kind = "media"
                messages.append(Message(text=content, kind=kind, **{k: v for k, v in pending.items()}))
            pending = None

        def conversation() -> Conversation:
            return Conversation(
                messages=list(messages), source=path.name, meta={"format": self.name, "chat": peer, "group": group}
            )

        for number, line in enumerate(text.split("\n"), start=1):
            section = SECTION.match(line)
            if section:
                flush()
                if messages:
                    yield conversation()
                messages.clear()
                peer = section.group(1).strip()
                continue
            grouping = GROUP.match(line)
            if grouping:
                flush()
                if messages:
                    yield conversation()
                messages.clear()
                group = grouping.group(1).strip()
                continue
            if RULE.match(line):
                continue
            header = HEADER.match(line)
            if header:
                flush()
                day, clock, meridiem, nick, qq, email = header.groups()
                pending = {
                    "speaker": nick.strip() or (qq or email or "?"),
                    "speaker_id": qq or email,
                    "time": _time(day, clock, meridiem),
                    "source": source_label(path, number),
                }
                body = []
            elif pending is not None:
                body.append(line)
        flush()
        if messages:
            yield conversation()
