"""Novel -> chunks -> role-play scripts and character interviews -> cleaned records -> ShareGPT.

Working folder (`--out`; default `<data dir>/distill/<name>/`):

    state.json        what is finished, per chunk and task: the commit point for resuming
    roleplay.jsonl    one role-play script per chunk: 【narration】, `角色：台词`, `\\me` actions, `\\emoji` moods
    interviews.jsonl  the character answering an interviewer's questions about each chunk, in her voice
    rejects.jsonl     raw outputs refused as malformed, with the reason (for reading; never a dataset)
    sharegpt.jsonl    the records as ShareGPT conversations with the character (`--as`) as the assistant
    report.json/.md   counts: requests, retries, malformed outputs by reason, drops, cleaning, duplicates

Each chunk's records are appended and flushed before `state.json` marks it done (written
atomically), and a restart first drops any record whose chunk is not marked done, so an
interrupted run never leaves half a chunk and never repeats a finished one. Malformed output
(no JSON, truncated, unknown speakers, too short, ...) is retried up to `attempts` times, then
dropped and counted. An unreachable endpoint stops the run at once with the state kept; a
request that keeps failing leaves its chunk for the next run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from companion import atomic
from companion.errors import CompanionError
from companion.prompt import NEW_CHAT_MARKER
from companion.scripts import HAN_CHAR
from training.cleaning import CleanConfig, Tally, answer_problem, clean_message
from training.conversation import Message
from training.dedupe import Deduplicator
from training.distill.client import ChatClient, EndpointError, MalformedResponse, RetriesExhausted
from training.distill.parse import Malformed, Script, Turn, parse_answer, parse_questions, parse_script
from training.distill.templates import Templates
from training.importers.novel import CHAPTER, NovelReader
from training.textio import read_text

STATE_VERSION = 1
DIALOGUE_MARKS = ("“", "「", "『", '"', "：")


@dataclass
class DistillOptions:
    names: tuple[str, ...] = ()
    """The character (and aliases): her lines become the assistant side; interviews are with her."""
    chunk_chars: int = 1200
    max_chunks: int | None = None
    all_chunks: bool = False
    """Also chunks without dialogue or (with names) without her."""
    roleplay: bool = True
    questions: int = 3
    """Interview questions per chunk (0: no interviews)."""
    attempts: int = 3
    """Requests per item before malformed output is dropped."""
    max_tokens: int = 1024
    answer_tokens: int = 256
    temperature: float = 0.7
    language: str | None = None
    min_lines: int = 2
    public_text: str = ""


@dataclass(frozen=True)
class Chunk:
    id: str
    source: str
    index: int
    chapter: str
    text: str


def chunk_text(text: str, source: str, chunk_chars: int) -> list[Chunk]:
    """Paragraphs packed into chunks of about `chunk_chars`, never across a chapter heading."""
    chunks: list[Chunk] = []
    chapter = ""
    current: list[str] = []

    def close() -> None:
        if current:
            body = "\n".join(current)
            digest = hashlib.blake2b(body.encode(), digest_size=5).hexdigest()
            index = len(chunks)
            chunks.append(Chunk(f"{source}:{index}:{digest}", source, index, chapter, body))
            current.clear()

    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.strip().replace("\u3000", "")
        if not line:
            continue
        if CHAPTER.match(line) and len(line) < 80:
            close()
            chapter = line
            continue
        while len(line) > chunk_chars * 1.5:  # a paragraph longer than a chunk: cut at sentence ends
            cut = max(line.rfind(p, 0, chunk_chars) for p in "。！？．.!?")
            cut = cut + 1 if cut > chunk_chars // 3 else chunk_chars
            current.append(line[:cut])
            close()
            line = line[cut:]
        if current and sum(len(p) + 1 for p in current) + len(line) > chunk_chars:
            close()
        current.append(line)
    close()
    return chunks


def language_of(text: str) -> str:
    return "Chinese (中文)" if len(HAN_CHAR.findall(text)) > len(text) * 0.2 else "English"


@dataclass
class Report:
    client: str = ""
    templates: dict[str, str] = field(default_factory=dict)
    chunks_total: int = 0
    chunks_selected: int = 0
    chunks_done_before: int = 0
    chunks_done: int = 0
    chunks_left: int = 0
    requests_failed: int = 0
    roleplay_kept: int = 0
    roleplay_dropped: int = 0
    question_sets: int = 0
    questions_asked: int = 0
    answers_kept: int = 0
    answers_dropped: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    retried_malformed: int = 0
    duplicates: int = 0
    cleaning: Tally = field(default_factory=Tally)
    records: dict[str, int] = field(default_factory=dict)
    sharegpt: int = 0
    usage: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    stopped: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k not in ("malformed", "cleaning")}
        data["malformed"] = dict(self.malformed.most_common())
        data["cleaning"] = {
            "dropped_lines": dict(self.cleaning.dropped_messages.most_common()),
            "pii_replaced": dict(self.cleaning.pii.most_common()),
        }
        data["elapsed_s"] = round(self.elapsed_s, 1)
        return data

    def to_markdown(self) -> str:
        d = self.to_json()
        lines = [
            "# Distillation report",
            "",
            f"Endpoint: {self.client}. Templates: {', '.join(f'{k} ({v})' for k, v in self.templates.items())}.",
            "",
            f"- chunks: {self.chunks_total} in the novels, {self.chunks_selected} selected, "
            f"{self.chunks_done_before} finished earlier, {self.chunks_done} finished now, {self.chunks_left} left",
            f"- role-play scripts: {self.roleplay_kept} kept, {self.roleplay_dropped} dropped (malformed every try)",
            f"- interviews: {self.questions_asked} questions, {self.answers_kept} answers kept, "
            f"{self.answers_dropped} dropped",
            f"- malformed outputs (each retried up to the attempt limit): {d['malformed'] or 'none'}",
            f"- requests that kept failing (chunk left for the next run): {self.requests_failed}",
            f"- duplicates dropped: {self.duplicates}",
            f"- lines dropped by cleaning: {d['cleaning']['dropped_lines'] or 'none'}",
            f"- PII replaced: {d['cleaning']['pii_replaced'] or 'none'}",
            f"- records on disk: {self.records}; ShareGPT conversations: {self.sharegpt}",
            f"- usage: {self.usage}; {d['elapsed_s']} s",
        ]
        if self.stopped:
            lines += ["", f"**Stopped early:** {self.stopped}"]
        lines += [""] + [f"- note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


class Workdir:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.state_path = folder / "state.json"
        self.roleplay = folder / "roleplay.jsonl"
        self.interviews = folder / "interviews.jsonl"
        self.rejects = folder / "rejects.jsonl"
        self.state = self._load_state()

    def _load_state(self) -> dict[str, Any]:
        if not self.state_path.is_file():
            return {"version": STATE_VERSION, "done": {}}
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CompanionError(f"{self.state_path} is corrupt: remove it (or pass --restart) to start over") from None
        if state.get("version") != STATE_VERSION:
            raise CompanionError(f"{self.state_path} was written by another version: pass --restart")
        return state

    def done(self, chunk_id: str, task: str) -> bool:
        return task in self.state["done"].get(chunk_id, {})

    def read(self, path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from an interrupted write
        return records

    def reconcile(self) -> int:
        """Drop records of tasks not marked done (written just before an interruption)."""
        dropped = 0
        for path, task in ((self.roleplay, "roleplay"), (self.interviews, "interview")):
            records = self.read(path)
            kept = [r for r in records if self.done(r.get("chunk", ""), task)]
            raw_lines = len(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else 0
            if len(kept) != raw_lines:
                atomic.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
                dropped += raw_lines - len(kept)
        return dropped

    def append(self, path: Path, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with path.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            handle.flush()
            os.fsync(handle.fileno())

    def mark(self, chunk_id: str, task: str, outcome: str) -> None:
        self.state["done"].setdefault(chunk_id, {})[task] = outcome
        atomic.write_text(self.state_path, json.dumps(self.state, ensure_ascii=False, indent=1) + "\n")


def training_text(turn: Turn) -> str:
    """Her line as the runtime reads it: `[mood]` (an expression tag), `\\me action`, then the words."""
    head = []
    if turn.mood:
        head.append(f"[{turn.mood}]")
    if turn.action:
        head.append(f"\\me {turn.action}")
    return (" ".join(head) + "\n" + turn.text) if head else turn.text


class Distiller:
    def __init__(
        self,
        client: ChatClient,
        templates: Templates,
        workdir: Workdir,
        options: DistillOptions,
        *,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.client = client
        self.templates = templates
        self.work = workdir
        self.options = options
        self.on_progress = on_progress
        self.report = Report(client=client.describe(), templates=dict(templates.sources))
        self.clean_config = CleanConfig(public_text=options.public_text, max_message_tokens=400)
        self.dedupe = Deduplicator(0.9)
        self.lock = asyncio.Lock()
        self.book_names: dict[str, set[str]] = {}

    # -- selecting ---------------------------------------------------------------------------
    def chunks(self, paths: list[Path]) -> list[Chunk]:
        found: list[Chunk] = []
        for path in paths:
            text = read_text(path).text
            self.book_names[path.name] = set(NovelReader(text, self.options.names).names.names)
            found += chunk_text(text, path.name, self.options.chunk_chars)
        self.report.chunks_total = len(found)
        selected = [c for c in found if self.options.all_chunks or self._wanted(c)]
        if self.options.max_chunks is not None:
            selected = selected[: self.options.max_chunks]
        self.report.chunks_selected = len(selected)
        return selected

    def _wanted(self, chunk: Chunk) -> bool:
        if not any(mark in chunk.text for mark in DIALOGUE_MARKS):
            return False
        return not self.options.names or any(n in chunk.text for n in self.options.names)

    def tasks(self) -> list[str]:
        tasks = ["roleplay"] if self.options.roleplay else []
        if self.options.questions and self.options.names:
            tasks.append("interview")
        return tasks

    # -- running -----------------------------------------------------------------------------
    async def run(self, paths: list[Path], concurrency: int = 2) -> Report:
        started = time.perf_counter()
        if self.options.questions and not self.options.names:
            self.report.notes.append("interviews need the character: pass --as NAME (only role-play scripts made)")
        chunks = self.chunks(paths)
        if dropped := self.work.reconcile():
            self.report.notes.append(f"{dropped} records of an interrupted chunk were dropped and are redone")
        for record in self.work.read(self.work.roleplay) + self.work.read(self.work.interviews):
            self.dedupe.check(record.get("text", ""))
        tasks = self.tasks()
        todo = [c for c in chunks if not all(self.work.done(c.id, t) for t in tasks)]
        self.report.chunks_done_before = len(chunks) - len(todo)
        total = len(todo)
        if todo:
            await self.client.probe()  # fail fast, before any work
        queue: asyncio.Queue[Chunk] = asyncio.Queue()
        for chunk in todo:
            queue.put_nowait(chunk)
        stop: list[BaseException] = []
        finished = 0

        async def worker() -> None:
            nonlocal finished
            while not stop and not queue.empty():
                chunk = queue.get_nowait()
                try:
                    complete = await self.process(chunk, tasks)
                except (EndpointError, asyncio.CancelledError) as error:
                    stop.append(error)
                    return
                if complete:
                    self.report.chunks_done += 1
                finished += 1
                if self.on_progress:
                    self.on_progress(finished, total)

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        finally:
            await self.client.aclose()
            self.report.chunks_left = len(chunks) - self.report.chunks_done_before - self.report.chunks_done
            self.report.usage = self.client.usage.to_json()
            self.report.elapsed_s = time.perf_counter() - started
            self.report.records = {
                "roleplay": len(self.work.read(self.work.roleplay)),
                "interviews": len(self.work.read(self.work.interviews)),
            }
        if stop:
            self.report.stopped = str(stop[0])
            raise stop[0]
        return self.report

    async def process(self, chunk: Chunk, tasks: list[str]) -> bool:
        """Run the chunk's unfinished tasks; True when all are finished."""
        complete = True
        for task in tasks:
            if self.work.done(chunk.id, task):
                continue
            try:
                if task == "roleplay":
                    records, outcome = await self.roleplay(chunk)
                    path = self.work.roleplay
                else:
                    records, outcome = await self.interview(chunk)
                    path = self.work.interviews
            except (RetriesExhausted, MalformedResponse):
                self.report.requests_failed += 1
                complete = False
                continue
            async with self.lock:
                self.work.append(path, records)
                self.work.mark(chunk.id, task, outcome)
        return complete

    async def _ask(self, messages, *, max_tokens: int, attempt: int) -> str:
        temperature = min(1.2, self.options.temperature + 0.15 * attempt)
        return await self.client.complete(messages, max_tokens=max_tokens, temperature=temperature)

    async def _reject(self, chunk: Chunk, task: str, reason: str, output: str) -> None:
        self.report.malformed[reason] += 1
        async with self.lock:
            self.work.append(self.work.rejects, [{"chunk": chunk.id, "task": task, "reason": reason, "output": output}])

    def _speakers(self, chunk: Chunk) -> list[str]:
        names = set(self.options.names) | self.book_names.get(chunk.source, set())
        return sorted((n for n in names if n in chunk.text), key=chunk.text.index)

    # -- role-play ---------------------------------------------------------------------------
    async def roleplay(self, chunk: Chunk) -> tuple[list[dict[str, Any]], str]:
        speakers = self._speakers(chunk)
        focus = [n for n in self.options.names if n in chunk.text]
        messages = self.templates.roleplay.render(
            passage=chunk.text,
            characters="、".join(speakers) or "the people who speak in it",
            focus=(
                f"Keep every line of {focus[0]}" + (f" (also called {'/'.join(focus[1:])})" if focus[1:] else "") + "."
                if focus
                else "Keep every spoken line."
            ),
            language=self.options.language or language_of(chunk.text),
        )
        for attempt in range(self.options.attempts):
            output = await self._ask(messages, max_tokens=self.options.max_tokens, attempt=attempt)
            try:
                script = parse_script(
                    output,
                    passage=chunk.text,
                    known=list(self.options.names),
                    focus=list(self.options.names) if focus else None,
                    min_lines=self.options.min_lines,
                )
                script = self._clean_script(script, focus)
            except Malformed as error:
                await self._reject(chunk, "roleplay", error.reason, output)
                if attempt + 1 < self.options.attempts:
                    self.report.retried_malformed += 1
                continue
            text = script.render()
            if self.dedupe.check(text):
                self.report.duplicates += 1
                return [], "duplicate"
            self.report.roleplay_kept += 1
            record = {
                "id": f"{chunk.id}#roleplay",
                "kind": "roleplay",
                "chunk": chunk.id,
                "source": chunk.source,
                "chapter": chunk.chapter,
                "characters": list(dict.fromkeys(t.speaker for t in script.lines)),
                "script": [t.to_json() for t in script.turns],
                "text": text,
            }
            return [record], "kept"
        self.report.roleplay_dropped += 1
        return [], "dropped"

    def _clean(self, text: str, speaker: str | None) -> str | None:
        message = clean_message(Message(speaker=speaker or "", text=text), self.clean_config, self.report.cleaning)
        return message.text if message is not None and message.kind == "text" else None

    def _clean_script(self, script: Script, focus: list[str]) -> Script:
        turns = []
        for turn in script.turns:
            text = self._clean(turn.text, turn.speaker)
            if text is None:
                continue
            action = self._clean(turn.action, None) if turn.action else None
            mood = self._clean(turn.mood, None) if turn.mood else None
            turns.append(Turn(text=text, speaker=turn.speaker, action=action, mood=mood))
        cleaned = Script(turns)
        if len(cleaned.lines) < self.options.min_lines:
            raise Malformed("too few lines after cleaning")
        if focus and not any(t.speaker in self.options.names for t in cleaned.lines):
            raise Malformed("no line by the character after cleaning")
        return cleaned

    # -- interviews --------------------------------------------------------------------------
    async def interview(self, chunk: Chunk) -> tuple[list[dict[str, Any]], str]:
        character = self.options.names[0]
        language = self.options.language or language_of(chunk.text)
        ask = self.templates.interview_questions.render(
            passage=chunk.text, character=character, count=str(self.options.questions), language=language
        )
        questions: list[str] = []
        for attempt in range(self.options.attempts):
            output = await self._ask(ask, max_tokens=self.options.answer_tokens * 2, attempt=attempt)
            try:
                questions = parse_questions(output, limit=self.options.questions)
                self.report.question_sets += 1
                break
            except Malformed as error:
                await self._reject(chunk, "interview_questions", error.reason, output)
                if attempt + 1 < self.options.attempts:
                    self.report.retried_malformed += 1
        if not questions:
            self.report.answers_dropped += self.options.questions
            return [], "dropped"
        records = []
        for k, question in enumerate(questions):
            self.report.questions_asked += 1
            turn = await self._answer(chunk, character, question, language)
            if turn is None:
                self.report.answers_dropped += 1
                continue
            text = f"{question}\n{turn.render()}"
            if self.dedupe.check(text):
                self.report.duplicates += 1
                continue
            self.report.answers_kept += 1
            records.append(
                {
                    "id": f"{chunk.id}#interview{k}",
                    "kind": "interview",
                    "chunk": chunk.id,
                    "source": chunk.source,
                    "chapter": chunk.chapter,
                    "character": character,
                    "question": question,
                    "answer": turn.text,
                    "action": turn.action,
                    "mood": turn.mood,
                    "text": text,
                }
            )
        return records, "kept" if records else "dropped"

    async def _answer(self, chunk: Chunk, character: str, question: str, language: str) -> Turn | None:
        messages = self.templates.interview_answer.render(
            passage=chunk.text, character=character, question=question, language=language
        )
        for attempt in range(self.options.attempts):
            output = await self._ask(messages, max_tokens=self.options.answer_tokens, attempt=attempt)
            try:
                turn = parse_answer(output, character=character)
                if problem := answer_problem(question, turn.text, self.clean_config):
                    raise Malformed(problem)
                text = self._clean(turn.text, character)
                if text is None:
                    raise Malformed("dropped by cleaning")
                return Turn(text=text, speaker=character, action=turn.action, mood=turn.mood)
            except Malformed as error:
                await self._reject(chunk, "interview_answer", error.reason, output)
                if attempt + 1 < self.options.attempts:
                    self.report.retried_malformed += 1
        return None


