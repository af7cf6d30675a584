"""The character's dataset as token sequences with labels on her words only.

Sources, first found wins:
  <character>/dataset/train.jsonl (+ eval.jsonl)   written by `companion data build`
  <character>/corpus/dialogues/*.jsonl             raw ShareGPT dialogues (split here by content hash)

Rendering uses the tokenizer's chat template, the one inference uses. In `chat` mode each
conversation is laid out exactly as `companion chat` lays out the prompt for its last reply
(`companion.prompt.assemble`: persona + example dialogue as the system prompt, the card's
post-history instruction in front of the final user turn, history trimmed to the budget), so
the adapter learns under the prompt it will see.

Each token gets a kind: 0 context (no loss), 1 her words, 2 the end-of-turn marker after them.
The model learns 1 and 2; perplexity of "her lines" is reported over 1.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from companion.card.model import CardData
from companion.errors import CompanionError, InputFileError
from companion.messages import ChatMessage
from companion.prompt import assemble, normalize_turns, persona_prompt
from training.importers.base import ReadOptions
from training.importers.sft import ShareGPT

if TYPE_CHECKING:
    from companion.config import Settings

CONTEXT, CONTENT, END = 0, 1, 2
DATASET_DIR = "dataset"
DIALOGUES_DIR = Path("corpus") / "dialogues"


@dataclass(frozen=True)
class Example:
    """One conversation as read: an optional system prompt and alternating turns."""

    system: str | None
    turns: list[ChatMessage]
    source: str

    def fingerprint(self) -> str:
        digest = hashlib.blake2b(digest_size=16)
        for message in self.turns:
            digest.update(f"{message.role}\x1f{message.content}\x1e".encode())
        return digest.hexdigest()


@dataclass
class Sample:
    input_ids: list[int]
    kinds: list[int]
    source: str
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def first_target(self) -> int:
        return next(i for i, k in enumerate(self.kinds) if k)

    @property
    def n_targets(self) -> int:
        return sum(1 for i, k in enumerate(self.kinds) if k and i > 0)


@dataclass
class DatasetFiles:
    train: list[Path]
    eval: list[Path]
    origin: str  # "dataset" or "corpus"

    def describe(self) -> str:
        return ", ".join(str(p) for p in [*self.train, *self.eval])


@dataclass
class SplitStats:
    conversations: int = 0
    samples: int = 0
    tokens: int = 0
    target_tokens: int = 0
    truncated: int = 0
    turns_dropped_for_length: int = 0
    dropped_no_reply: int = 0
    dropped_too_long: int = 0
    max_tokens: int = 0


@dataclass
class PreparedData:
    train: list[Sample]
    eval: list[Sample]
    files: DatasetFiles
    stats: dict[str, SplitStats]
    data_hash: str
    file_hashes: dict[str, str]
    system_prompt_mode: str
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "origin": self.files.origin,
            "files": self.file_hashes,
            "data_hash": self.data_hash,
            "system_prompt": self.system_prompt_mode,
            "splits": {name: vars(stats) for name, stats in self.stats.items()},
            "notes": self.notes,
        }


# -- finding and reading -----------------------------------------------------------------------
def find_dataset(folder: Path) -> DatasetFiles:
    dataset = folder / DATASET_DIR
    train = dataset / "train.jsonl"
    if train.is_file():
        evals = [dataset / "eval.jsonl"] if (dataset / "eval.jsonl").is_file() else []
        return DatasetFiles(train=[train], eval=evals, origin="dataset")
    dialogues = folder / DIALOGUES_DIR
    files = sorted(p for p in dialogues.glob("*.json*") if p.is_file()) if dialogues.is_dir() else []
    if files:
        return DatasetFiles(train=files, eval=[], origin="corpus")
    raise InputFileError(
        train,
        f"no dataset: run `companion data build {folder.name}` first, or put ShareGPT dialogues (*.jsonl) "
        f"in {folder / DIALOGUES_DIR}",
    )


def read_examples(path: Path) -> list[Example]:
    """ShareGPT / OpenAI-messages records of one file (read by the data pipeline's importer)."""
    examples = []
    for conversation in ShareGPT().read(path, ReadOptions()):
        turns = [
            ChatMessage(role=m.role, content=m.text.strip())
            for m in conversation.messages
            if m.role in ("user", "assistant") and m.text.strip()
        ]
        system = conversation.meta.get("system")
        where = conversation.messages[0].source if conversation.messages else path.name
        examples.append(Example(system=system.strip() if system else None, turns=turns, source=where or path.name))
    return examples


def read_files(paths: Sequence[Path]) -> list[Example]:
    examples: list[Example] = []
    for path in paths:
        found = read_examples(path)
        if not found:
            raise InputFileError(path, "empty dataset: no conversations in this file")
        if not any(m.role == "assistant" for e in found for m in e.turns):
            raise InputFileError(
                path, f"no assistant turns ('from': 'gpt') in {len(found)} conversations: nothing to learn from"
            )
        examples += found
    return examples


class Fingerprinted(Protocol):
    def fingerprint(self) -> str: ...


Item = TypeVar("Item", bound=Fingerprinted)


def split_by_hash(items: list[Item], fraction: float, seed: int, smallest: int = 2) -> tuple[list[Item], list[Item]]:
    """A stable held-out split by content hash: the same conversation (or pair) lands on the same side
    on every machine. Fewer than `smallest` items: nothing held out."""
    if fraction <= 0 or len(items) < smallest:
        return items, []
    keyed = sorted(items, key=lambda e: hashlib.sha256(f"{seed}:{e.fingerprint()}".encode()).hexdigest())
    n_eval = max(1, round(len(items) * fraction))
    held = {id(e) for e in keyed[:n_eval]}
    return [e for e in items if id(e) not in held], [e for e in items if id(e) in held]


# -- rendering and tokenizing ------------------------------------------------------------------
class RenderConfig(Protocol):
    """The rendering fields of a training config (SFT's `TrainConfig`, DPO's `DPOConfig`)."""

    system_prompt: str
    user_name: str | None
    max_length: int


class Renderer:
    """Lays a conversation out as chat messages and tokenizes it with per-token kinds."""

    def __init__(
        self,
        tokenizer: Any,
        card: CardData,
        *,
        mode: str,
        user_name: str,
        budget_tokens: int,
        max_length: int,
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise CompanionError("the tokenizer has no chat template: training must use the inference template")
        self.tokenizer = tokenizer
        self.card = card
        self.mode = mode
        self.user_name = user_name
        self.budget_tokens = budget_tokens
        self.max_length = max_length
        self._persona = persona_prompt(card, user_name=user_name)

    @classmethod
    def for_config(cls, tokenizer: Any, card: CardData, settings: Settings, config: RenderConfig) -> Renderer:
        """As a trainer renders: the config's prompt mode, user name (the settings' by default) and
        length, history trimmed to the context chat leaves for the prompt."""
        return cls(
            tokenizer,
            card,
            mode=config.system_prompt,
            user_name=config.user_name or settings.user_name,
            budget_tokens=settings.max_context_tokens - settings.max_new_tokens,
            max_length=config.max_length,
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def messages(self, example: Example) -> list[ChatMessage] | None:
        """System + alternating turns ending on her reply; None when she never speaks."""
        turns = normalize_turns(example.turns)
        while turns and turns[-1].role != "assistant":
            turns.pop()
        if not turns:
            return None
        mode = self.mode
        if mode == "auto":  # the dataset's own system prompt only when it is not the card's persona
            mode = "dataset" if example.system and example.system != self._persona else "chat"
        if mode == "none":
            return turns
        if mode == "dataset":
            return [ChatMessage(role="system", content=example.system or self._persona), *turns]
        if mode == "persona":
            return [ChatMessage(role="system", content=self._persona), *turns]
        # chat: what `companion chat` sends when it asks for the last reply
        last_user = len(turns) - 2
        prompt = assemble(
            self.card,
            turns[:last_user],
            turns[last_user].content,
            user_name=self.user_name,
            count_tokens=self.count_tokens,
            budget_tokens=self.budget_tokens,
        )
        return [*prompt.messages, turns[-1]]

    def _template(self, messages: Sequence[ChatMessage], *, generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            [m.model_dump() for m in messages], tokenize=False, add_generation_prompt=generation_prompt
        )

    def tokenize(self, messages: Sequence[ChatMessage]) -> tuple[list[int], list[int]]:
        """Token ids and kinds. Pieces are tokenized on their own (context, her words, end marker)
        so her reply is encoded as it would be generated after the prompt."""
        text = self._template(messages, generation_prompt=False)
        pieces: list[tuple[str, int]] = []
        cursor = 0
        for index, message in enumerate(messages):
            if message.role != "assistant":
                continue
            before = self._template(messages[:index], generation_prompt=True)
            through = self._template(messages[: index + 1], generation_prompt=False)
            if not (text.startswith(before) and text.startswith(through) and len(before) >= cursor):
                raise CompanionError("the chat template does not render conversations prefix by prefix")
            reply = through[len(before) :]
            content = message.content.strip()
            split = len(content) if content and reply.startswith(content) else len(reply)
            pieces += [(text[cursor : len(before)], CONTEXT), (reply[:split], CONTENT), (reply[split:], END)]
            cursor = len(through)
        pieces.append((text[cursor:], CONTEXT))
        ids: list[int] = []
        kinds: list[int] = []
        for piece, kind in pieces:
            if piece:
                piece_ids = self.tokenizer(piece, add_special_tokens=False).input_ids
                ids += piece_ids
                kinds += [kind] * len(piece_ids)
        return ids, kinds

    def sample(self, example: Example, stats: SplitStats) -> Sample | None:
        messages = self.messages(example)
        stats.conversations += 1
        if messages is None:
            stats.dropped_no_reply += 1
            return None
        ids, kinds = self.tokenize(messages)
        truncated = False
        # Too long: drop the oldest exchanges first (as chat does), then cut the tail.
        while len(ids) > self.max_length and _droppable_exchange(messages):
            messages = _drop_oldest_exchange(messages)
            ids, kinds = self.tokenize(messages)
            stats.turns_dropped_for_length += 2
            truncated = True
        if len(ids) > self.max_length:
            ids, kinds = ids[: self.max_length], kinds[: self.max_length]
            truncated = True
        if not any(kinds[1:]):
            stats.dropped_too_long += 1
            return None
        stats.truncated += truncated
        stats.samples += 1
        stats.tokens += len(ids)
        stats.max_tokens = max(stats.max_tokens, len(ids))
        sample = Sample(input_ids=ids, kinds=kinds, source=example.source, truncated=truncated)
        stats.target_tokens += sample.n_targets
        return sample


def _droppable_exchange(messages: Sequence[ChatMessage]) -> bool:
    body = messages[1:] if messages and messages[0].role == "system" else messages
    return len(body) > 2


def _drop_oldest_exchange(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    head = list(messages[:1]) if messages[0].role == "system" else []
    body = list(messages[len(head) :])
    return head + normalize_turns(body[2:])


# -- the whole preparation ---------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def samples_hash(train: Sequence[Sample], evals: Sequence[Sample]) -> str:
    """What was trained on, token for token (changes when data, template or tokenizer change)."""
    digest = hashlib.sha256()
    for name, samples in (("train", train), ("eval", evals)):
        digest.update(name.encode())
        for sample in samples:
            digest.update(json.dumps([sample.input_ids, sample.kinds]).encode())
    return digest.hexdigest()[:16]


def prepare(
    folder: Path,
    renderer: Renderer,
    *,
    eval_fraction: float,
    seed: int,
    on_note: Callable[[str], None] | None = None,
) -> PreparedData:
    files = find_dataset(folder)
    train_examples = read_files(files.train)
    eval_examples = read_files(files.eval) if files.eval else []
    notes = []
    if not files.eval:
        train_examples, eval_examples = split_by_hash(train_examples, eval_fraction, seed)
        if eval_examples:
            notes.append(f"no eval.jsonl: held out {len(eval_examples)} of the conversations by content hash")
    stats = {"train": SplitStats(), "eval": SplitStats()}
    train = [s for e in train_examples if (s := renderer.sample(e, stats["train"]))]
    evals = [s for e in eval_examples if (s := renderer.sample(e, stats["eval"]))]
    for name, split in stats.items():
        if split.truncated:
            notes.append(
                f"{name}: {split.truncated} samples longer than max_length={renderer.max_length} tokens were "
                f"shortened ({split.turns_dropped_for_length} old turns dropped)"
            )
        if split.dropped_too_long:
            notes.append(f"{name}: {split.dropped_too_long} samples had no reply left within max_length: skipped")
        if split.dropped_no_reply:
            notes.append(f"{name}: {split.dropped_no_reply} conversations without a reply from her: skipped")
    if not train:
        raise InputFileError(files.train[0], "no usable training samples (no assistant replies within max_length)")
    for note in notes:
        if on_note:
            on_note(note)
    return PreparedData(
        train=train,
        eval=evals,
        files=files,
        stats=stats,
        data_hash=samples_hash(train, evals),
        file_hashes={str(p): file_sha256(p)[:16] for p in [*files.train, *files.eval]},
        system_prompt_mode=renderer.mode,
        notes=notes,
    )


def shuffled(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order
