"""Cleaning rules: what a message must be to teach the character something.

Message rules (each drop is counted under its reason in the report):
- system notices (joins, recalls, pats, red-packet and transfer notices) and app noise
  (淘口令, forwarded chain messages, "message type not supported") are dropped;
- repeated-character spam (one short unit repeated over and over, nothing else) is dropped,
  and runs longer than `max_run` in an otherwise real message are cut to `max_run`;
- media become placeholders (`[图片]`, `[语音]`, ...): kept as context, never as a reply;
- emoji, kaomoji and WeChat/QQ codes like `[旺柴]` are text and are kept;
- PII is scrubbed (see `training.pii`) before anything else sees the text;
- a message longer than `max_message_tokens` is dropped.
Conversation rules: sessions are cut where the time gap exceeds `session_gap`, consecutive
messages by one speaker are merged (newline-joined).
Q&A rules (community submissions), in the spirit of community review: the question must ask
something, the answer must answer with some substance (not "不知道"/"+1"/"同上", not a copy of
the question, at least `min_answer_tokens`), answers voted below `min_votes` are dropped, and
one best-voted answer per question is kept (`answers_per_question`).

Token counts are approximate and tokenizer-free: each CJK character, each run of letters or
digits, and each other symbol counts as one token.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from companion.scripts import CJK
from training.conversation import Conversation, Message
from training.pii import scrub

TOKEN = re.compile(f"[{CJK}]|[A-Za-z0-9_']+|[^\\s]")
ZERO_WIDTH = re.compile(r"[\u200b-\u200f\u2060\ufeff\u00ad]")
MEDIA = re.compile(
    r"^(?:\[(?:图片|语音|视频|表情包|动画表情|表情|文件|链接|位置|名片|小程序|聊天记录|通话|闪照|视频号|音乐)\]\s*)+$"
)
NOISE = [
    ("recall notice", re.compile(r"撤回了一条消息|recalled a message")),
    ("pat notice", re.compile(r'^(?:"[^"]{1,30}"|你|我)\s*拍了拍\s*(?:"[^"]{1,30}"|我|自己)')),
    ("friend notice", re.compile(r"你已添加了.{0,40}现在可以开始聊天了|以上是打招呼的内容|我通过了你的朋友验证请求")),
    (
        "red packet or transfer",
        re.compile(r"请在手机上查看|领取了你的红包|^(?:已收款|已被领取|\[(?:QQ)?红包\].*|\[转账\].*)$"),
    ),
    ("unsupported message", re.compile(r"\[该消息类型暂不能展示\]|请使用最新版本?手机QQ|当前版本不支持")),
    (
        "shopping code",
        re.compile(r"[￥€$]\s?[A-Za-z0-9]{8,14}\s?[￥€$]|复制这(?:段|条)内容.{0,12}打开|【(?:淘宝|拼多多|京东)】"),
    ),
    ("chain message", re.compile(r"转发(?:给|到)?\d+个|不转不是|转发此(?:消息|条)|看到请转发")),
    ("new-message divider", re.compile(r"^[-—=\s]*以下为新消息[-—=\s]*$")),
]
NON_ANSWERS = {
    "不知道", "不清楚", "同上", "同问", "顶", "+1", "1", "哈哈", "哈哈哈", "嗯", "嗯嗯", "ok", "好", "好的", "666",
    "随便", "没有", "无", "略", "如题", "idk", "lol", "same", "no idea", "dunno", "n/a", "na", "none", "pass",
    "?", "？", "。", "...", "……",
}  # fmt: skip
QUESTION_MARKERS = re.compile(
    r"[?？]|吗|呢|么|什么|怎么|怎样|为什么|为何|如何|哪|谁|几|多少|是不是|能不能|可不可以|会不会|有没有|要不要|是否|"
    r"请|告诉我|说说|讲讲|介绍|聊聊|谈谈|"
    r"^\s*(?:who|what|when|where|why|how|which|whose|do|does|did|is|are|was|were|can|could|would|will|should|"
    r"have|has|tell me|describe|explain|please)\b",
    re.I,
)


def count_tokens(text: str) -> int:
    return len(TOKEN.findall(text))


@dataclass
class CleanConfig:
    session_gap: timedelta = timedelta(minutes=30)
    max_message_tokens: int = 512
    max_sample_tokens: int = 2048
    max_turns: int = 24  # messages per sample, system excluded
    min_reply_tokens: int = 1
    max_run: int = 8
    spam_repeats: int = 12
    narration: str = "drop"  # or "context"
    min_votes: float = 0.0
    answers_per_question: int = 1
    min_answer_tokens: int = 3
    near_duplicate_threshold: float = 0.85
    eval_ratio: float = 0.05
    scrub_pii: bool = True
    public_text: str = field(default="", repr=False)  # the character's published facts: not PII


@dataclass
class Tally:
    """What cleaning did, for the report."""

    dropped_messages: Counter[str] = field(default_factory=Counter)
    dropped_samples: Counter[str] = field(default_factory=Counter)
    pii: Counter[str] = field(default_factory=Counter)
    edited: Counter[str] = field(default_factory=Counter)  # kept, but changed

    def merge(self, other: Tally) -> None:
        self.dropped_messages.update(other.dropped_messages)
        self.dropped_samples.update(other.dropped_samples)
        self.pii.update(other.pii)
        self.edited.update(other.edited)


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFC", ZERO_WIDTH.sub("", text))
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u3000", " ")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


_RUN = re.compile(r"(.{1,3}?)\1{7,}", re.S)


def is_spam(text: str, repeats: int) -> bool:
    compact = re.sub(r"\s", "", text)
    if len(compact) < repeats:
        return False
    for size in (1, 2, 3):
        unit = compact[:size]
        if unit * (len(compact) // size) == compact[: len(compact) // size * size] and len(compact) // size >= repeats:
            return True
    distinct = set(compact)
    return len(distinct) <= 2 and len(compact) >= repeats * 2


def collapse_runs(text: str, max_run: int) -> tuple[str, bool]:
    changed = False

    def cut(match: re.Match[str]) -> str:
        nonlocal changed
        unit = match.group(1)
        count = len(match.group(0)) // len(unit)
        if count <= max_run:
            return match.group(0)
        changed = True
        return unit * max_run + match.group(0)[len(unit) * count :]

    return _RUN.sub(cut, text), changed


def clean_message(message: Message, config: CleanConfig, tally: Tally) -> Message | None:
    if message.kind == "system":
        tally.dropped_messages["system notice"] += 1
        return None
    if message.kind == "narration" and config.narration != "context":
        tally.dropped_messages["narration"] += 1
        return None
    text = normalize_text(message.text)
    if not text:
        tally.dropped_messages["empty"] += 1
        return None
    if message.kind == "media" or MEDIA.match(text):
        return (
            message
            if message.kind == "media" and text == message.text
            else message.model_copy(update={"text": text, "kind": "media"})
        )
    for reason, pattern in NOISE:
        if pattern.search(text):
            tally.dropped_messages[f"noise: {reason}"] += 1
            return None
    if is_spam(text, config.spam_repeats):
        tally.dropped_messages["repeated-character spam"] += 1
        return None
    text, changed = collapse_runs(text, config.max_run)
    if changed:
        tally.edited["over-long character run shortened"] += 1
    if config.scrub_pii:
        text = scrub(text, tally.pii, config.public_text)
    if count_tokens(text) > config.max_message_tokens:
        tally.dropped_messages["message too long"] += 1
        return None
    return message if text == message.text else message.model_copy(update={"text": text})


def split_sessions(conversation: Conversation, gap: timedelta) -> list[Conversation]:
    """Cut where the time between two messages exceeds `gap` (messages without time never cut)."""
    sessions: list[list[Message]] = [[]]
    previous = None
    for message in conversation.messages:
        if previous is not None and message.time is not None and message.time - previous > gap and sessions[-1]:
            sessions.append([])
        sessions[-1].append(message)
        if message.time is not None:
            previous = message.time
    if len(sessions) == 1:
        return [conversation]
    return [
        conversation.model_copy(update={"messages": chunk, "meta": {**conversation.meta, "session": index}})
        for index, chunk in enumerate(sessions)
        if chunk
    ]


def merge_consecutive(messages: list[Message]) -> list[Message]:
    """Consecutive messages by one speaker become one, newline-joined."""
    merged: list[Message] = []
    for message in messages:
        last = merged[-1] if merged else None
        if (
            last is not None
            and last.speaker == message.speaker
            and last.role == message.role
            and last.kind != "narration"
            and message.kind != "narration"
        ):
            kind = "media" if last.kind == message.kind == "media" else "text"
            merged[-1] = last.model_copy(update={"text": f"{last.text}\n{message.text}", "kind": kind})
        else:
            merged.append(message)
    return merged


def clean_conversation(conversation: Conversation, config: CleanConfig, tally: Tally) -> list[Conversation]:
    messages = [m for m in (clean_message(m, config, tally) for m in conversation.messages) if m is not None]
    cleaned = conversation.model_copy(update={"messages": messages})
    return [
        s.model_copy(update={"messages": merge_consecutive(s.messages)})
        for s in split_sessions(cleaned, config.session_gap)
        if s.messages
    ]


# ---- community Q&A ----


def _norm(text: str) -> str:
    return re.sub(r"[\s\W_]+", "", text.lower())


def asks_something(question: str) -> bool:
    return bool(QUESTION_MARKERS.search(question.strip()))


def answer_problem(question: str, answer: str, config: CleanConfig) -> str | None:
    bare = _norm(answer)
    if not bare:
        return "answer has no words"
    if answer.strip().lower() in NON_ANSWERS or bare in {_norm(n) for n in NON_ANSWERS}:
        return "answer is a non-answer"
    if bare == _norm(question):
        return "answer repeats the question"
    if count_tokens(answer) < config.min_answer_tokens:
        return "answer too short"
    return None


def select_qa(conversations: list[Conversation], config: CleanConfig, tally: Tally) -> list[Conversation]:
    """Community review: drop weak questions and answers, keep the best-voted answers per question."""
    by_question: dict[str, list[Conversation]] = {}
    for conversation in conversations:
        question = next((m.text for m in conversation.messages if m.role == "user"), "")
        answer = next((m.text for m in conversation.messages if m.role == "assistant"), "")
        votes = float(conversation.meta.get("votes", 0))
        if not asks_something(question):
            tally.dropped_samples["Q&A: question asks nothing"] += 1
            continue
        problem = answer_problem(question, answer, config)
        if problem:
            tally.dropped_samples[f"Q&A: {problem}"] += 1
            continue
        if conversation.meta.get("has_votes") and votes < config.min_votes:
            tally.dropped_samples["Q&A: voted down"] += 1
            continue
        by_question.setdefault(_norm(question), []).append(conversation)
    kept: list[Conversation] = []
    for answers in by_question.values():
        answers.sort(key=lambda c: (-float(c.meta.get("votes", 0)), -len(c.messages[-1].text)))
        kept.extend(answers[: config.answers_per_question])
        extra = len(answers) - config.answers_per_question
        if extra > 0:
            tally.dropped_samples["Q&A: lower-voted answer to the same question"] += extra
    return kept