# -- export --------------------------------------------------------------------------------------
def sharegpt_records(records: list[dict[str, Any]], names: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Role-play scripts and interviews as ShareGPT conversations with `names` as the assistant."""
    wanted = set(names)
    for record in records:
        if record.get("kind") == "interview":
            if record.get("character") not in wanted:
                continue
            turn = Turn(text=record["answer"], speaker=record["character"], action=record.get("action"),
                        mood=record.get("mood"))  # fmt: skip
            turns = [("human", record["question"]), ("gpt", training_text(turn))]
        else:
            turns = []
            for item in record.get("script", []):
                if "narration" in item:
                    role, text = "human", f"（{item['narration']}）"
                elif item.get("speaker") in wanted:
                    turn = Turn(text=item["line"], speaker=item["speaker"], action=item.get("action"),
                                mood=item.get("mood"))  # fmt: skip
                    role, text = "gpt", training_text(turn)
                else:
                    role, text = "human", f"{item['speaker']}：{item['line']}"
                if turns and turns[-1][0] == role:
                    turns[-1] = (role, f"{turns[-1][1]}\n{text}")
                else:
                    turns.append((role, text))
            while turns and turns[-1][0] == "human":
                turns.pop()
            if not any(role == "gpt" for role, _ in turns):
                continue
            if turns[0][0] == "gpt":
                turns.insert(0, ("human", NEW_CHAT_MARKER))
        yield {
            "conversations": [{"from": role, "value": text} for role, text in turns],
            "id": record["id"],
            "source": f"distill:{record['source']}",
        }


def write_outputs(work: Workdir, report: Report, names: tuple[str, ...]) -> Path | None:
    target = None
    if names:
        records = work.read(work.roleplay) + work.read(work.interviews)
        conversations = list(sharegpt_records(records, names))
        target = work.folder / "sharegpt.jsonl"
        atomic.write_text(target, "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations))
        report.sharegpt = len(conversations)
    atomic.write_text(work.folder / "report.json", json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n")
    atomic.write_text(work.folder / "report.md", report.to_markdown())
    return target


def distill(
    paths: list[Path],
    out: Path,
    client: ChatClient,
    templates: Templates,
    options: DistillOptions,
    *,
    concurrency: int = 2,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[Report, Path | None]:
    """Run (or resume) a distillation into `out`; writes report and ShareGPT even when stopped early."""
    work = Workdir(out)
    distiller = Distiller(client, templates, work, options, on_progress=on_progress)
    try:
        asyncio.run(distiller.run(paths, concurrency=concurrency))
    except (CompanionError, KeyboardInterrupt) as error:
        distiller.report.stopped = distiller.report.stopped or f"{type(error).__name__}: {error}"
        raise
    finally:
        target = write_outputs(work, distiller.report, options.names)
    return distiller.report, target
