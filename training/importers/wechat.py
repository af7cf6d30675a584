"""WeChat exports: MemoTrace (JSON for AI training, CSV, TXT, AI TXT), PyWxDump/WeClone CSV
(both layouts) and sjzar/chatlog (JSON, CSV).

Layouts are those in `shared/testdata/chatlog_formats/MEMOTRACE_SCHEMA_NOTES.md`. Each chat
becomes one `Conversation` in time order (sessions are cut later, in cleaning). Messages the
exporting user sent carry `is_self=True`, so `--me` can be left out for these formats. Media
become placeholders (`[图片]`, `[语音]`, ...) with `kind="media"`; system notices (joins,
recalls, pats) get `kind="system"` and are dropped by cleaning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from companion.errors import InputFileError
from training.conversation import Conversation, Message
from training.importers.base import BaseImporter, ReadOptions, source_label
from training.textio import csv_header, iter_csv, iter_json_array, read_text, sniff_text

SELF_NAME = "我"

# WeChat MSG table Type -> placeholder (None: a text message, "system": a notice)
WECHAT_TYPES: dict[int, str | None] = {
    1: None,
    3: "[图片]",
    34: "[语音]",
    42: "[名片]",
    43: "[视频]",
    47: "[表情包]",
    48: "[位置]",
    49: "[链接]",
    50: "[通话]",
    10000: "system",
    10002: "system",
}
APP_SUBTYPES = {
    6: "[文件]",
    5: "[链接]",
    19: "[聊天记录]",
    33: "[小程序]",
    36: "[小程序]",
    2000: "[转账]",
    2001: "[红包]",
}

# PyWxDump / WeClone `type_name` -> placeholder
TYPE_NAMES: dict[str, str | None] = {
    "文本": None,
    "引用回复": None,
    "图片": "[图片]",
    "语音": "[语音]",
    "视频": "[视频]",
    "动画表情": "[表情包]",
    "表情": "[表情包]",
    "文件": "[文件]",
    "位置": "[位置]",
    "名片": "[名片]",
    "卡片式链接": "[链接]",
    "分享的小程序": "[小程序]",
    "合并转发的聊天记录": "[聊天记录]",
    "转账": "[转账]",
    "红包": "[红包]",
    "音视频通话": "[通话]",
    "语音通话": "[通话]",
    "视频通话": "[通话]",
    "系统通知": "system",
    "拍一拍": "system",
    "撤回消息": "system",
}

_TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y年%m月%d日 %H:%M:%S",
)


def parse_time(value: str | int | float | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        number = float(value)
        if number > 1e12:  # milliseconds
            number /= 1000
        try:
            return datetime.fromtimestamp(number)
        except (OverflowError, OSError, ValueError):
            return None
    text = str(value).strip()
    if len(text) == 19 and text[4] == "-" and text[10] == " ":
        try:  # the common 'YYYY-mm-dd HH:MM:SS', fast
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone().replace(tzinfo=None) if parsed.tzinfo else parsed


_XML_TITLE = re.compile(r"<title>(.*?)</title>", re.S)


def _app_message(content: str, subtype: int) -> tuple[str, str]:
    """(kind, text) for a Type 49 app message: a quoted reply keeps its own text."""
    if subtype == 57:
        match = _XML_TITLE.search(content or "")
        if match and match.group(1).strip():
            return "text", match.group(1).strip()
        if content and not content.lstrip().startswith("<"):
            return "text", content.strip()
    return "media", APP_SUBTYPES.get(subtype, "[链接]")


def _int(value: str | int | None, default: int = 0) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _flag(value: object) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


def _chunk_chats(messages: Iterable[tuple[str, Message]], source: str, fmt: str) -> Iterator[Conversation]:
    """Group (chat key, message) pairs by chat, each chat sorted by time."""
    chats: dict[str, list[Message]] = {}
    for key, message in messages:
        chats.setdefault(key, []).append(message)
    for key, chat in chats.items():
        if any(m.time for m in chat):
            chat.sort(key=lambda m: m.time or datetime.min)
        yield Conversation(messages=chat, source=source, meta={"format": fmt, "chat": key})


class MemoTraceJSON(BaseImporter):
    name = "memotrace-json"
    description = "MemoTrace 'JSON for AI training' export (*_train.json / *_dev.json)"
    extensions = (".json",)
    _SYSTEM = re.compile(r"^你是(.+?)，一个聪明、热情、善良的人")

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        head = sniff_text(path, 4096)
        if '"conversations"' in head and "一个聪明、热情、善良的人" in head:
            return 0.97
        return 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        for index, record in iter_json_array(path):
            turns = record.get("conversations") if isinstance(record, dict) else None
            if not isinstance(turns, list):
                raise InputFileError(path, f"record {index}: no 'conversations' list")
            me = ""
            messages = []
            for turn in turns:
                role, content = turn.get("role"), str(turn.get("content", ""))
                if role == "system":
                    match = self._SYSTEM.match(content)
                    me = match.group(1) if match else me
                    continue
                is_self = role == "assistant"
                messages.append(
                    Message(
                        speaker=(me or SELF_NAME) if is_self else "friend",
                        role="assistant" if is_self else "user",
                        text=content,
                        is_self=is_self,
                        source=source_label(path, f"#{index}"),
                    )
                )
            yield Conversation(messages=messages, source=path.name, meta={"format": self.name})


MEMOTRACE_CSV_HEADER = ["localId", "TalkerId", "Type", "SubType", "IsSender", "CreateTime", "Status", "StrContent"]
MEMOTRACE_NEW_CSV_HEADER = ["消息ID", "类型", "发送人", "时间", "内容"]


class MemoTraceCSV(BaseImporter):
    name = "memotrace-csv"
    description = (
        "MemoTrace CSV export (localId,TalkerId,Type,...,StrContent,StrTime,...; or 消息ID,类型,发送人,时间,内容)"
    )
    extensions = (".csv",)

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        header = csv_header(path)
        if all(column in header for column in MEMOTRACE_CSV_HEADER):
            return 0.97
        if all(column in header for column in MEMOTRACE_NEW_CSV_HEADER):
            return 0.9
        return 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        header = csv_header(path)
        rows = iter_csv(path)
        if "StrContent" in header:
            yield from _chunk_chats(self._classic(path, rows), path.name, self.name)
        else:
            yield from _chunk_chats(self._new(path, rows), path.name, self.name)

    def _classic(self, path: Path, rows: Iterable[dict[str, str]]) -> Iterator[tuple[str, Message]]:
        for line, row in enumerate(rows, start=2):
            msg_type, subtype = _int(row.get("Type"), 1), _int(row.get("SubType"))
            is_self = _flag(row.get("IsSender"))
            content = row.get("StrContent", "")
            placeholder = WECHAT_TYPES.get(msg_type, "[其他消息]")
            if msg_type == 49:
                kind, text = _app_message(content, subtype)
            elif placeholder is None:
                kind, text = "text", content
            elif placeholder == "system":
                kind, text = "system", content
            else:
                kind, text = "media", placeholder
            contact = row.get("Remark") or row.get("NickName") or row.get("TalkerId") or "?"
            sender = row.get("Sender", "").strip()
            speaker = SELF_NAME if is_self else (sender or contact)
            time = parse_time(row.get("StrTime")) or parse_time(row.get("CreateTime"))
            message = Message(
                speaker=speaker,
                speaker_id=None if is_self else (row.get("TalkerId") or None),
                text=text,
                time=time,
                is_self=is_self,
                kind=kind,  # type: ignore[arg-type]
                source=source_label(path, line),
            )
            yield row.get("TalkerId") or contact, message

    def _new(self, path: Path, rows: Iterable[dict[str, str]]) -> Iterator[tuple[str, Message]]:
        for line, row in enumerate(rows, start=2):
            type_name = row.get("类型", "文本").strip()
            placeholder = TYPE_NAMES.get(type_name, None if type_name in ("", "文本", "text") else f"[{type_name}]")
            sender = row.get("发送人", "").strip()
            is_self = sender in ("我", "me", "Me")
            kind = "text" if placeholder is None else ("system" if placeholder == "system" else "media")
            text = row.get("内容", "") if kind != "media" else placeholder
            yield (
                path.stem,
                Message(
                    speaker=SELF_NAME if is_self else sender,
                    text=text or "",
                    time=parse_time(row.get("时间")),
                    is_self=is_self,
                    kind=kind,  # type: ignore[arg-type]
                    source=source_label(path, line),
                ),
            )


_TXT_HEADER = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (.+)$")
_QUOTE_LINE = re.compile(r"^引用:")


class MemoTraceTXT(BaseImporter):
    name = "memotrace-txt"
    description = "MemoTrace TXT export ('YYYY-mm-dd HH:MM:SS name' then the message)"
    extensions = (".txt",)

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        lines = [line for line in sniff_text(path, 8192).split("\n")[:60] if line.strip()]
        headers = sum(1 for line in lines if _TXT_HEADER.match(line))
        if headers >= 2 and headers >= len(lines) / 4 and not any(line.startswith("消息记录") for line in lines[:3]):
            return 0.85
        return 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        text = read_text(path).text
        messages: list[Message] = []
        current: tuple[str, datetime | None, int] | None = None
        body: list[str] = []

        def flush() -> None:
            if current is None:
                return
            speaker, time, line_no = current
            content = "\n".join(line for line in body if not _QUOTE_LINE.match(line)).strip()
            kind = "media" if re.fullmatch(r"\[(图片|语音|视频|表情包|文件|动画表情)\]", content) else "text"
            messages.append(
                Message(speaker=speaker, text=content, time=time, kind=kind, source=source_label(path, line_no))
            )

        for number, line in enumerate(text.split("\n"), start=1):
            match = _TXT_HEADER.match(line)
            if match:
                flush()
                current = (match.group(2).strip(), parse_time(match.group(1)), number)
                body = []
            elif current is not None:
                body.append(line)
        flush()
        yield Conversation(messages=messages, source=path.name, meta={"format": self.name})


_AI_TXT_SPEAKER = re.compile(r"^([^\s:：][^:：]{0,30}):$")


class MemoTraceAITXT(BaseImporter):
    name = "memotrace-ai-txt"
    description = "MemoTrace 'AI TXT' export ('name:' header when the speaker changes, no timestamps)"
    extensions = (".txt",)

    def _speakers(self, lines: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for index, line in enumerate(lines):
            match = _AI_TXT_SPEAKER.match(line)
            if match and (index == 0 or not lines[index - 1].strip()):
                counts[match.group(1)] = counts.get(match.group(1), 0) + 1
        return counts

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        lines = sniff_text(path, 8192).split("\n")[:200]
        counts = self._speakers(lines)
        if counts and sum(counts.values()) >= 3 and len(counts) <= max(3, sum(counts.values()) // 3):
            return 0.6
        return 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        lines = read_text(path).text.split("\n")
        known = {name for name, count in self._speakers(lines).items() if count >= 2} or set(self._speakers(lines))
        messages: list[Message] = []
        speaker: str | None = None
        body: list[str] = []
        start = 0

        def flush() -> None:
            content = "\n".join(body).strip()
            if speaker is not None and content:
                messages.append(Message(speaker=speaker, text=content, source=source_label(path, start)))

        for number, line in enumerate(lines, start=1):
            match = _AI_TXT_SPEAKER.match(line)
            if match and match.group(1) in known and (number == 1 or not lines[number - 2].strip()):
                flush()
                speaker, body, start = match.group(1), [], number
            else:
                body.append(line)
        flush()
        yield Conversation(messages=messages, source=path.name, meta={"format": self.name})


PYWXDUMP_NEW = ["id", "MsgSvrID", "type_name", "is_sender", "talker", "room_name", "msg", "src", "CreateTime"]
PYWXDUMP_OLD = ["id", "MsgSvrID", "type_name", "is_sender", "talker", "room_name", "content", "CreateTime"]


class PyWxDumpCSV(BaseImporter):
    name = "pywxdump-csv"
    description = "PyWxDump / WeClone CSV (id,MsgSvrID,type_name,is_sender,talker,room_name,msg|content,...)"
    extensions = (".csv",)

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        header = csv_header(path)
        if all(c in header for c in PYWXDUMP_NEW) or all(c in header for c in PYWXDUMP_OLD):
            return 0.97
        return 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        yield from _chunk_chats(self._rows(path), path.name, self.name)

    def _rows(self, path: Path) -> Iterator[tuple[str, Message]]:
        for line, row in enumerate(iter_csv(path), start=2):
            text = row.get("msg")
            if text is None:  # old layout: content is JSON {"src": ..., "msg": ...}
                raw = row.get("content", "")
                try:
                    parsed = json.loads(raw) if raw.strip().startswith("{") else {"msg": raw}
                except json.JSONDecodeError:
                    parsed = {"msg": raw}
                text = str(parsed.get("msg", "")) if isinstance(parsed, dict) else raw
            type_name = row.get("type_name", "文本").strip()
            placeholder = TYPE_NAMES.get(type_name, None if type_name in ("", "文本") else f"[{type_name}]")
            kind = "text" if placeholder is None else ("system" if placeholder == "system" else "media")
            is_self = _flag(row.get("is_sender"))
            talker = row.get("talker", "").strip()
            yield (
                row.get("room_name") or talker or path.stem,
                Message(
                    speaker=SELF_NAME if is_self else (talker or "?"),
                    speaker_id=None if is_self else (talker or None),
                    text=text if kind != "media" else placeholder,  # type: ignore[arg-type]
                    time=parse_time(row.get("CreateTime")),
                    is_self=is_self,
                    kind=kind,  # type: ignore[arg-type]
                    source=source_label(path, line),
                ),
            )


class ChatlogExport(BaseImporter):
    name = "wechat-chatlog"
    description = "sjzar/chatlog export: JSON [{seq,time,talker,sender,senderName,isSelf,type,content}] or CSV"
    extensions = (".json", ".csv")

    def detect(self, path: Path) -> float:
        if path.name.lower().endswith(".csv"):
            header = csv_header(path)
            return 0.9 if {"Time", "SenderName", "Sender", "Talker", "Content"} <= set(header) else 0.0
        if not self.has_extension(path):
            return 0.0
        head = sniff_text(path, 4096)
        keys = ('"talker"', '"sender"', '"isSelf"', '"content"', '"seq"')
        return 0.92 if all(k in head for k in keys) else 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        if path.name.lower().endswith(".csv"):
            rows = (
                (
                    row.get("Talker", path.stem),
                    Message(
                        speaker=row.get("SenderName") or row.get("Sender", "?"),
                        speaker_id=row.get("Sender") or None,
                        text=row.get("Content", ""),
                        time=parse_time(row.get("Time")),
                        source=source_label(path, line),
                    ),
                )
                for line, row in enumerate(iter_csv(path), start=2)
            )
            yield from _chunk_chats(rows, path.name, self.name)
            return
        yield from _chunk_chats(self._json(path), path.name, self.name)

    def _json(self, path: Path) -> Iterator[tuple[str, Message]]:
        for index, item in iter_json_array(path):
            if not isinstance(item, dict):
                raise InputFileError(path, f"item {index} is not an object")
            msg_type = _int(item.get("type"), 1)
            placeholder = WECHAT_TYPES.get(msg_type, "[其他消息]")
            content = str(item.get("content") or "")
            if msg_type == 49:
                kind, text = _app_message(content, _int(item.get("subType")))
            elif placeholder is None:
                kind, text = "text", content
            elif placeholder == "system":
                kind, text = "system", content
            else:
                kind, text = "media", placeholder
            is_self = bool(item.get("isSelf"))
            yield (
                str(item.get("talker") or path.stem),
                Message(
                    speaker=SELF_NAME if is_self else str(item.get("senderName") or item.get("sender") or "?"),
                    speaker_id=None if is_self else (str(item.get("sender")) if item.get("sender") else None),
                    text=text,
                    time=parse_time(item.get("time")),
                    is_self=is_self,
                    kind=kind,  # type: ignore[arg-type]
                    source=source_label(path, f"#{index}"),
                ),
            )
