"""Counts per speaker and per source, message lengths, and a length histogram plot."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from companion import atomic
from companion.plugins import require
from training.cleaning import count_tokens
from training.conversation import Conversation


@dataclass
class Stats:
    conversations: int = 0
    messages: int = 0
    per_speaker: Counter[str] = field(default_factory=Counter)
    per_source: Counter[str] = field(default_factory=Counter)
    per_format: Counter[str] = field(default_factory=Counter)
    lengths: dict[str, list[int]] = field(default_factory=dict)  # role or speaker group -> token lengths

    def add(self, conversation: Conversation, fmt: str = "") -> None:
        self.conversations += 1
        for message in conversation.messages:
            if message.kind == "narration":
                continue
            self.messages += 1
            self.per_speaker[message.speaker or "?"] += 1
            self.per_source[conversation.source] += 1
            if fmt:
                self.per_format[fmt] += 1
            group = message.role or {True: "self", False: "others"}.get(message.is_self, "message")
            self.lengths.setdefault(group, []).append(count_tokens(message.text))

    def summary(self) -> dict[str, Any]:
        def describe(values: list[int]) -> dict[str, float]:
            ordered = sorted(values)
            if not ordered:
                return {}
            return {
                "count": len(ordered),
                "mean": round(sum(ordered) / len(ordered), 1),
                "median": ordered[len(ordered) // 2],
                "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
                "max": ordered[-1],
            }

        return {
            "conversations": self.conversations,
            "messages": self.messages,
            "per_speaker": dict(self.per_speaker.most_common()),
            "per_source": dict(self.per_source.most_common()),
            "per_format": dict(self.per_format.most_common()),
            "length_tokens": {group: describe(values) for group, values in self.lengths.items()},
        }


def from_sharegpt_file(path: Path) -> Iterable[Conversation]:
    """A dataset file we wrote (or any ShareGPT jsonl) as conversations with roles."""
    from training.importers import ReadOptions
    from training.importers.sft import ShareGPT

    yield from ShareGPT().read(path, ReadOptions())


def plot_lengths(stats: Stats, path: Path, title: str = "") -> Path:
    """A histogram of message lengths (approximate tokens) per role, saved as PNG."""
    matplotlib = require("matplotlib", feature="the length histogram", extra="training")
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    top = max((max(v) for v in stats.lengths.values() if v), default=1)
    bins = min(60, max(10, top))
    for group, values in sorted(stats.lengths.items()):
        if values:
            axis.hist(values, bins=bins, range=(0, top), alpha=0.6, label=f"{group} ({len(values)})")
    axis.set_xlabel("message length (approximate tokens)")
    axis.set_ylabel("messages")
    axis.set_title(title or "Message lengths")
    if stats.lengths:
        axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    atomic.write_bytes(path, buffer.getvalue())
    return path


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic.write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")
