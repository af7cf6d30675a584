"""Role-play chats and scene scripts: SillyTavern chat jsonl, `角色:「台词」` scene files
(ChatHaruhi corpora and our own `corpus/scenes/*.txt`), ChatHaruhi dialogue jsonl.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from companion.errors import InputFileError
from training.conversation import Conversation, Message
from training.importers.base import BaseImporter, ReadOptions, source_label
from training.importers.wechat import parse_time
from training.textio import iter_jsonl, read_text, sniff_text

_ST_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2}) ?@(\d{1,2})h ?(\d{1,2})m ?(\d{1,2})s")


def sillytavern_time(value: object) -> datetime | None:
    if isinstance(value, int | float):
        return parse_time(value)
    if not isinstance(value, str):
        return None
    match = _ST_DATE.search(value)
    if match:
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        try:
            return datetime(year, month, day, hour, minute, second)
        except ValueError:
            return None
    parsed = parse_time(value)
    if parsed:
        return parsed
    try:  # "March 5, 2024 4:31pm"
        return datetime.strptime(value.strip(), "%B %d, %Y %I:%M%p")
    except ValueError:
        return None


class SillyTavernChat(BaseImporter):
    name = "sillytavern"
    description = "SillyTavern chat .jsonl (a metadata line, then {name, is_user, mes, send_date})"
    extensions = (".jsonl",)

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        head = sniff_text(path, 16384)
        if '"is_user"' in head and '"mes"' in head:
            return 0.95
        if '"user_name"' in head and '"character_name"' in head:
            return 0.9
        return 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        meta: dict = {"format": self.name}
        messages: list[Message] = []
        for line, record in iter_jsonl(path):
            if not isinstance(record, dict):
                raise InputFileError(path, f"line {line}: expected an object")
            if "mes" not in record:
                if "character_name" in record or "user_name" in record:
                    meta["default_as"] = record.get("character_name")
                    meta["user_name"] = record.get("user_name")
                continue
            if record.get("is_system"):
                continue
            is_user = bool(record.get("is_user"))
            messages.append(
                Message(
                    speaker=str(record.get("name") or ("user" if is_user else "character")),
                    text=str(record.get("mes") or ""),
                    time=sillytavern_time(record.get("send_date")),
                    role="user" if is_user else None,
                    source=source_label(path, line),
                )
            )
        if "default_as" not in meta:
            names = [m.speaker for m in messages if m.role != "user"]
            if names:
                meta["default_as"] = max(set(names), key=names.count)
        yield Conversation(messages=messages, source=path.name, meta=meta)


_STAGE = r"(?:[（(][^)）]{0,80}[)）]\s*)?"  # 春日:(打出好球)「...」
SCENE_LINE = re.compile(rf"^\s*([^:：「」\s][^:：「」]{{0,40}}?)?\s*[:：]\s*{_STAGE}「(.*)」\s*$")
SCENE_LOOSE = re.compile(rf"^\s*([^:：「」\s][^:：「」]{{0,40}}?)?\s*[:：]\s*{_STAGE}「(.*)$")
SCENE_QUOTED = re.compile(r"^\s*([^:：「」\"“\s][^:：「」\"“]{0,40}?)\s*[:：]\s*[\"“](.*)[\"”]\s*$")
NARRATION = re.compile(r"^\s*[（(](.*)[)）]\s*$")
SCENE_MARKERS = {"'''scene'''", "scene", "场景", "旁白", "narrator", "narration"}
MARKER_LINE = re.compile(r"^\s*(?:'''Scene'''|Scene|场景|旁白|Narrator|Narration)\s*[:：]\s*(.*)$", re.I)


def parse_scene(text: str, path: Path) -> list[Message]:
    messages: list[Message] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line == "---":
            continue
        match = SCENE_LINE.match(line) or SCENE_LOOSE.match(line) or SCENE_QUOTED.match(line)
        if match:
            speaker, said = (match.group(1) or "").strip(), match.group(2).strip().rstrip("」")
            tail = ""
            stage = re.search(r"」\s*[（(](.*)[)）]\s*$", line)
            if stage:  # 春日:「那里」(春日指向操场...) keeps only the words
                said = line[line.index("「") + 1 : stage.start()].strip()
                tail = stage.group(1)
            if not speaker or speaker.lower().strip("'") in {m.strip("'") for m in SCENE_MARKERS}:
                messages.append(Message(text=said, kind="narration", source=source_label(path, number)))
                continue
            messages.append(Message(speaker=speaker, text=said, source=source_label(path, number)))
            if tail:
                messages.append(Message(text=tail, kind="narration", source=source_label(path, number)))
            continue
        narration = NARRATION.match(line) or MARKER_LINE.match(line)
        messages.append(
            Message(text=narration.group(1) if narration else line, kind="narration", source=source_label(path, number))
        )
    return messages


class SceneScript(BaseImporter):
    name = "scenes"
    description = 'Scene scripts, one line per turn: 角色:「台词」 or Name: "line" (ChatHaruhi, corpus/scenes/*.txt)'
    extensions = (".txt",)

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        lines = [line for line in sniff_text(path, 8192).split("\n")[:50] if line.strip() and line.strip() != "---"]
        if not lines:
            return 0.0
        hits = sum(
            1
            for line in lines
            if SCENE_LINE.match(line) or SCENE_LOOSE.match(line) or SCENE_QUOTED.match(line) or MARKER_LINE.match(line)
        )
        return 0.9 if hits >= max(1, len(lines) * 0.6) else (0.4 if hits >= 2 else 0.0)

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        messages = parse_scene(read_text(path).text, path)
        yield Conversation(messages=messages, source=path.name, meta={"format": self.name})


class HaruhiJSONL(BaseImporter):
    name = "chatharuhi-jsonl"
    description = "ChatHaruhi jsonl: {role, text} lines, or {role_A, role_B, query, response}"
    extensions = (".jsonl",)

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        head = sniff_text(path, 4096)
        if '"role_A"' in head and '"query"' in head and '"response"' in head:
            return 0.95
        first = head.split("\n", 1)[0]
        if re.match(r'^\{\s*"role"\s*:\s*"[^"]*"\s*,\s*"text"\s*:', first):
            return 0.9
        return 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        messages: list[Message] = []
        pairs: list[Conversation] = []
        for line, record in iter_jsonl(path):
            if not isinstance(record, dict):
                raise InputFileError(path, f"line {line}: expected an object")
            source = source_label(path, line)
            if "role_A" in record:
                if not record.get("role_B"):
                    continue  # a refusal written by the dataset's generator, not the character
                query = str(record.get("query", "")).strip().strip("「」")
                response = str(record.get("response", "")).strip().strip("「」")
                pairs.append(
                    Conversation(
                        messages=[
                            Message(speaker=str(record["role_A"]), text=query, source=source),
                            Message(speaker=str(record["role_B"]), text=response, source=source),
                        ],
                        source=path.name,
                        meta={"format": self.name},
                    )
                )
            else:
                messages.append(
                    Message(speaker=str(record.get("role", "")), text=str(record.get("text", "")), source=source)
                )
        yield from pairs
        if messages:
            yield Conversation(messages=messages, source=path.name, meta={"format": self.name})
