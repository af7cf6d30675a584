"""`companion create --name NAME`: a talking character from nothing but a name (and optionally a card
or a few documents), in one command.

    1 card       draft the card through the configured LLM (or import --card); documents go to corpus/lore/
    2 questions  a built-in bank about herself and her life, plus questions the LLM asks about the documents
    3 answers    the LLM answers each in her voice (persona + documents in the prompt); answers are
                 filtered (quality rules, cleaning, language, out-of-character talk) and deduplicated
    4 dataset    corpus/dialogues/created.jsonl -> dataset/ (the data pipeline)
    5 adapter    a short LoRA run (`--steps`)
    6 knowledge  the index over corpus/ (documents and her new lines)
    7 chat       (the CLI opens a chat unless --no-chat)

Progress is kept in `<data dir>/create/<id>/` (state.json, answers.jsonl): after an interruption or
an unreachable endpoint, the same command continues where it stopped. Malformed LLM output is
retried, then dropped and counted (a malformed card falls back to a plain card built from the name
and the documents, with a note). With the embedded 270M model as the LLM the drafted card and the
answers are weak; the pipeline is the same against a real endpoint (`--base-url`).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from companion import atomic
from companion.card.model import CardData, CompanionSettings
from companion.character import (
    Character,
    dump_card_yaml,
    import_card,
    slugify,
    validate_id,
)
from companion.errors import CompanionError, InputFileError
from companion.messages import ChatMessage
from companion.prompt import persona_prompt
from companion.scripts import HAN_CHAR
from training.cleaning import CleanConfig, Tally, answer_problem, clean_message
from training.conversation import Message
from training.dedupe import Deduplicator
from training.distill.client import ChatClient, MalformedResponse, RetriesExhausted
from training.distill.parse import Malformed, extract_json, parse_answer, parse_questions
from training.distill.templates import Template, parse_template
from training.textio import read_text

STATE_VERSION = 1
STEPS = ("card", "questions", "answers", "dataset", "adapter", "knowledge")
_OUT_OF_CHARACTER = re.compile(
    r"作为(?:一[个名])?(?:AI|人工智能|语言模型|助手)|我是(?:一[个名])?(?:AI|人工智能|语言模型)|语言模型|"
    r"\blanguage model\b|\bas an ai\b|\bi(?:'m| am) an ai\b|\bai assistant\b|<start_of_turn>|<end_of_turn>",
    re.I,
)

QUESTION_BANK = {
    "zh": [
        "请介绍一下你自己吧。", "你是从哪里来的？", "你平常一天是怎么过的？", "你最擅长做什么？", "你最怕什么？",
        "你最珍惜的东西是什么？", "你有什么小习惯吗？", "你生气的时候会怎么样？", "什么事情会让你开心起来？",
        "你有好朋友吗？说说他们吧。", "你小时候是什么样的？", "你最难忘的一件事是什么？", "你讨厌什么样的人？",
        "下雨天你喜欢做什么？", "你的口头禅是什么？", "你相信命运吗？", "如果可以许一个愿望，你会许什么？",
        "你觉得自己是个什么样的人？", "别人常常误会你什么？", "你最近在烦恼什么？", "你喜欢什么季节？为什么？",
        "有人欺负你的朋友，你会怎么做？", "你最想去什么地方？", "你会怎么安慰一个难过的人？", "你有什么秘密吗？",
    ],
    "en": [
        "Could you introduce yourself?", "Where do you come from?", "What does an ordinary day look like for you?",
        "What are you best at?", "What are you afraid of?", "What do you treasure most?",
        "Do you have any little habits?", "What are you like when you're angry?", "What always cheers you up?",
        "Do you have close friends? Tell me about them.", "What were you like as a child?",
        "What is the most unforgettable thing that happened to you?", "What kind of people do you dislike?",
        "What do you like to do on rainy days?", "Is there something you always say?", "Do you believe in fate?",
        "If you could make one wish, what would it be?", "How would you describe yourself?",
        "What do people often get wrong about you?", "What has been on your mind lately?",
        "Which season do you like best, and why?", "What would you do if someone bullied your friend?",
        "Where would you most like to go?", "How would you comfort someone who is sad?", "Do you have a secret?",
    ],
}  # fmt: skip

CARD = """### system
You write character cards for role-play chatbots. You answer with JSON only.

