"""Preference pairs: a conversation so far, the answer people preferred, and the one they did not.

Accepted records (JSON array or JSON Lines), first match wins:
- LLaMA-Factory ranking, ShareGPT style (`dpo_zh_demo.json`, and `companion court export`):
  {"conversations": [{"from": "human", "value": ...}, ...], "chosen": {"from": "gpt", "value": ...},
   "rejected": {"from": "gpt", "value": ...}, "system": optional}
  (`role`/`content` messages are read too; `chosen`/`rejected` may be plain strings.)
- TRL: {"prompt": "..." or [messages], "chosen": "..." or [messages], "rejected": ...}
- Alpaca ranking: {"instruction": ..., "input": ..., "chosen": ..., "rejected": ..., "history": [[q, a], ...]}

Where they are looked for: `--pairs FILE`, else every `*.json`/`*.jsonl` in `<character>/preference/`
(`dataset_info.json` skipped).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from companion.errors import InputFileError
from companion.messages import ChatMessage
from training.importers.sft import ASSISTANT_TAGS, SYSTEM_TAGS, USER_TAGS, content_text, iter_records
from training.lora.data import Example, Renderer, Sample, SplitStats, split_by_hash

PREFERENCE_DIR = "preference"


@dataclass(frozen=True)
class Pair:
    system: str | None
    prompt: list[ChatMessage]  # alternating turns, ending with the user's
    chosen: str
    rejected: str
    source: str

    def fingerprint(self) -> str:
        digest = hashlib.blake2b(digest_size=16)
        for m in self.prompt:
            digest.update(f"{m.role}\x1f{m.content}\x1e".encode())
        digest.update(f"{self.chosen}\x1d{self.rejected}".encode())
        return digest.hexdigest()


def _role(tag: str) -> str | None:
    tag = str(tag).lower()
    if tag in USER_TAGS:
        return "user"
    if tag in ASSISTANT_TAGS:
        return "assistant"
    if tag in SYSTEM_TAGS:
        return "system"
    return None


def _messages(items: Any, where: str, path: Path) -> tuple[str | None, list[ChatMessage]]:
    if not isinstance(items, list):
        raise InputFileError(path, f"record {where}: the conversation must be a list of messages")
    system = None
    out: list[ChatMessage] = []
    for item in items:
        if not isinstance(item, dict):
            raise InputFileError(path, f"record {where}: a message must be an object")
        role = _role(item.get("from", item.get("role", "")))
        text = content_text(item.get("value", item.get("content"))).strip()
        if role is None:
            raise InputFileError(path, f"record {where}: unknown role {item.get('from', item.get('role'))!r}")
        if role == "system":
            system = text or system
        elif text:
            out.append(ChatMessage(role=role, content=text))  # type: ignore[arg-type]
    return system, out


def _answer(value: Any, where: str, path: Path, key: str) -> str:
    if isinstance(value, dict):
        text = content_text(value.get("value", value.get("content")))
    elif isinstance(value, list):  # TRL conversational: the assistant message(s)
        text = "\n".join(content_text(m.get("content", m.get("value"))) for m in value if isinstance(m, dict))
    elif isinstance(value, str):
        text = value
    else:
        raise InputFileError(path, f"record {where}: {key!r} must be a message or text")
    if not text.strip():
        raise InputFileError(path, f"record {where}: {key!r} is empty")
    return text.strip()


def parse_record(record: Any, where: str, path: Path) -> Pair:
    if not isinstance(record, dict):
        raise InputFileError(path, f"record {where} is not an object")
    if "chosen" not in record or "rejected" not in record:
        raise InputFileError(path, f"record {where}: a preference pair needs 'chosen' and 'rejected'")
    system = record.get("system") if isinstance(record.get("system"), str) else None
    if "conversations" in record or "messages" in record:
        own_system, prompt = _messages(record.get("conversations", record.get("messages")), where, path)
    elif "prompt" in record:
        value = record["prompt"]
        if isinstance(value, str):
            own_system, prompt = None, [ChatMessage(role="user", content=value.strip())]
        else:
            own_system, prompt = _messages(value, where, path)
    elif "instruction" in record:
        own_system, prompt = None, []
        for pair in record.get("history") or []:
            prompt += [
                ChatMessage(role="user", content=str(pair[0])),
                ChatMessage(role="assistant", content=str(pair[1])),
            ]
        text = "\n".join(p for p in (str(record["instruction"]).strip(), str(record.get("input") or "").strip()) if p)
        prompt.append(ChatMessage(role="user", content=text))
    else:
        raise InputFileError(path, f"record {where}: no prompt ('conversations', 'prompt' or 'instruction')")
    if not prompt or prompt[-1].role != "user":
        raise InputFileError(path, f"record {where}: the prompt must end with the user's turn")
    chosen = _answer(record["chosen"], where, path, "chosen")
    rejected = _answer(record["rejected"], where, path, "rejected")
    if chosen == rejected:
        raise InputFileError(path, f"record {where}: chosen and rejected are the same text")
    return Pair(
        system=system or own_system, prompt=prompt, chosen=chosen, rejected=rejected, source=f"{path.name}:{where}"
    )


def read_pairs(path: Path) -> list[Pair]:
    if not path.is_file():
        raise InputFileError(path, "preference file not found")
    pairs = [parse_record(record, where, path) for where, record in iter_records(path)]
    if not pairs:
        raise InputFileError(path, "no preference pairs in this file")
    return pairs


def find_pairs(folder: Path) -> list[Path]:
    directory = folder / PREFERENCE_DIR
    files = sorted(
        p for p in directory.glob("*.json*") if p.is_file() and p.name != "dataset_info.json"
    ) if directory.is_dir() else []  # fmt: skip
    if not files:
        raise InputFileError(
            directory,
            "no preference pairs: run `companion court export <id>` (votes -> preference/court.jsonl) "
            "or pass --pairs FILE (LLaMA-Factory ranking format, or prompt/chosen/rejected)",
        )
    return files


def split_pairs(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Stable held-out split by content hash (none for fewer than 4 pairs)."""
    return split_by_hash(pairs, fraction, seed, smallest=4)


@dataclass
class PairSample:
    chosen: Sample
    rejected: Sample
    source: str


def tokenize_pairs(pairs: list[Pair], renderer: Renderer, stats: SplitStats) -> list[PairSample]:
    """Both answers rendered after the same prompt, exactly as SFT renders a conversation."""
    out = []
    for pair in pairs:
        chosen = renderer.sample(
            Example(pair.system, [*pair.prompt, ChatMessage(role="assistant", content=pair.chosen)], pair.source), stats
        )
        rejected = renderer.sample(
            Example(pair.system, [*pair.prompt, ChatMessage(role="assistant", content=pair.rejected)], pair.source),
            stats,
        )
        if chosen is not None and rejected is not None:
            out.append(PairSample(chosen, rejected, pair.source))
    return out
