"""Community Q&A submissions: people write a question and an answer in the character's voice,
others vote. jsonl, json or csv with a question column, an answer column and optionally votes.

Column names accepted (case-insensitive): question/q/prompt_text/问题/提问,
answer/a/reply/回答/答案, votes/score/upvotes/likes/赞/点赞 (and downvotes/踩, subtracted).
Each row becomes a two-message conversation with `meta.kind = "qa"` and its votes; which
answers survive (votes, one best answer per question, substance) is decided in cleaning.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from companion.errors import InputFileError
from training.conversation import Conversation, Message
from training.importers.base import BaseImporter, ReadOptions, source_label
from training.importers.sft import iter_records
from training.textio import csv_header, iter_csv, sniff_text

QUESTION_KEYS = ("question", "q", "prompt_text", "问题", "提问", "问")
ANSWER_KEYS = ("answer", "a", "reply", "回答", "答案", "答")
VOTE_KEYS = ("votes", "vote", "score", "upvotes", "likes", "赞", "点赞", "票数")
DOWN_KEYS = ("downvotes", "dislikes", "踩")


def _find(record: dict, keys: tuple[str, ...]) -> str | None:
    lowered = {str(k).strip().lower(): k for k in record}
    for key in keys:
        if key in lowered:
            return lowered[key]
    return None


def _number(value: object) -> float:
    try:
        return float(str(value).strip() or 0)
    except ValueError:
        return 0.0


class CommunityQA(BaseImporter):
    name = "qa"
    description = "Community Q&A submissions: question, answer, votes (jsonl, json or csv)"
    extensions = (".jsonl", ".json", ".csv")

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        if path.name.lower().endswith(".csv"):
            header = {c.lower() for c in csv_header(path)}
        else:
            header = {k.lower() for k in re.findall(r'"([^"\\]{1,30})"\s*:', sniff_text(path, 4096))}
        has_q = any(k in header for k in QUESTION_KEYS)
        has_a = any(k in header for k in ANSWER_KEYS)
        if has_q and has_a:
            return 0.85 if any(k in header for k in VOTE_KEYS) else 0.7
        return 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        if path.name.lower().endswith(".csv"):
            rows = ((str(n), row) for n, row in enumerate(iter_csv(path), start=2))
        else:
            rows = iter_records(path)
        for where, record in rows:
            if not isinstance(record, dict):
                raise InputFileError(path, f"record {where} is not an object")
            q_key, a_key = _find(record, QUESTION_KEYS), _find(record, ANSWER_KEYS)
            if q_key is None or a_key is None:
                raise InputFileError(path, f"record {where}: needs a question and an answer column")
            v_key, d_key = _find(record, VOTE_KEYS), _find(record, DOWN_KEYS)
            votes = (_number(record[v_key]) if v_key else 0.0) - (_number(record[d_key]) if d_key else 0.0)
            source = source_label(path, where)
            character = record.get("character") or record.get("角色")
            yield Conversation(
                messages=[
                    Message(speaker="user", role="user", text=str(record[q_key] or ""), source=source),
                    Message(
                        speaker=str(character or "assistant"),
                        role="assistant",
                        text=str(record[a_key] or ""),
                        source=source,
                    ),
                ],
                source=path.name,
                meta={"format": self.name, "kind": "qa", "votes": votes, "has_votes": v_key is not None},
            )
