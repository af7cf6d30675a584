"""Reading what the LLM wrote, strictly: anything malformed is refused with a reason, never repaired
into a dataset.

Role-play output is JSON (`{"script": [{"narration": ...}, {"speaker", "line", "action", "mood"}]}`)
or, from models that ignore the JSON instruction, the script format itself:

    【刘姥姥带着板儿来到荣国府门前。】
    刘姥姥：\\me 蹭到角门前 \\emoji 拘谨 太爷们纳福。

Refusal reasons (counted in the report): `no JSON`, `truncated JSON`, `invalid JSON`,
`wrong shape`, `unknown speaker` (a speaker not in the passage: wrong roles), `empty line`,
`too few lines`, `no line by the character`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.S)
_NARRATION = re.compile(r"^[【\[]([^】\]]+)[】\]]$")
_SCRIPT_LINE = re.compile(r"^([^\s:：【】\[\]（）()]{1,12})\s*[:：]\s*(.+)$")
_QUESTION_END = re.compile(r"[?？]\s*$")


class Malformed(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class Turn:
    """One step of a role-play script: narration (speaker None) or a spoken line."""

    text: str
    speaker: str | None = None
    action: str | None = None
    mood: str | None = None

    @property
    def is_narration(self) -> bool:
        return self.speaker is None

    def to_json(self) -> dict[str, Any]:
        if self.is_narration:
            return {"narration": self.text}
        out: dict[str, Any] = {"speaker": self.speaker, "line": self.text}
        if self.action:
            out["action"] = self.action
        if self.mood:
            out["mood"] = self.mood
        return out

    def render(self) -> str:
        """The script form: 【narration】 or `角色：\\me action \\emoji mood 台词`."""
        if self.is_narration:
            return f"【{self.text}】"
        tags = "".join(f"\\{k} {v} " for k, v in (("me", self.action), ("emoji", self.mood)) if v)
        return f"{self.speaker}：{tags}{self.text}"


@dataclass
class Script:
    turns: list[Turn] = field(default_factory=list)

    @property
    def lines(self) -> list[Turn]:
        return [t for t in self.turns if not t.is_narration]

    def render(self) -> str:
        return "\n".join(t.render() for t in self.turns)


def extract_json(text: str) -> Any:
    """The first JSON object or array in `text` (code fences allowed)."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    if not starts:
        raise Malformed("no JSON")
    start = min(starts)
    try:
        value, _ = json.JSONDecoder().raw_decode(body[start:])
    except json.JSONDecodeError as error:
        tail = body[start:].rstrip()
        if error.pos >= len(tail) - 1 or tail[-1] not in "}]":
            raise Malformed("truncated JSON", str(error)) from None
        raise Malformed("invalid JSON", str(error)) from None
    return value


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | int | float):
        raise Malformed("wrong shape", f"expected text, got {type(value).__name__}")
    text = " ".join(str(value).split())
    return text or None


def split_tags(text: str) -> tuple[str, str | None, str | None]:
    """`\\me 低头 \\emoji 害羞 台词` -> ("台词", "低头", "害羞")."""
    action = mood = None
    rest = text.strip()
    while True:
        match = re.match(r"^[\\/](me|emoji)\s+(\S+)\s*", rest)
        if not match:
            break
        if match.group(1) == "me":
            action = action or match.group(2)
        else:
            mood = mood or match.group(2)
        rest = rest[match.end() :]
    return rest.strip(), action, mood


def _script_from_json(value: Any) -> list[Turn]:
    items = value.get("script") if isinstance(value, dict) else value
    if isinstance(value, dict) and items is None:
        items = next((v for v in value.values() if isinstance(v, list)), None)
    if not isinstance(items, list):
        raise Malformed("wrong shape", 'expected {"script": [...]}')
    turns = []
    for item in items:
        if not isinstance(item, dict):
            raise Malformed("wrong shape", "script entries must be objects")
        if "narration" in item and not item.get("speaker"):
            text = _clean(item["narration"])
            if text:
                turns.append(Turn(text=text))
            continue
        speaker = _clean(item.get("speaker") or item.get("role") or item.get("name"))
        line = _clean(item.get("line") or item.get("text") or item.get("content"))
        if not speaker:
            raise Malformed("wrong shape", "a line without a speaker")
        if not line:
            raise Malformed("empty line", speaker)
        text, action, mood = split_tags(line)
        turns.append(
            Turn(
                text=text,
                speaker=speaker,
                action=_clean(item.get("action")) or action,
                mood=_clean(item.get("mood") or item.get("emotion")) or mood,
            )
        )
    return turns


