"""Corpus files -> chunks with their source (file, line span, heading, speakers).

Three kinds of file, three chunkers, all streaming (they consume lines and yield chunks, so a
huge file is never held whole):

- lore (Markdown or plain prose): paragraphs packed up to `chunk_tokens`, never across a
  heading; the heading path is kept at the top of each chunk ("Sesame > Daily life"), so a
  chunk still says what it is about. A paragraph longer than a chunk is split at sentences,
  repeating the last sentence at the start of the next piece.
- scenes (`角色:「台词」`, one line per utterance): every turn of the character with the
  turn said just before it, packed into exchanges up to `line_chunk_tokens`, never across a
  scene break (a blank line, `---`, a heading, a `Scene:` line). These come back as style
  examples: how she answers things like what the user just said.
- dialogue datasets (.jsonl: ShareGPT, OpenAI messages, ChatHaruhi, Alpaca): each user ->
  character exchange, packed the same way within one conversation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

ChunkKind = Literal["lore", "line"]
FileKind = Literal["lore", "scenes", "dialogues"]
TokenCounter = Callable[[str], int]

CHUNKER_VERSION = 1
MAX_PARAGRAPH_CHARS = 20_000  # a "paragraph" longer than this (a file with no blank lines) is cut

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_OPEN_QUOTES = "「『“\"‘'"
_SPEECH = re.compile(r"^\s*(?P<speaker>[^\s:：「」『』“”\"]+(?: [^\s:：「」『』“”\"]+){0,2})\s*[:：]\s*(?P<text>\S.*)$")
_SCENE_BREAK = re.compile(
    r"^\s*(?:[-*=_~]{3,}|#{1,6}\s.*|第.{1,6}[幕场章节回].*|\[\s*scene\b.*|scene\s*\d*\s*[:：].*)$", re.IGNORECASE
)
_NARRATORS = {"scene", "narration", "narrator", "旁白", "场景", "背景", "narrative", "描述", "动作"}
_SENTENCE_END = re.compile(
    r"(?<=[。！？!?…；;])(?![」』”’\"')）。！？!?…])"  # after an end mark not followed by a closing quote
    r"|(?<=[。！？!?…][」』”’\"')）])"  # after an end mark and its closing quote
    r"|(?<=[.!?])\s+"  # Latin: after . ! ? and a space
)


@dataclass
class Chunk:
    text: str
    kind: ChunkKind
    line_start: int
    line_end: int
    heading: str = ""
    speakers: tuple[str, ...] = ()


# ---------------------------------------------------------------- sentences and packing


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph (CJK and Latin punctuation), each with its punctuation."""
    parts: list[str] = []
    for line in text.split("\n"):
        parts.extend(p for p in (s.strip() for s in _SENTENCE_END.split(line)) if p)
    return parts


