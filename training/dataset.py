"""From conversations to a character's training set.

Layout of `<character folder>/dataset/` (written as one folder rename, so a failed build never
leaves a half-written dataset and an older one is replaced only by a complete new one):

    train.jsonl          ShareGPT, one record per line:
                           {"conversations": [{"from": "system", "value": <persona prompt>},
                                              {"from": "human", "value": "..."},
                                              {"from": "gpt", "value": "..."}, ...],
                            "id": "<content hash>", "source": "<file>"}
                         human and gpt alternate, starting with human and ending with gpt; the
                         system value is `companion.prompt.persona_prompt(card, user_name=...)`,
                         the prompt the runtime uses, so the adapter learns under it.
    eval.jsonl           the same shape, held out: a deterministic hash of each session's content
                         decides (same data, same split, on any machine), so the windows of one
                         session never straddle train and eval.
    train.alpaca.jsonl   the same samples as Alpaca records (instruction, input, output, system,
    eval.alpaca.jsonl    history), for tools that want that shape.
    dataset_info.json    LLaMA-Factory entries for the four files (`<id>`, `<id>_eval`,
                         `<id>_alpaca`, `<id>_alpaca_eval`): copy it beside the files to train there.
    report.json          what was read (per file: format, conversations, messages), what was
    report.md            dropped and why (counts), PII replaced per type, speakers, sizes.

The LoRA trainer reads `train.jsonl` and `eval.jsonl`.

Who the character is (`Selection`): `--as` names (or ids) become the assistant, everyone else
the user side (several other speakers get their name before their line). Without names, a
source that says who the assistant is (ShareGPT, Alpaca, OpenAI, SillyTavern's character, a
WeChat export's own side) decides.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from companion import atomic
from companion.card.model import CardData
from companion.errors import CompanionError
from companion.prompt import NEW_CHAT_MARKER, persona_prompt
from companion.scripts import HAN, HAN_CHAR, KANA
from training.cleaning import MEDIA, CleanConfig, Tally, clean_conversation, count_tokens, select_qa
from training.conversation import Conversation, Message
from training.dedupe import Deduplicator
from training.importers import Detection

DATASET_DIR = "dataset"
ROLE_TAGS = {"system": "system", "user": "human", "assistant": "gpt"}
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "system_tag": "system",
}


@dataclass(frozen=True)
class Selection:
    """Who the character is: `names` (from --as / --me) match a speaker or a speaker id."""

    names: tuple[str, ...] = ()
    narration: str = "drop"

    @functools.cached_property
    def wanted(self) -> frozenset[str]:
        return frozenset(n.casefold() for n in self.names)

    def matches(self, message: Message) -> bool:
        return message.speaker.casefold() in self.wanted or (message.speaker_id or "").casefold() in self.wanted


def split_names(values: Iterable[str]) -> tuple[str, ...]:
    """`--as "Sylvie,希尔薇"` and repeated options both give several names."""
    names: list[str] = []
    for value in values:
        names.extend(part.strip() for part in re.split(r"[,，]", value) if part.strip())
    return tuple(names)


def assign_roles(conversation: Conversation, selection: Selection) -> Conversation | None:
    """The conversation with `role` on every message, or None when the character is not in it."""
    spoken = [m for m in conversation.messages if m.kind != "narration"]
    if not spoken:
        return None
    wanted = {n.casefold() for n in selection.names}
    for names in conversation.meta.get("speaker_names", {}).values():  # --as Sylvie also finds 希尔薇
        selection = Selection(
            names=(*selection.names, *(new for old, new in names.items() if old.casefold() in wanted)),
            narration=selection.narration,
        )
    assistant: Callable[[Message], bool] | None = None
    if selection.names and any(selection.matches(m) for m in spoken):
        assistant = selection.matches
    elif conversation.meta.get("default_as") and not selection.names:
        name = str(conversation.meta["default_as"])
        assistant = lambda m: m.role != "user" and m.speaker == name  # noqa: E731
    elif all(m.role for m in spoken):
        assistant = lambda m: m.role == "assistant"  # noqa: E731
    elif any(m.is_self is not None for m in spoken):
        assistant = lambda m: bool(m.is_self)  # noqa: E731
    if assistant is None:
        return None
    messages = []
    for message in conversation.messages:
        if message.kind == "narration":
            if selection.narration == "context":
                cjk = re.search(f"[{KANA}{HAN}]", message.text)
                text = f"（{message.text}）" if cjk else f"({message.text})"
                messages.append(message.model_copy(update={"role": "user", "text": text, "speaker": ""}))
            continue
        if message.role == "system":
            continue
        messages.append(message.model_copy(update={"role": "assistant" if assistant(message) else "user"}))
    if not any(m.role == "assistant" for m in messages):
        return None
    return conversation.model_copy(update={"messages": messages})


@dataclass
class Sample:
    turns: list[tuple[str, str]]  # (role, text), user first, assistant last
    source: str
    group: str  # the fingerprint of the session it came from: decides the split
    system: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(f"{role}: {text}" for role, text in self.turns)

    @property
    def id(self) -> str:
        return hashlib.blake2b(self.text.encode(), digest_size=8).hexdigest()

    def tokens(self) -> int:
        return sum(count_tokens(text) for _, text in self.turns)


def _label(speaker: str) -> str:
    return f"{speaker}：" if HAN_CHAR.search(speaker) else f"{speaker}: "


def role_turns(conversation: Conversation, tally: Tally) -> list[tuple[str, str]]:
    """Alternating (role, text) turns: same-role neighbours merge; other speakers are named
    when more than one of them talks; media-only replies are dropped."""
    others = {m.speaker for m in conversation.messages if m.role == "user" and m.speaker}
    name_them = len(others) > 1
    turns: list[tuple[str, str]] = []
    for message in conversation.messages:
        text = message.text
        if message.role == "assistant":  # the character never "sends" a placeholder: keep her words only
            words = "\n".join(line for line in text.split("\n") if not MEDIA.match(line.strip()))
            if not words.strip():
                tally.dropped_messages["media-only reply"] += 1
                continue
            if words != text:
                tally.edited["media placeholder removed from a reply"] += 1
            text = words
        if message.role == "user" and name_them and message.speaker:
            text = _label(message.speaker) + text
        role = message.role or "user"
        if turns and turns[-1][0] == role:
            turns[-1] = (role, turns[-1][1] + "\n" + text)
        else:
            turns.append((role, text))
    if turns and turns[0][0] == "assistant":
        turns.insert(0, ("user", NEW_CHAT_MARKER))
    while turns and turns[-1][0] == "user":
        turns.pop()
    return turns


def windows(turns: list[tuple[str, str]], config: CleanConfig, tally: Tally) -> Iterator[list[tuple[str, str]]]:
    """Cut a long conversation into samples within the token and turn bounds, at exchange edges."""
    exchanges = [turns[i : i + 2] for i in range(0, len(turns) - 1, 2)]
    current: list[tuple[str, str]] = []
    used = 0
    for exchange in exchanges:
        cost = sum(count_tokens(text) for _, text in exchange)
        if count_tokens(exchange[1][1]) < config.min_reply_tokens:
            tally.dropped_samples["reply too short"] += 1
            continue
        if cost > config.max_sample_tokens:
            tally.dropped_samples["exchange longer than max_sample_tokens"] += 1
            if current:
                yield current
            current, used = [], 0
            continue
        if current and (used + cost > config.max_sample_tokens or len(current) + 2 > config.max_turns):
            yield current
            current, used = [], 0
        current.extend(exchange)
        used += cost
    if current:
        yield current


@dataclass
class SourceStats:
    path: str
    format: str
    confidence: float
    conversations: int = 0
    messages: int = 0


@dataclass
class Report:
    character: str | None = None
    assistant: list[str] = field(default_factory=list)
    sources: list[SourceStats] = field(default_factory=list)
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    conversations_read: int = 0
    conversations_without_character: int = 0
    messages_read: int = 0
    turns_kept: int = 0  # turns in the written samples (merged messages)
    speakers: Counter[str] = field(default_factory=Counter)
    tally: Tally = field(default_factory=Tally)
    train: int = 0
    eval: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "character": self.character,
            "assistant_speakers": self.assistant,
            "sources": [vars(s) for s in self.sources],
            "skipped_files": self.skipped_files,
            "conversations": {
                "read": self.conversations_read,
                "without_character": self.conversations_without_character,
            },
            "messages": {"read": self.messages_read, "turns_in_samples": self.turns_kept},
            "dropped_messages": dict(self.tally.dropped_messages.most_common()),
            "dropped_samples": dict(self.tally.dropped_samples.most_common()),
            "edited_messages": dict(self.tally.edited.most_common()),
            "pii_replaced": dict(self.tally.pii.most_common()),
            "speakers": dict(self.speakers.most_common(50)),
            "samples": {"train": self.train, "eval": self.eval},
            "tokens": self.tokens,
            "settings": self.settings,
        }

    def to_markdown(self) -> str:
        data = self.to_json()
        lines = [f"# Dataset report{' for ' + self.character if self.character else ''}", ""]
        lines.append(f"Built {self.created}. Samples: **{self.train} train**, **{self.eval} eval**.")
        lines.append(f"The character (assistant side): {', '.join(self.assistant) or '(roles from the source)'}.")
        lines += [
            "",
            "## Sources",
            "",
            "| file | format | confidence | conversations | messages |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {s.path} | {s.format} | {s.confidence:.2f} | {s.conversations} | {s.messages} |" for s in self.sources
        ]
        if self.skipped_files:
            lines += ["", "Skipped (not recognised): " + ", ".join(f["path"] for f in self.skipped_files)]
        lines += [
            "",
            "## Counts",
            "",
            f"- conversations read: {self.conversations_read} "
            f"({self.conversations_without_character} without a line by the character)",
            f"- messages read: {self.messages_read}; turns in the samples (after merging): {self.turns_kept}",
        ]
        for title, key in (
            ("Messages dropped", "dropped_messages"),
            ("Messages edited", "edited_messages"),
            ("Samples dropped", "dropped_samples"),
            ("PII replaced", "pii_replaced"),
            ("Speakers (messages)", "speakers"),
        ):
            lines += ["", f"## {title}", ""]
            lines += [f"- {k}: {v}" for k, v in data[key].items()] or ["- none"]
        lines += ["", "## Tokens (approximate)", ""] + [f"- {k}: {v}" for k, v in self.tokens.items()]
        lines += ["", "## Settings", ""] + [f"- {k}: {v}" for k, v in self.settings.items()]
        return "\n".join(lines) + "\n"


@dataclass
class Dataset:
    train: list[Sample]
    eval: list[Sample]
    report: Report


def split_value(group: str) -> float:
    digest = hashlib.blake2b(f"companion-split:{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def build_dataset(
    sources: Iterable[tuple[Detection, Iterator[Conversation]]],
    *,
    selection: Selection,
    config: CleanConfig | None = None,
    system: str | None = None,
    keep_source_system: bool = True,
    character: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Dataset:
    """Read, choose roles, clean, window, deduplicate and split. `system` (the persona prompt)
    goes on every sample; without it a source's own system prompt is kept if asked."""
    config = config or CleanConfig()
    settings = {k: str(v) for k, v in vars(config).items() if k != "public_text"}
    report = Report(character=character, settings=settings)
    tally = report.tally
    samples: list[Sample] = []
    qa: list[tuple[Conversation, str]] = []
    assistants: Counter[str] = Counter()
    for detection, conversations in sources:
        stats = SourceStats(str(detection.path), detection.importer.name, detection.confidence)
        report.sources.append(stats)
        for conversation in conversations:
            stats.conversations += 1
            stats.messages += len(conversation.messages)
            report.conversations_read += 1
            report.messages_read += len(conversation.messages)
            for message in conversation.messages:
                if message.kind != "narration":
                    report.speakers[message.speaker or "?"] += 1
            if progress:
                progress(len(conversation.messages))
            assigned = assign_roles(conversation, selection)
            if assigned is None:
                report.conversations_without_character += 1
                continue
            assistants.update(m.speaker for m in assigned.messages if m.role == "assistant")
            for session in clean_conversation(assigned, config, tally):
                group = session.fingerprint()  # a session's windows share a split; sessions do not
                if session.meta.get("kind") == "qa":
                    qa.append((session, group))
                    continue
                samples.extend(_samples(session, group, config, tally, system, keep_source_system))
    if qa:
        groups = {id(c): g for c, g in qa}
        for conversation in select_qa([c for c, _ in qa], config, tally):
            samples.extend(_samples(conversation, groups[id(conversation)], config, tally, system, keep_source_system))
    report.assistant = [name for name, _ in assistants.most_common(5)]
    kept = _deduplicate(samples, config, tally)
    report.turns_kept = sum(len(s.turns) for s in kept)
    train, held = _split(kept, config.eval_ratio)
    report.train, report.eval = len(train), len(held)
    tokens = [s.tokens() for s in kept]
    report.tokens = {
        "total": sum(tokens),
        "mean_per_sample": round(sum(tokens) / len(tokens)) if tokens else 0,
        "max_per_sample": max(tokens, default=0),
    }
    return Dataset(train=train, eval=held, report=report)


