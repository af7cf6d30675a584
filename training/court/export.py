"""From verdicts to training data.

SFT: every approved submission becomes a ShareGPT record (the question, her answer), written by
default to `<character>/corpus/dialogues/court.jsonl`, where `companion data build` and
`companion train` find dialogues. A submission's state and mood go in front of the question as
a note in brackets, so the adapter learns how she answers in that state.

Preference pairs: answers to the same question (in the same state and mood) that the votes
ranked apart. Each answer with at least `min_votes` approve/reject votes gets a score (the
share of approvals); a pair is (chosen, rejected) where the chosen answer is not rejected, the
rejected answer is not approved, and their scores differ by at least `margin`. Written in
LLaMA-Factory's ranking format (`conversations` + `chosen` + `rejected`, with a
`dataset_info.json` entry) to `<character>/preference/court.jsonl`, which
`companion train <id> --method dpo` reads.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from companion import atomic
from companion.scripts import HAN, KANA
from training.court.store import Court, Submission, question_key

PREFERENCE_DIR = "preference"
COURT_DIALOGUES = Path("corpus") / "dialogues" / "court.jsonl"
COURT_PAIRS = Path(PREFERENCE_DIR) / "court.jsonl"
_KANA_OR_HAN = re.compile(f"[{KANA}{HAN}]")


def question_text(submission: Submission) -> str:
    """The user turn: the question, after a bracketed note of her state and mood when given."""
    notes = []
    zh = bool(_KANA_OR_HAN.search(submission.question + (submission.state or "") + (submission.mood or "")))
    if submission.state:
        notes.append(f"状态：{submission.state}" if zh else f"state: {submission.state}")
    if submission.mood:
        notes.append(f"心情：{submission.mood}" if zh else f"mood: {submission.mood}")
    if not notes:
        return submission.question
    note = f"（{'｜'.join(notes)}）" if zh else f"({' | '.join(notes)})"
    return f"{note}\n{submission.question}"


def sft_record(submission: Submission) -> dict[str, Any]:
    return {
        "conversations": [
            {"from": "human", "value": question_text(submission)},
            {"from": "gpt", "value": submission.answer},
        ],
        "id": f"court-{submission.id}",
        "source": f"court#{submission.id}",
        "votes": {"approve": submission.approvals, "reject": submission.rejections},
    }


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def export_sft(court: Court, character: str, out: Path) -> int:
    """Approved submissions for `character` -> ShareGPT jsonl at `out`; returns how many."""
    records = [sft_record(s) for s in court.submissions(character=character, status="approved")]
    atomic.write_text(out, _jsonl(records))
    return len(records)


@dataclass(frozen=True)
class Pair:
    chosen: Submission
    rejected: Submission

    def record(self) -> dict[str, Any]:
        return {
            "conversations": [{"from": "human", "value": question_text(self.chosen)}],
            "chosen": {"from": "gpt", "value": self.chosen.answer},
            "rejected": {"from": "gpt", "value": self.rejected.answer},
            "id": f"court-{self.chosen.id}-{self.rejected.id}",
            "meta": {
                "chosen": {"id": self.chosen.id, "approve": self.chosen.approvals, "reject": self.chosen.rejections},
                "rejected": {
                    "id": self.rejected.id,
                    "approve": self.rejected.approvals,
                    "reject": self.rejected.rejections,
                },
            },
        }


def score(submission: Submission) -> float:
    return submission.approvals / submission.votes if submission.votes else 0.5


def preference_pairs(
    court: Court, character: str, *, min_votes: int | None = None, margin: float = 0.3, per_question: int = 8
) -> list[Pair]:
    need = court.rules.min_votes if min_votes is None else min_votes
    groups: dict[str, list[Submission]] = defaultdict(list)
    for submission in court.submissions(character=character):
        if submission.status == "withdrawn" or submission.votes < need:
            continue
        groups[question_key(submission.question, submission.state, submission.mood)].append(submission)
    pairs: list[Pair] = []
    for answers in groups.values():
        found = [
            Pair(a, b)
            for a, b in product(answers, answers)
            if a.id != b.id and a.status != "rejected" and b.status != "approved" and score(a) - score(b) >= margin
        ]
        found.sort(key=lambda p: (-(score(p.chosen) - score(p.rejected)), p.chosen.id, p.rejected.id))
        pairs.extend(found[:per_question])
    return pairs


def preference_info(name: str, file_name: str) -> dict[str, Any]:
    """LLaMA-Factory's dataset_info.json entry for a ranking (DPO) file."""
    return {
        f"{name}_dpo": {
            "file_name": file_name,
            "ranking": True,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        }
    }


def export_pairs(court: Court, character: str, out: Path, **options: Any) -> int:
    pairs = preference_pairs(court, character, **options)
    atomic.write_text(out, _jsonl([p.record() for p in pairs]))
    info = out.parent / "dataset_info.json"
    existing: dict[str, Any] = {}
    if info.is_file():
        try:
            existing = json.loads(info.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            existing = {}
    name = re.sub(r"[^A-Za-z0-9_]+", "_", character).strip("_") or "character"
    existing.update(preference_info(name, out.name))
    atomic.write_text(info, json.dumps(existing, ensure_ascii=False, indent=2) + "\n")
    return len(pairs)
