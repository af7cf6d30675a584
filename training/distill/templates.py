"""Prompt templates for distillation, editable: `companion data distill --write-templates DIR` writes
these defaults as files; `--templates DIR` reads them back (a missing file keeps its default).

A template file has a `### system` section and a `### user` section. `{{name}}` placeholders:
  roleplay.md             {{passage}} {{characters}} {{focus}} {{language}}
  interview_questions.md  {{passage}} {{character}} {{count}} {{language}}
  interview_answer.md     {{passage}} {{character}} {{question}} {{language}}
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from companion import atomic
from companion.errors import InputFileError
from companion.messages import ChatMessage

ROLEPLAY = """### system
You turn passages of a novel into role-play scripts for training a character chatbot. You answer with JSON only.

### user
Rewrite this passage as a role-play script: the narration between lines as short stage directions, every spoken line \
by the character who says it, with what they do while speaking (action) and how they feel (mood).

Rules:
- Speakers must be characters of the passage ({{characters}}); never invent a speaker.
- Keep the lines faithful to the passage; you may split or lightly rephrase, not add new events.
- {{focus}}
- Write in {{language}}.
- Answer with one JSON object and nothing else:
{"script": [
  {"narration": "刘姥姥带着板儿来到荣国府门前。"},
  {"speaker": "刘姥姥", "line": "太爷们纳福。", "action": "蹭到角门前", "mood": "拘谨"},
  {"speaker": "周瑞家的", "line": "你是哪里来的？", "action": "迎出来", "mood": "疑惑"}
]}

Passage:
{{passage}}
"""

INTERVIEW_QUESTIONS = """### system
You write interview questions for a character from a novel. You answer with JSON only.

### user
An interviewer meets {{character}} right after the events of this passage. Write {{count}} different questions \
the interviewer asks {{character}} about what happened, how {{character}} felt, and why {{character}} acted that way. \
Address {{character}} as "you". Write in {{language}}. Answer with one JSON object and nothing else:
{"questions": ["...", "..."]}

Passage:
{{passage}}
"""

INTERVIEW_ANSWER = """### system
You are {{character}}, a character from a novel. Stay in character: answer in first person, in {{character}}'s own \
voice and manner of speech, from {{character}}'s memories below. You may begin with what you do as \\me <action> and \
how you feel as \\emoji <mood>, each on its own line. Answer in {{language}}, in one to four sentences, and say \
nothing else.

What {{character}} remembers:
{{passage}}

### user
{{question}}
"""

DEFAULTS = {
    "roleplay": ROLEPLAY,
    "interview_questions": INTERVIEW_QUESTIONS,
    "interview_answer": INTERVIEW_ANSWER,
}
_SECTION = re.compile(r"^###\s*(system|user)\s*$", re.M)


@dataclass(frozen=True)
class Template:
    name: str
    system: str
    user: str

    def render(self, **values: str) -> list[ChatMessage]:
        def fill(text: str) -> str:
            return re.sub(r"\{\{(\w+)\}\}", lambda m: values.get(m.group(1), m.group(0)), text)

        messages = [ChatMessage(role="system", content=fill(self.system))] if self.system else []
        return [*messages, ChatMessage(role="user", content=fill(self.user))]


def parse_template(name: str, text: str, path: Path | None = None) -> Template:
    parts = _SECTION.split(text)
    sections: dict[str, str] = {}
    for i in range(1, len(parts) - 1, 2):
        sections[parts[i]] = parts[i + 1].strip()
    if "user" not in sections:
        problem = "a template needs a '### user' section (and may have '### system')"
        raise InputFileError(path or Path(f"{name}.md"), problem)
    return Template(name, sections.get("system", ""), sections["user"])


@dataclass(frozen=True)
class Templates:
    roleplay: Template
    interview_questions: Template
    interview_answer: Template
    sources: dict[str, str]

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for t in (self.roleplay, self.interview_questions, self.interview_answer):
            digest.update(f"{t.system}\x1f{t.user}\x1e".encode())
        return digest.hexdigest()[:12]


def load_templates(folder: Path | None = None) -> Templates:
    found: dict[str, Template] = {}
    sources = {}
    for name, default in DEFAULTS.items():
        path = folder / f"{name}.md" if folder else None
        if path is not None and path.is_file():
            found[name] = parse_template(name, path.read_text(encoding="utf-8"), path)
            sources[name] = str(path)
        else:
            found[name] = parse_template(name, default)
            sources[name] = "default"
    return Templates(**found, sources=sources)


def write_templates(folder: Path) -> list[Path]:
    written = []
    for name, text in DEFAULTS.items():
        path = folder / f"{name}.md"
        atomic.write_text(path, text)
        written.append(path)
    return written