def _samples(
    conversation: Conversation,
    group: str,
    config: CleanConfig,
    tally: Tally,
    system: str | None,
    keep_source_system: bool,
) -> Iterator[Sample]:
    turns = role_turns(conversation, tally)
    if not turns:
        tally.dropped_samples["no reply by the character after cleaning"] += 1
        return
    own_system = conversation.meta.get("system") if keep_source_system else None
    for window in windows(turns, config, tally):
        yield Sample(turns=window, source=conversation.source, group=group, system=system or own_system)


def _deduplicate(samples: list[Sample], config: CleanConfig, tally: Tally) -> list[Sample]:
    dedupe = Deduplicator(config.near_duplicate_threshold)
    kept = []
    for sample in samples:
        verdict = dedupe.check(sample.text)
        if verdict:
            tally.dropped_samples[f"{verdict} duplicate"] += 1
        else:
            kept.append(sample)
    return kept


def _split(samples: list[Sample], ratio: float) -> tuple[list[Sample], list[Sample]]:
    values = {s.group: split_value(s.group) for s in samples}
    held = [s for s in samples if values[s.group] < ratio]
    if not held and ratio > 0 and len(samples) >= 10 and len(values) >= 2:
        smallest = min(values, key=values.__getitem__)  # keep an eval set on small datasets
        held = [s for s in samples if s.group == smallest]
    held_groups = {s.group for s in held}
    return [s for s in samples if s.group not in held_groups], held


