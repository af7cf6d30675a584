"""A scripted 'stronger LLM' for the loopback server: it reads the passage in the prompt and answers
each template correctly (role-play JSON from the novel's own attributed quotes, interview questions,
in-character answers), so the pipeline's happy path is exercised over real HTTP."""

from __future__ import annotations

import json
import re
from typing import Any

from training.importers.novel import NovelReader


def passage_of(text: str) -> str:
    if "Passage:\n" in text:
        return text.split("Passage:\n", 1)[1].strip()
    if "remembers:\n" in text:
        return text.split("remembers:\n", 1)[1].strip()
    return text


def kind_of(body: dict[str, Any]) -> str:
    system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else ""
    if "role-play scripts" in system:
        return "roleplay"
    if "interview questions" in system:
        return "questions"
    return "answer"


def roleplay(passage: str) -> str:
    reader = NovelReader(passage)
    script: list[dict[str, str]] = []
    first = re.split(r"(?<=[。！？])", passage.split("\n")[0])[0][:60]
    if first:
        script.append({"narration": first})
    for _, paragraphs in reader.chapters():
        for line, _gap in reader.lines(paragraphs):
            if line.speaker and line.speaker != "?" and line.speaker in passage:
                script.append({"speaker": line.speaker, "line": line.text, "action": "说", "mood": "平静"})
    return json.dumps({"script": script}, ensure_ascii=False)


def teacher(body: dict[str, Any]) -> str:
    user = body["messages"][-1]["content"]
    system = body["messages"][0]["content"]
    kind = kind_of(body)
    if kind == "roleplay":
        return roleplay(passage_of(user))
    if kind == "questions":
        name = re.search(r"meets (\S+?) right after", user).group(1)
        return json.dumps(
            {"questions": [f"{name}，你当时心里怎么想的？", f"{name}，你为什么要这么做？"]}, ensure_ascii=False
        )
    sentences = [s for s in re.split(r"(?<=[。！？])", passage_of(system)) if len(s) > 8]
    return f"\\me 想了想\n\\emoji 感慨\n我记得，{sentences[0].strip()[:50] if sentences else '那天的事我都记得。'}"
