"""Fine-tuning datasets: ShareGPT (`from/value` and `role/content`), OpenAI `messages` jsonl,
Alpaca (with `system` and `history`), and the datasets a LLaMA-Factory `dataset_info.json`
describes (its `formatting`, `columns` and `tags` are honoured; preference sets contribute
their prompt and `chosen` answer; hub-only entries are skipped with a note).

These sources already say who the assistant is, so their messages carry `role`. Tool calls and
observations are left out: they teach tool use, not a character's voice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from companion.errors import InputFileError
from training.conversation import Conversation, Message
from training.importers.base import BaseImporter, ReadOptions, source_label
from training.textio import iter_json_array, iter_jsonl, load_json, sniff_text

USER_TAGS = {"human", "user", "prompter", "question"}
ASSISTANT_TAGS = {"gpt", "assistant", "model", "bot", "chatgpt", "bard", "character", "answer"}
SYSTEM_TAGS = {"system"}
TOOL_TAGS = {"function_call", "observation", "tool", "function", "tool_call", "ipython"}
JSON_EXTENSIONS = (".json", ".jsonl", ".ndjson")


def iter_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, record) for a JSON array file or a JSON Lines file."""
    head = sniff_text(path, 256).lstrip("\ufeff \t\n")
    if head.startswith("["):
        for index, record in iter_json_array(path):
            yield f"#{index}", record
    elif head.startswith("{") and not path.name.lower().endswith(".json"):
        for line, record in iter_jsonl(path):
            yield str(line), record
    elif head.startswith("{"):
        # a .json file holding one object per line, or one object
        try:
            data = load_json(path)
        except InputFileError:
            for line, record in iter_jsonl(path):
                yield str(line), record
            return
        records = data if isinstance(data, list) else [data]
        for index, record in enumerate(records):
            yield f"#{index}", record
    elif head:
        raise InputFileError(path, "expected JSON (an array of records) or JSON Lines (one record per line)")


def content_text(content: Any) -> str:
    """OpenAI content: a string or a list of parts; only text parts are kept."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict) and "text" in part)
    return "" if content is None else str(content)


MEDIA_TOKENS = {"<image>": "[图片]", "<video>": "[视频]", "<audio>": "[语音]"}


def media_tokens(text: str) -> str:
    """LLaMA-Factory's multimodal markers become the placeholders chat logs use."""
    for token, placeholder in MEDIA_TOKENS.items():
        text = text.replace(token, placeholder)
    return text


def substitute(text: str, variables: dict[str, str]) -> str:
    for key, value in variables.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def _role(tag: str, tags: dict[str, str]) -> str | None:
    tag = str(tag).strip()
    if tag == tags.get("user_tag") or tag.lower() in USER_TAGS:
        return "user"
    if tag == tags.get("assistant_tag") or tag.lower() in ASSISTANT_TAGS:
        return "assistant"
    if tag == tags.get("system_tag") or tag.lower() in SYSTEM_TAGS:
        return "system"
    if tag in (tags.get("observation_tag"), tags.get("function_tag")) or tag.lower() in TOOL_TAGS:
        return "tool"
    return None


def messages_conversation(
    path: Path,
    where: str,
    turns: Any,
    *,
    fmt: str,
    tags: dict[str, str] | None = None,
    system: str | None = None,
    variables: dict[str, str] | None = None,
) -> Conversation:
    tags = tags or {}
    if not isinstance(turns, list):
        raise InputFileError(path, f"record {where}: the messages are not a list")
    role_key = tags.get("role_tag")
    content_key = tags.get("content_tag")
    messages: list[Message] = []
    meta: dict[str, Any] = {"format": fmt}
    dropped_tools = 0
    for turn in turns:
        if not isinstance(turn, dict):
            raise InputFileError(path, f"record {where}: a message is not an object")
        tag = turn.get(role_key) if role_key else turn.get("from", turn.get("role"))
        content = turn.get(content_key) if content_key else turn.get("value", turn.get("content"))
        role = _role(str(tag), tags)
        if role is None:
            raise InputFileError(path, f"record {where}: unknown role {tag!r}")
        if role == "tool" or turn.get("tool_calls"):
            dropped_tools += 1
            continue
        text = media_tokens(substitute(content_text(content), variables or {}))
        if role == "system":
            system = text
            continue
        speaker = str(turn.get("name") or role)
        messages.append(Message(speaker=speaker, role=role, text=text, source=source_label(path, where)))  # type: ignore[arg-type]
    if system:
        meta["system"] = substitute(system, variables or {})
    if dropped_tools:
        meta["dropped_tool_turns"] = dropped_tools
    return Conversation(messages=messages, source=path.name, meta=meta)


def _head_keys(path: Path) -> str:
    return sniff_text(path, 16384)


class ShareGPT(BaseImporter):
    name = "sharegpt"
    description = "ShareGPT: {conversations: [{from, value}]} or [{role, content}], JSON or JSONL"
    extensions = JSON_EXTENSIONS

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        head = _head_keys(path)
        if '"conversations"' in head and ('"from"' in head or '"role"' in head):
            return 0.9
        if '"messages"' in head and '"from"' in head and '"value"' in head:
            return 0.85
        return 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        for where, record in iter_records(path):
            if not isinstance(record, dict):
                raise InputFileError(path, f"record {where} is not an object")
            turns = record.get("conversations", record.get("messages"))
            yield messages_conversation(
                path, where, turns, fmt=self.name, system=record.get("system"), variables=options.variables
            )