# ---- export ----


def to_sharegpt(sample: Sample) -> dict[str, Any]:
    conversations = [{"from": "system", "value": sample.system}] if sample.system else []
    conversations += [{"from": ROLE_TAGS[role], "value": text} for role, text in sample.turns]
    return {"conversations": conversations, "id": sample.id, "source": sample.source}


def to_alpaca(sample: Sample) -> dict[str, Any]:
    pairs = [(sample.turns[i][1], sample.turns[i + 1][1]) for i in range(0, len(sample.turns) - 1, 2)]
    *history, (instruction, output) = pairs
    record: dict[str, Any] = {"instruction": instruction, "input": "", "output": output}
    if sample.system:
        record["system"] = sample.system
    if history:
        record["history"] = [list(pair) for pair in history]
    return record


def to_openai(sample: Sample) -> dict[str, Any]:
    messages = [{"role": "system", "content": sample.system}] if sample.system else []
    messages += [{"role": role, "content": text} for role, text in sample.turns]
    return {"messages": messages}


EXPORTERS: dict[str, Callable[[Sample], dict[str, Any]]] = {
    "sharegpt": to_sharegpt,
    "alpaca": to_alpaca,
    "openai": to_openai,
}


def jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def dataset_info(name: str) -> dict[str, Any]:
    sharegpt = {"formatting": "sharegpt", "columns": {"messages": "conversations"}, "tags": SHAREGPT_TAGS}
    alpaca = {
        "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}
        | {"history": "history"}
    }
    return {
        name: {"file_name": "train.jsonl", **sharegpt},
        f"{name}_eval": {"file_name": "eval.jsonl", **sharegpt},
        f"{name}_alpaca": {"file_name": "train.alpaca.jsonl", **alpaca},
        f"{name}_alpaca_eval": {"file_name": "eval.alpaca.jsonl", **alpaca},
    }