### user
Write a character card for {{name}}. {{known}}
Write in {{language}}. Use {{char}} for the character and {{user}} for the person talking to her.
Answer with one JSON object and nothing else:
{"description": "who {{char}} is: appearance, background, situation (3-6 sentences)",
 "personality": "a few traits, comma separated",
 "scenario": "where and how {{char}} meets {{user}} (1-2 sentences)",
 "first_mes": "{{char}}'s first message to {{user}}, in character",
 "example_dialogue": [{"user": "...", "char": "..."}, {"user": "...", "char": "..."}],
 "tags": ["...", "..."]}

{{documents}}
"""

QUESTIONS = """### system
You write interview questions for a character. You answer with JSON only.

### user
Write {{count}} different questions a fan would ask {{name}} about {{name}}'s own life, people and feelings, \
based on these notes. Address {{name}} as "you". Write in {{language}}. Answer with one JSON object and nothing else:
{"questions": ["...", "..."]}

Notes about {{name}}:
{{documents}}
"""

ANSWER = """### system
{{persona}}

{{documents}}
Answer as {{name}}: in first person, in {{name}}'s own voice, in {{language}}, in one to four sentences. \
You may begin with what you do as \\me <action> and how you feel as \\emoji <mood>, each on its own line. \
Never say you are an AI.