class OpenAIMessages(BaseImporter):
    name = "openai"
    description = "OpenAI chat fine-tuning jsonl: {messages: [{role, content}]}"
    extensions = JSON_EXTENSIONS

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        head = _head_keys(path)
        if '"messages"' in head and '"role"' in head and '"content"' in head:
            return 0.88 if path.name.lower().endswith((".jsonl", ".ndjson")) else 0.8
        return 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        for where, record in iter_records(path):
            if not isinstance(record, dict) or "messages" not in record:
                raise InputFileError(path, f"record {where}: expected an object with 'messages'")
            yield messages_conversation(path, where, record["messages"], fmt=self.name, variables=options.variables)


def alpaca_conversation(
    path: Path, where: str, record: dict, columns: dict[str, str], fmt: str, variables: dict[str, str]
) -> Conversation:
    def col(name: str, default: str) -> Any:
        return record.get(columns.get(name, default))

    prompt, query, response = col("prompt", "instruction"), col("query", "input"), col("response", "output")
    if prompt is None or response is None:
        raise InputFileError(path, f"record {where}: an Alpaca record needs instruction and output")
    if isinstance(response, list):  # some sets keep several candidate outputs
        response = response[0] if response else ""
    if isinstance(response, dict):  # preference 'chosen' in sharegpt shape
        response = response.get("value", response.get("content", ""))
    messages: list[Message] = []
    source = source_label(path, where)
    for pair in col("history", "history") or []:
        if isinstance(pair, list | tuple) and len(pair) == 2:
            messages.append(
                Message(speaker="user", role="user", text=substitute(str(pair[0]), variables), source=source)
            )
            messages.append(
                Message(speaker="assistant", role="assistant", text=substitute(str(pair[1]), variables), source=source)
            )
    user = "\n".join(part for part in (str(prompt), str(query or "")) if part.strip())
    messages.append(Message(speaker="user", role="user", text=substitute(user, variables), source=source))
    messages.append(
        Message(speaker="assistant", role="assistant", text=substitute(str(response), variables), source=source)
    )
    meta: dict[str, Any] = {"format": fmt}
    system = col("system", "system")
    if system:
        meta["system"] = substitute(str(system), variables)
    return Conversation(messages=messages, source=path.name, meta=meta)


class Alpaca(BaseImporter):
    name = "alpaca"
    description = "Alpaca: {instruction, input, output, system?, history?}, JSON or JSONL"
    extensions = JSON_EXTENSIONS

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        head = _head_keys(path)
        if re.search(r'"instruction"\s*:', head) and re.search(r'"output"\s*:', head):
            return 0.9
        return 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        for where, record in iter_records(path):
            if not isinstance(record, dict):
                raise InputFileError(path, f"record {where} is not an object")
            yield alpaca_conversation(path, where, record, {}, self.name, options.variables)


class LlamaFactoryInfo(BaseImporter):
    name = "llamafactory"
    description = "LLaMA-Factory dataset_info.json: reads each local dataset it describes"
    extensions = (".json",)

    def detect(self, path: Path) -> float:
        if path.name == "dataset_info.json":
            return 0.98
        if not self.has_extension(path):
            return 0.0
        head = _head_keys(path).lstrip()
        if head.startswith("{") and re.search(r'"(file_name|hf_hub_url)"\s*:', head) and '"formatting"' in head:
            return 0.7
        return 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        info = load_json(path)
        if not isinstance(info, dict):
            raise InputFileError(path, "dataset_info.json must map dataset names to descriptions")
        wanted = set(options.datasets)
        unknown = wanted - set(info)
        if unknown:
            raise InputFileError(path, f"no dataset named {', '.join(sorted(unknown))} (has: {', '.join(info)})")
        for name, entry in info.items():
            if wanted and name not in wanted:
                continue
            if not isinstance(entry, dict) or not entry.get("file_name"):
                continue  # hub-hosted: nothing local to read
            file = path.parent / str(entry["file_name"])
            if not file.is_file():
                continue
            for conversation in self.read_entry(file, name, entry, options):
                conversation.meta["dataset"] = name
                yield conversation

    def read_entry(self, file: Path, name: str, entry: dict, options: ReadOptions) -> Iterator[Conversation]:
        columns: dict[str, str] = entry.get("columns") or {}
        formatting = entry.get("formatting", "alpaca")
        fmt = f"{self.name}:{formatting}"
        for where, record in iter_records(file):
            if not isinstance(record, dict):
                raise InputFileError(file, f"record {where} is not an object")
            if formatting == "sharegpt":
                tags = entry.get("tags") or {}
                turns = record.get(columns.get("messages", "conversations"))
                system = record.get(columns["system"]) if "system" in columns else record.get("system")
                conversation = messages_conversation(
                    file, where, turns, fmt=fmt, tags=tags, system=system, variables=options.variables
                )
                if entry.get("ranking"):
                    chosen = record.get(columns.get("chosen", "chosen"))
                    if isinstance(chosen, dict):
                        text = content_text(chosen.get(tags.get("content_tag", "value"), chosen.get("content")))
                        conversation.messages.append(
                            Message(speaker="assistant", role="assistant", text=text, source=source_label(file, where))
                        )
                yield conversation
            else:
                mapped = dict(columns)
                if entry.get("ranking"):
                    mapped.setdefault("response", "chosen")
                yield alpaca_conversation(file, where, record, mapped, fmt, options.variables)