def write_dataset(folder: Path, dataset: Dataset, name: str) -> Path:
    """Write `<folder>/dataset/` in one rename (see the module docstring for the layout)."""
    target = folder / DATASET_DIR
    with atomic.staged_dir(target, replace=True) as staging:
        (staging / "train.jsonl").write_text(jsonl(map(to_sharegpt, dataset.train)), encoding="utf-8")
        (staging / "eval.jsonl").write_text(jsonl(map(to_sharegpt, dataset.eval)), encoding="utf-8")
        (staging / "train.alpaca.jsonl").write_text(jsonl(map(to_alpaca, dataset.train)), encoding="utf-8")
        (staging / "eval.alpaca.jsonl").write_text(jsonl(map(to_alpaca, dataset.eval)), encoding="utf-8")
        info = json.dumps(dataset_info(name), ensure_ascii=False, indent=2) + "\n"
        (staging / "dataset_info.json").write_text(info, encoding="utf-8")
        report = json.dumps(dataset.report.to_json(), ensure_ascii=False, indent=2) + "\n"
        (staging / "report.json").write_text(report, encoding="utf-8")
        (staging / "report.md").write_text(dataset.report.to_markdown(), encoding="utf-8")
    return target


def write_samples(path: Path, samples: Iterable[Sample], fmt: str = "sharegpt") -> None:
    if fmt not in EXPORTERS:
        raise CompanionError(f"unknown export format {fmt!r}; choose {', '.join(EXPORTERS)}")
    atomic.write_text(path, jsonl(map(EXPORTERS[fmt], samples)))


def character_system(card: CardData, user_name: str) -> str:
    return persona_prompt(card, user_name=user_name)


def public_text(folder: Path, card: CardData) -> str:
    """What is already published with the character: card fields, lorebook, corpus/lore.
    PII-looking spans found here (her shop's address) are her facts, not private data."""
    parts = [card.description, card.personality, card.scenario, card.first_mes, card.mes_example, card.system_prompt]
    parts += list(card.alternate_greetings)
    if card.character_book:
        parts += [entry.content for entry in card.character_book.entries]
    lore = folder / "corpus" / "lore"
    if lore.is_dir():
        parts += [p.read_text(encoding="utf-8", errors="replace") for p in sorted(lore.rglob("*")) if p.is_file()]
    return "\n".join(part for part in parts if part)


def dataset_name(character_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", character_id).strip("_") or "character"