def _script_from_text(text: str) -> list[Turn]:
    turns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if match := _NARRATION.match(line):
            turns.append(Turn(text=match.group(1).strip()))
            continue
        match = _SCRIPT_LINE.match(line)
        if not match:
            raise Malformed("no JSON", f"neither JSON nor a script line: {line[:40]!r}")
        spoken, action, mood = split_tags(match.group(2))
        if not spoken:
            raise Malformed("empty line", match.group(1))
        turns.append(Turn(text=spoken, speaker=match.group(1).strip(), action=action, mood=mood))
    return turns


def parse_script(
    text: str, *, passage: str, known: list[str], focus: list[str] | None = None, min_lines: int = 2
) -> Script:
    """A validated script. `known`: names that may speak besides those appearing in the passage;
    `focus`: when given, the script must have a line by one of these names (aliases)."""
    stripped = text.strip()
    try:
        turns = _script_from_json(extract_json(stripped))
    except Malformed as error:
        if error.reason != "no JSON" or not stripped:
            raise
        turns = _script_from_text(stripped)
    allowed = {n for n in known if n}
    for turn in turns:
        if turn.is_narration:
            continue
        name = turn.speaker or ""
        if name not in allowed and name not in passage:
            raise Malformed("unknown speaker", name)
    script = Script(turns)
    if len(script.lines) < min_lines:
        raise Malformed("too few lines", f"{len(script.lines)} spoken lines")
    if focus and not any(t.speaker in focus for t in script.lines):
        raise Malformed("no line by the character", "/".join(focus))
    return script


def parse_questions(text: str, *, limit: int) -> list[str]:
    """Interview questions: JSON (`{"questions": [...]}` or a list), or one question per line."""
    try:
        value = extract_json(text)
        items = value.get("questions") if isinstance(value, dict) else value
        if not isinstance(items, list):
            raise Malformed("wrong shape", 'expected {"questions": [...]}')
        questions = [q for q in (_clean(i) for i in items if isinstance(i, str)) if q]
    except Malformed as error:
        if error.reason != "no JSON":
            raise
        lines = (re.sub(r"^\s*(?:\d+[.、)]|[-*•])\s*", "", raw).strip() for raw in text.splitlines())
        questions = [q for q in lines if q and _QUESTION_END.search(q)]
    questions = [q for q in questions if _QUESTION_END.search(q) and len(q) <= 200]
    if not questions:
        raise Malformed("no questions")
    return list(dict.fromkeys(questions))[:limit]


def parse_answer(text: str, *, character: str, max_chars: int = 600) -> Turn:
    """An in-character answer: plain text, optionally led by `\\me` / `\\emoji` lines."""
    body = text.strip()
    if body.startswith(("{", "[", "```")):
        raise Malformed("wrong shape", "expected a plain answer, got JSON")
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    action = mood = None
    while lines and re.match(r"^[\\/](me|emoji)\s", lines[0]):
        rest, a, m = split_tags(lines[0])
        action, mood = action or a, mood or m
        lines = ([rest] if rest else []) + lines[1:]
    answer = " ".join(lines)
    for prefix in (f"{character}：", f"{character}:", "A:", "A：", "答："):
        if answer.startswith(prefix):
            answer = answer[len(prefix) :].strip()
    answer, a, m = split_tags(answer)
    action, mood = action or a, mood or m
    if not answer:
        raise Malformed("empty answer")
    if re.search(r"(?:^|\n)\s*(?:Q|问|User|用户)\s*[:：]", body) or "<start_of_turn>" in body:
        raise Malformed("wrong roles", "the answer goes on to write the interviewer's part")
    if len(answer) > max_chars:
        raise Malformed("too long", f"{len(answer)} characters")
    return Turn(text=answer, speaker=character, action=action, mood=mood)