def hard_split(text: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """Cut a run-on sentence into pieces under `max_tokens`, at spaces where there are some."""
    pieces: list[str] = []
    rest = text
    while rest and count(rest) > max_tokens:
        ratio = max_tokens / max(count(rest), 1)
        cut = max(1, int(len(rest) * ratio * 0.95))
        space = rest.rfind(" ", cut // 2, cut)
        cut = space if space > 0 else cut
        while cut > 1 and count(rest[:cut]) > max_tokens:
            cut = int(cut * 0.85)
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return [p for p in pieces if p]


# ---------------------------------------------------------------- lore


@dataclass
class _Paragraph:
    start: int
    end: int
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines).strip()


def chunk_lore(lines: Iterable[str], *, count: TokenCounter, max_tokens: int, overlap: int = 1) -> Iterator[Chunk]:
    """Pack paragraphs of prose into chunks under `max_tokens`, never across a heading."""
    headings: list[tuple[int, str]] = []
    packed: list[_Paragraph] = []
    packed_tokens = 0

    def heading_path() -> str:
        return " > ".join(title for _, title in headings)

    def budget() -> int:
        prefix = heading_path()
        return max(16, max_tokens - (count(prefix) + 1 if prefix else 0))

    def flush() -> Iterator[Chunk]:
        nonlocal packed, packed_tokens
        if packed:
            body = "\n".join(p.text for p in packed)
            yield _lore_chunk(body, packed[0].start, packed[-1].end, heading_path())
        packed, packed_tokens = [], 0

    def add(paragraph: _Paragraph) -> Iterator[Chunk]:
        nonlocal packed_tokens
        text = paragraph.text
        if not text:
            return
        tokens = count(text)
        room = budget()
        if tokens > room:
            yield from flush()
            for piece in _split_long(text, room, count, overlap):
                yield _lore_chunk(piece, paragraph.start, paragraph.end, heading_path())
            return
        if packed and packed_tokens + tokens + 1 > room:
            yield from flush()
        packed.append(paragraph)
        packed_tokens += tokens + 1

    current: _Paragraph | None = None
    size = 0
    lineno = 0
    for lineno, line in enumerate(lines, 1):
        heading = _HEADING.match(line)
        if heading:
            if current:
                yield from add(current)
                current = None
            yield from flush()
            level = len(heading.group(1))
            headings = [(lvl, t) for lvl, t in headings if lvl < level] + [(level, heading.group(2).strip())]
            continue
        if not line.strip():
            if current:
                yield from add(current)
                current, size = None, 0
            continue
        if current is None:
            current, size = _Paragraph(start=lineno, end=lineno), 0
        current.lines.append(line.rstrip())
        current.end = lineno
        size += len(line)
        if size > MAX_PARAGRAPH_CHARS:
            yield from add(current)
            current, size = None, 0
    if current:
        yield from add(current)
    yield from flush()


def _lore_chunk(body: str, start: int, end: int, heading: str) -> Chunk:
    text = f"{heading}\n{body}" if heading else body
    return Chunk(text=text, kind="lore", line_start=start, line_end=end, heading=heading)


def _split_long(text: str, max_tokens: int, count: TokenCounter, overlap: int) -> Iterator[str]:
    """Pieces of a long paragraph under `max_tokens`: its lines, then sentences, then hard cuts;
    each piece after the first opens with the previous piece's last sentence when that is short."""
    units: list[tuple[str, int, bool]] = []  # (text, tokens, ends a line)
    for line in text.split("\n"):
        sentences = split_sentences(line)
        for i, sentence in enumerate(sentences):
            tokens = count(sentence)
            pieces = hard_split(sentence, max_tokens, count) if tokens > max_tokens else [sentence]
            for j, piece in enumerate(pieces):
                last = i == len(sentences) - 1 and j == len(pieces) - 1
                units.append((piece, tokens if len(pieces) == 1 else count(piece), last))
    piece: list[tuple[str, int, bool]] = []
    used = 0
    for unit in units:
        if piece and used + unit[1] > max_tokens:
            yield _join_units(piece)
            carry = [u for u in piece[-overlap:] if u[1] <= max_tokens // 3] if overlap else []
            piece, used = carry, sum(u[1] for u in carry)
        piece.append(unit)
        used += unit[1]
    if piece:
        yield _join_units(piece)


def _join_units(units: Sequence[tuple[str, int, bool]]) -> str:
    out = ""
    for i, (text, _, _) in enumerate(units):
        if i and units[i - 1][2]:
            out += "\n"
        elif out and out[-1].isascii() and text[:1].isascii():
            out += " "
        out += text
    return out


# ---------------------------------------------------------------- scenes


@dataclass
class Utterance:
    lineno: int
    speaker: str | None  # None: narration or an unattributed line
    raw: str


def parse_speech(line: str) -> tuple[str, str] | None:
    """(speaker, text) for `角色:「台词」` / `Name: line`, else None."""
    match = _SPEECH.match(line)
    if not match or len(match.group("speaker")) > 24:
        return None
    speaker = match.group("speaker").strip("'\"`*[]【】()（） ")
    if not speaker:
        return None
    return speaker, match.group("text").strip()


def is_narrator(speaker: str) -> bool:
    return speaker.strip("'\"`*").lower() in _NARRATORS


def looks_like_scene(lines: Sequence[str]) -> bool:
    """Most non-empty lines are `speaker: line`, and quoted or short-labelled enough to trust."""
    content = [line for line in lines if line.strip()]
    if len(content) < 2:
        return False
    speech = [parse_speech(line) for line in content]
    matched = [s for s in speech if s]
    quoted = sum(1 for _, text in matched if text[:1] in _OPEN_QUOTES)
    share = len(matched) / len(content)
    return (share >= 0.6 and quoted >= len(matched) * 0.5) or share >= 0.8


def scene_utterances(lines: Iterable[str]) -> Iterator[Utterance | None]:
    """Utterances of a scene file; None marks a scene break."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or _SCENE_BREAK.match(line):
            yield None
            continue
        parsed = parse_speech(line)
        if parsed and is_narrator(parsed[0]):
            yield None  # a "Scene: ..." line opens a new scene
            yield Utterance(lineno, None, line.strip())
        elif parsed:
            yield Utterance(lineno, parsed[0], line.strip())
        else:
            yield Utterance(lineno, None, line.strip())


@dataclass
class _Turn:
    speaker: str | None
    utterances: list[Utterance]

    @property
    def start(self) -> int:
        return self.utterances[0].lineno

    @property
    def end(self) -> int:
        return self.utterances[-1].lineno

    @property
    def text(self) -> str:
        return "\n".join(u.raw for u in self.utterances)


class SpeakerMatcher:
    """Whether a speaker label is the character (names, nicknames, aliases; 春日 for 凉宫春日).

    With no names at all every speaker counts, so a corpus with no known character still yields
    its exchanges."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(dict.fromkeys(n.strip() for n in names if n and n.strip()))
        self._folded = {n.casefold() for n in self.names}

    def __call__(self, speaker: str | None) -> bool:
        if speaker is None:
            return False
        if not self.names:
            return not is_narrator(speaker)
        folded = speaker.casefold()
        if folded in self._folded:
            return True
        # a short form of a listed name: 春日 for 凉宫春日, Sheldon for Sheldon Cooper
        return len(folded) >= 2 and any(folded in name or name in folded for name in self._folded)


def chunk_scenes(
    lines: Iterable[str], *, is_character: SpeakerMatcher, count: TokenCounter, max_tokens: int
) -> Iterator[Chunk]:
    """Exchanges that end in the character's turn, packed within a scene."""
    scene: list[_Turn] = []
    for utterance in scene_utterances(lines):
        if utterance is None:
            yield from _scene_chunks(scene, is_character, count, max_tokens)
            scene = []
        elif scene and scene[-1].speaker == utterance.speaker and utterance.speaker is not None:
            scene[-1].utterances.append(utterance)
        else:
            scene.append(_Turn(utterance.speaker, [utterance]))
        if len(scene) > 2000:  # a scene file with no breaks at all: cut it into bounded pieces
            yield from _scene_chunks(scene[:-1], is_character, count, max_tokens)
            scene = scene[-1:]
    yield from _scene_chunks(scene, is_character, count, max_tokens)


def _scene_chunks(turns: list[_Turn], is_character: SpeakerMatcher, count: TokenCounter, max_tokens: int):
    # a unit is (first turn, her turn): her turn with the turn said just before it
    units = []
    for i, turn in enumerate(turns):
        if is_character(turn.speaker):
            first = i - 1 if i > 0 and not is_character(turns[i - 1].speaker) else i
            units.append((first, i))
    start: int | None = None
    end = -1
    used = 0
    for first, last in units:
        tokens = sum(count(turns[j].text) + 1 for j in range(first, last + 1))
        if start is not None and (first != end + 1 or used + tokens > max_tokens):
            yield _exchange(turns[start : end + 1])
            start = None
        if tokens > max_tokens:
            yield from _long_turn(turns[last], count, max_tokens)
            continue
        if start is None:
            start, used = first, 0
        end = last
        used += tokens
    if start is not None:
        yield _exchange(turns[start : end + 1])


def _exchange(group: list[_Turn]) -> Chunk:
    text = "\n".join(t.text for t in group)
    speakers = tuple(dict.fromkeys(t.speaker for t in group if t.speaker))
    return Chunk(text=text, kind="line", line_start=group[0].start, line_end=group[-1].end, speakers=speakers)


def _long_turn(turn: _Turn, count: TokenCounter, max_tokens: int) -> Iterator[Chunk]:
    """A monologue longer than a chunk: her turn alone, cut at lines, then sentences."""
    speakers = (turn.speaker,) if turn.speaker else ()
    group: list[Utterance] = []
    used = 0
    for utterance in turn.utterances:
        tokens = count(utterance.raw) + 1
        if group and used + tokens > max_tokens:
            yield Chunk("\n".join(u.raw for u in group), "line", group[0].lineno, group[-1].lineno, speakers=speakers)
            group, used = [], 0
        if tokens > max_tokens:
            for piece in _split_long(utterance.raw, max_tokens, count, overlap=0):
                yield Chunk(piece, "line", utterance.lineno, utterance.lineno, speakers=speakers)
            continue
        group.append(utterance)
        used += tokens
    if group:
        yield Chunk("\n".join(u.raw for u in group), "line", group[0].lineno, group[-1].lineno, speakers=speakers)


def scene_speakers(lines: Iterable[str]) -> dict[str, int]:
    """How many lines each speaker has (for finding the character in a corpus)."""
    counts: dict[str, int] = {}
    for utterance in scene_utterances(lines):
        if utterance is not None and utterance.speaker:
            counts[utterance.speaker] = counts.get(utterance.speaker, 0) + 1
    return counts


# ---------------------------------------------------------------- dialogue datasets

_USER_ROLES = {"user", "human", "prompt", "question"}
_CHAR_ROLES = {"assistant", "gpt", "model", "bot", "character", "chatgpt", "response"}


@dataclass
class DialogueStats:
    records: int = 0
    bad_lines: list[int] = field(default_factory=list)


def _exchanges(record: object) -> list[tuple[str, str, str, str]]:
    """(user label, user text, character label, character text) pairs of one record."""
    if not isinstance(record, dict):
        return []
    if {"query", "response"} <= record.keys():  # ChatHaruhi
        return [
            (
                str(record.get("role_A") or "{{user}}"),
                str(record["query"]),
                str(record.get("role_B") or "{{char}}"),
                str(record["response"]),
            )
        ]
    if "instruction" in record and "output" in record:  # Alpaca
        prompt = "\n".join(str(record[k]) for k in ("instruction", "input") if record.get(k))
        return [("{{user}}", prompt, "{{char}}", str(record["output"]))]
    turns = record.get("conversations") or record.get("messages")
    if not isinstance(turns, list):
        return []
    pairs = []
    pending: str | None = None
    for turn in turns:
        if not isinstance(turn, dict):
            continue
        role = str(turn.get("from") or turn.get("role") or "").lower()
        text = turn.get("value") if "value" in turn else turn.get("content")
        if not isinstance(text, str):
            continue
        if role in _USER_ROLES:
            pending = text
        elif role in _CHAR_ROLES and pending is not None:
            pairs.append(("{{user}}", pending, "{{char}}", text))
            pending = None
    return pairs


def chunk_dialogues(
    lines: Iterable[str], *, count: TokenCounter, max_tokens: int, stats: DialogueStats | None = None
) -> Iterator[Chunk]:
    """Exchanges from a JSONL dialogue dataset, packed within each conversation (one record)."""
    stats = stats if stats is not None else DialogueStats()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            stats.bad_lines.append(lineno)
            continue
        pairs = _exchanges(record)
        if not pairs:
            stats.bad_lines.append(lineno)
            continue
        stats.records += 1
        yield from _pack_pairs(pairs, lineno, count, max_tokens)


def _pack_pairs(pairs, lineno: int, count: TokenCounter, max_tokens: int) -> Iterator[Chunk]:
    packed: list[str] = []
    speakers: list[str] = []
    used = 0
    for user_label, user_text, char_label, char_text in pairs:
        text = f"{user_label}: {user_text.strip()}\n{char_label}: {char_text.strip()}"
        tokens = count(text) + 1
        if packed and used + tokens > max_tokens:
            yield Chunk("\n".join(packed), "line", lineno, lineno, speakers=tuple(dict.fromkeys(speakers)))
            packed, speakers, used = [], [], 0
        if tokens > max_tokens:
            for piece in _split_long(text, max_tokens, count, overlap=0):
                yield Chunk(piece, "line", lineno, lineno, speakers=(char_label,))
            continue
        packed.append(text)
        speakers += [user_label, char_label]
        used += tokens
    if packed:
        yield Chunk("\n".join(packed), "line", lineno, lineno, speakers=tuple(dict.fromkeys(speakers)))


def json_array_lines(text: str) -> Iterator[str]:
    """A .json dataset (a list of records) as JSONL lines, so one chunker reads both."""
    data = json.loads(text)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ValueError("expected a list of dialogue records")
    for record in data:
        yield json.dumps(record, ensure_ascii=False)