### user
{{question}}
"""
TEMPLATES = {"create_card": CARD, "create_questions": QUESTIONS, "create_answer": ANSWER}


def load_create_templates(folder: Path | None) -> dict[str, Template]:
    found = {}
    for name, default in TEMPLATES.items():
        path = folder / f"{name}.md" if folder else None
        text = path.read_text(encoding="utf-8") if path is not None and path.is_file() else default
        found[name] = parse_template(name, text, path)
    return found


def language_of(text: str) -> str:
    return "zh" if len(HAN_CHAR.findall(text)) >= max(1, len(text) // 5) else "en"


LANGUAGE_NAMES = {"zh": "Chinese (中文)", "en": "English"}


@dataclass
class CreateOptions:
    name: str
    character_id: str | None = None
    card_file: Path | None = None
    documents: list[Path] = field(default_factory=list)
    language: str | None = None
    bank_questions: int = 20
    doc_questions: int = 10
    min_answers: int = 8
    attempts: int = 2
    answer_tokens: int = 200
    card_tokens: int = 700
    temperature: float = 0.8
    steps: int = 30
    base_model: str | None = None
    build_knowledge: bool = True


@dataclass
class CreateReport:
    character: str = ""
    folder: str = ""
    client: str = ""
    card_source: str = ""
    questions: dict[str, int] = field(default_factory=dict)
    answers_kept: int = 0
    answers_dropped: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    dataset: dict[str, int] = field(default_factory=dict)
    adapter: dict[str, Any] = field(default_factory=dict)
    knowledge: dict[str, Any] = field(default_factory=dict)
    steps_done_before: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["answers_dropped"] = dict(self.answers_dropped.most_common())
        data["malformed"] = dict(self.malformed.most_common())
        return data


class Creator:
    def __init__(
        self,
        options: CreateOptions,
        settings: Any,
        client: ChatClient,
        *,
        templates: dict[str, Template] | None = None,
        on_status: Callable[[str], None] = lambda text: None,
        progress: Any = None,
    ) -> None:
        self.options = options
        self.settings = settings
        self.client = client
        self.templates = templates or load_create_templates(None)
        self.status = on_status
        self.progress = progress
        self.id = validate_id(options.character_id or default_id(options.name))
        self.folder = settings.user_characters_dir / self.id
        self.work = settings.data_dir / "create" / self.id
        self.state_path = self.work / "state.json"
        self.answers_path = self.work / "answers.jsonl"
        self.report = CreateReport(character=self.id, folder=str(self.folder), client=client.describe())
        self.tally = Tally()

    # -- state ------------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        if self.state_path.is_file():
            try:
                state = json.loads(self.state_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                raise CompanionError(f"{self.state_path} is corrupt: pass --restart") from None
            if state.get("name") != self.options.name:
                raise CompanionError(
                    f"{self.state_path} belongs to {state.get('name')!r}, not {self.options.name!r}: choose --id"
                )
            return state
        if self.folder.exists():
            raise CompanionError(f"{self.folder} already exists (not made by create): choose another --id")
        return {"version": STATE_VERSION, "name": self.options.name, "id": self.id, "done": []}

    def _save_state(self) -> None:
        atomic.write_text(self.state_path, json.dumps(self.state, ensure_ascii=False, indent=1) + "\n")

    def _done(self, step: str) -> None:
        self.state["done"].append(step)
        self._save_state()

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> CreateReport:
        self.state = self._load_state()
        self.report.steps_done_before = list(self.state["done"])
        self.work.mkdir(parents=True, exist_ok=True)
        self._save_state()
        documents = self._documents()
        self.language = self.options.language or self.state.get("language") or language_of(
            self.options.name + " " + documents[:2000]
        )  # fmt: skip
        self.state["language"] = self.language
        needs_llm = any(s not in self.state["done"] for s in ("card", "questions", "answers"))
        if needs_llm:
            asyncio.run(self._with_llm(documents))
        if "dataset" not in self.state["done"]:
            self._dataset()
            self._done("dataset")
        if "adapter" not in self.state["done"]:
            self._adapter()
            self._done("adapter")
        if "knowledge" not in self.state["done"]:
            if self.options.build_knowledge:
                self._knowledge()
            self._done("knowledge")
        return self.report

    async def _with_llm(self, documents: str) -> None:
        try:
            needs_card = "card" not in self.state["done"] and self.options.card_file is None
            if needs_card or any(s not in self.state["done"] for s in ("questions", "answers")):
                self.status(f"asking {self.client.describe()}")
                await self.client.probe()  # fail fast, with the state kept
            if "card" not in self.state["done"]:
                await self._card(documents)
                self._done("card")
            character = Character.load(self.folder)
            if "questions" not in self.state["done"]:
                await self._questions(documents)
                self._done("questions")
            if "answers" not in self.state["done"]:
                await self._answers(character, documents)
                self._done("answers")
        finally:
            await self.client.aclose()

    def _documents(self) -> str:
        parts = []
        for path in self.options.documents:
            if not path.is_file():
                raise InputFileError(path, "document not found")
            parts.append(read_text(path).text.strip())
        return "\n\n".join(p for p in parts if p)

    async def _ask(self, messages: list[ChatMessage], max_tokens: int) -> str:
        return await self.client.complete(messages, max_tokens=max_tokens, temperature=self.options.temperature)

    # -- 1 card -----------------------------------------------------------------------------
    async def _card(self, documents: str) -> None:
        options = self.options
        root = self.folder.parent
        if options.card_file is not None:
            character = import_card(options.card_file, root, self.id)
            self.report.card_source = f"imported from {options.card_file}"
        else:
            card, source = await self._draft_card(documents)
            extensions = {"companion": CompanionSettings(language=self.language).model_dump(exclude_none=True)}
            card = card.model_copy(update={"extensions": extensions})
            with atomic.staged_dir(self.folder) as staging:
                (staging / "corpus").mkdir()
                (staging / "voice").mkdir()
                (staging / "card.yaml").write_text(dump_card_yaml(card), encoding="utf-8")
            character = Character.load(self.folder)
            self.report.card_source = source
        lore = character.corpus_dir / "lore"
        for path in options.documents:
            lore.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, lore / path.name)
        self.state["card_source"] = self.report.card_source

    async def _draft_card(self, documents: str) -> tuple[CardData, str]:
        name = self.options.name
        known = "Here is what is known about the character:" if documents else "Invent a fitting, consistent character."
        messages = self.templates["create_card"].render(
            name=name,
            known=known,
            language=LANGUAGE_NAMES[self.language],
            documents=documents[:3000],
            char="{{char}}",
            user="{{user}}",
        )
        problems = []
        for _ in range(self.options.attempts):
            output = await self._ask(messages, self.options.card_tokens)
            try:
                return card_from_json(name, extract_json(output)), "drafted by the LLM"
            except Malformed as error:
                self.report.malformed[f"card: {error.reason}"] += 1
                problems.append(error.reason)
        self.report.notes.append(
            f"the LLM's card was malformed every time ({', '.join(problems)}): a plain card was made from the "
            "name and the documents; edit card.yaml"
        )
        return fallback_card(name, documents, self.language), "plain card (LLM output malformed)"

    # -- 2 questions ------------------------------------------------------------------------
    async def _questions(self, documents: str) -> None:
        bank = QUESTION_BANK[self.language][: self.options.bank_questions]
        asked: list[str] = []
        if documents and self.options.doc_questions:
            messages = self.templates["create_questions"].render(
                name=self.options.name,
                count=str(self.options.doc_questions),
                language=LANGUAGE_NAMES[self.language],
                documents=documents[:3000],
            )
            for _ in range(self.options.attempts):
                output = await self._ask(messages, 60 * self.options.doc_questions)
                try:
                    asked = parse_questions(output, limit=self.options.doc_questions)
                    break
                except Malformed as error:
                    self.report.malformed[f"questions: {error.reason}"] += 1
        questions = list(dict.fromkeys(bank + asked))
        self.state["questions"] = questions
        self.report.questions = {"bank": len(bank), "from_documents": len(asked), "total": len(questions)}
        self.state["question_counts"] = self.report.questions

    # -- 3 answers --------------------------------------------------------------------------
    def _answered(self) -> list[dict[str, Any]]:
        if not self.answers_path.is_file():
            return []
        out = []
        for line in self.answers_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    async def _answers(self, character: Character, documents: str) -> None:
        name = character.card.name
        persona = persona_prompt(character.card, user_name=self.settings.user_name)
        notes = f"What {name} knows:\n{documents[:1500]}\n" if documents else ""
        config = CleanConfig(public_text=documents)
        dedupe = Deduplicator(0.8)
        done = {r["question"] for r in self._answered()}
        for record in self._answered():
            if record.get("answer"):
                dedupe.check(record["answer"])
        questions = [q for q in self.state.get("questions", []) if q not in done]
        self.report.questions = self.state.get("question_counts", {})
        total = len(self.state.get("questions", []))
        for index, question in enumerate(questions, start=len(done) + 1):
            self.status(f"answering {index}/{total}: {question}")
            messages = self.templates["create_answer"].render(
                persona=persona, documents=notes, name=name, language=LANGUAGE_NAMES[self.language], question=question
            )
            record: dict[str, Any] = {"question": question, "answer": None, "reasons": []}
            for _ in range(self.options.attempts):
                try:
                    output = await self._ask(messages, self.options.answer_tokens)
                except (RetriesExhausted, MalformedResponse) as error:
                    record["reasons"].append(f"request failed: {error}")
                    break
                try:
                    turn = parse_answer(output, character=name)
                    text = self._check_answer(question, turn.text, config)
                    if dedupe.check(text):
                        raise Malformed("duplicate answer")
                    record.update(answer=text, action=turn.action, mood=turn.mood)
                    break
                except Malformed as error:
                    record["reasons"].append(error.reason)
                    record["last_output"] = output[:300]
            if record["answer"] is None and any(r.startswith("request failed") for r in record["reasons"]):
                continue  # not recorded: asked again on the next run
            with self.answers_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        records = self._answered()
        kept = [r for r in records if r.get("answer")]
        for r in records:
            if not r.get("answer"):
                self.report.answers_dropped[r["reasons"][-1] if r["reasons"] else "no answer"] += 1
        self.report.answers_kept = len(kept)
        need = max(1, self.options.min_answers)
        if len(kept) < need:
            raise CompanionError(
                f"only {len(kept)} usable answers in {self.answers_path} (need {need}): the LLM "
                f"({self.client.describe()}) is too weak for this; point --base-url at a stronger model and run the "
                "same command again (--restart to start over), or lower --min-answers"
            )
        self._write_dialogues(character, kept)

    def _check_answer(self, question: str, text: str, config: CleanConfig) -> str:
        if _OUT_OF_CHARACTER.search(text):
            raise Malformed("out of character")
        if language_of(text) != language_of(question):
            raise Malformed("wrong language")
        if problem := answer_problem(question, text, config):
            raise Malformed(problem)
        message = clean_message(Message(speaker=self.options.name, text=text), config, self.tally)
        if message is None or message.kind != "text":
            raise Malformed("dropped by cleaning")
        return message.text

    def _write_dialogues(self, character: Character, kept: list[dict[str, Any]]) -> None:
        from training.distill.parse import Turn
        from training.distill.pipeline import training_text

        lines = []
        for n, r in enumerate(kept):
            turn = Turn(text=r["answer"], speaker=character.card.name, action=r.get("action"), mood=r.get("mood"))
            record = {
                "conversations": [
                    {"from": "human", "value": r["question"]},
                    {"from": "gpt", "value": training_text(turn)},
                ],
                "id": f"created-{n}",
                "source": "companion create",
            }
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        atomic.write_text(character.corpus_dir / "dialogues" / "created.jsonl", "".join(lines))

    # -- 4 dataset, 5 adapter, 6 knowledge ---------------------------------------------------
    def _dataset(self) -> None:
        from training.cleaning import CleanConfig as Config
        from training.dataset import (
            Selection,
            build_dataset,
            character_system,
            dataset_name,
            public_text,
            write_dataset,
        )
        from training.importers import ReadOptions, read_paths

        character = Character.load(self.folder)
        files = sorted((character.corpus_dir / "dialogues").glob("*.jsonl"))
        sources = read_paths(files, ReadOptions(), skipped=[])
        dataset = build_dataset(
            sources,
            selection=Selection(),
            config=Config(public_text=public_text(character.folder, character.card), eval_ratio=0.1),
            system=character_system(character.card, self.settings.user_name),
            character=character.id,
        )
        if not dataset.train:
            raise CompanionError(f"no training samples survived cleaning in {character.corpus_dir / 'dialogues'}")
        target = write_dataset(character.folder, dataset, dataset_name(character.id))
        if not dataset.eval:  # too small to hold any out: let the trainer split by hash (it refuses an empty eval)
            for name in ("eval.jsonl", "eval.alpaca.jsonl"):
                (target / name).unlink(missing_ok=True)
        self.report.dataset = {"train": len(dataset.train), "eval": len(dataset.eval)}
        self.status(f"dataset: {len(dataset.train)} train, {len(dataset.eval)} eval samples")

    def _adapter(self) -> None:
        from training.lora.config import TrainConfig
        from training.lora.trainer import train

        character = Character.load(self.folder)
        config = TrainConfig(
            max_steps=self.options.steps, batch_size=4, grad_accum=1, eval_every=0, save_every=0,
            **({"model": self.options.base_model} if self.options.base_model else {}),
        )  # fmt: skip
        self.status(f"training her adapter: {self.options.steps} steps")
        result = train(character, self.settings, config, progress=self.progress)
        m = result.report.get("metrics", {})
        self.report.adapter = {
            "folder": str(result.adapter_dir),
            "steps": m.get("steps"),
            "final_train_loss": m.get("final_train_loss"),
            "eval_loss_base": m.get("eval_loss_base"),
            "eval_loss": m.get("eval_loss"),
            "seconds": m.get("train_seconds"),
        }

    def _knowledge(self) -> None:
        from knowledge.retrieval import ContextBuilder

        character = Character.load(self.folder)
        self.status("building her knowledge index")
        report = ContextBuilder.for_character(character, self.settings).prepare(build=True)
        if report is not None:
            self.report.knowledge = {"files": report.files, "chunks": report.chunks_added, "totals": report.totals}


def default_id(name: str) -> str:
    slug = slugify(name)
    if slug and re.search(r"[a-z0-9]", slug):
        return slug
    try:
        from pypinyin import lazy_pinyin

        slug = slugify("-".join(lazy_pinyin(name)))
    except ImportError:
        slug = ""
    if slug:
        return slug
    import hashlib

    return "char-" + hashlib.blake2b(name.encode(), digest_size=3).hexdigest()


def _text(value: Any, what: str, *, required: bool = False, limit: int = 4000) -> str:
    if value is None or value == "":
        if required:
            raise Malformed("missing field", what)
        return ""
    if not isinstance(value, str):
        raise Malformed("wrong shape", f"{what} must be text")
    text = value.strip()
    if len(text) > limit:
        raise Malformed("too long", what)
    return text


def card_from_json(name: str, value: Any) -> CardData:
    """A card from the LLM's JSON, refused when fields are missing or the wrong shape."""
    if not isinstance(value, dict):
        raise Malformed("wrong shape", "expected a JSON object")
    description = _text(value.get("description"), "description", required=True)
    if len(description) < 20:
        raise Malformed("too short", "description")
    first = _text(value.get("first_mes"), "first_mes", required=True, limit=1000)
    if _OUT_OF_CHARACTER.search(description + first):
        raise Malformed("out of character")
    examples = value.get("example_dialogue") or []
    if not isinstance(examples, list):
        raise Malformed("wrong shape", "example_dialogue must be a list")
    blocks = []
    for item in examples[:4]:
        if isinstance(item, dict) and isinstance(item.get("user"), str) and isinstance(item.get("char"), str):
            blocks.append(f"<START>\n{{{{user}}}}: {item['user'].strip()}\n{{{{char}}}}: {item['char'].strip()}")
    tags = [t.strip() for t in value.get("tags") or [] if isinstance(t, str) and t.strip()][:8]
    return CardData(
        name=name,
        description=description,
        personality=_text(value.get("personality"), "personality", limit=500),
        scenario=_text(value.get("scenario"), "scenario", limit=1000),
        first_mes=first,
        mes_example="\n".join(blocks),
        system_prompt="{{original}}",
        tags=tags,
        creator="companion create",
    )


def fallback_card(name: str, documents: str, language: str) -> CardData:
    first_paragraph = next((p.strip() for p in documents.split("\n") if len(p.strip()) > 20), "")[:600]
    if language == "zh":
        description = f"{{{{char}}}}是{name}。" + (first_paragraph or "（在这里写下她的外貌、经历和处境。）")
        greeting = f"你好，我是{name}。"
    else:
        description = f"{{{{char}}}} is {name}. " + (
            first_paragraph or "(Describe her appearance, past and situation here.)"
        )
        greeting = f"Hi, I'm {name}."
    return CardData(
        name=name, description=description, first_mes=greeting, system_prompt="{{original}}", creator="companion create"
    )


def reset(settings: Any, character_id: str) -> None:
    """Forget a creation's progress and remove the folder it made (only one `create` made)."""
    work = settings.data_dir / "create" / character_id
    if (work / "state.json").is_file():
        folder = settings.user_characters_dir / character_id
        if folder.exists():
            shutil.rmtree(folder)
        shutil.rmtree(work)
