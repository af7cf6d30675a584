"""`companion create --name NAME`: from a name to a talking character in one command (see training/create.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from companion.cli.common import (
    ConfigOption,
    DataDirOption,
    EndpointKeyOption,
    EndpointModelOption,
    ReportJsonOption,
    console,
    err_console,
    settings_from,
)


def register(app: typer.Typer) -> None:
    app.command("create")(create)


def create(
    name: Annotated[str, typer.Option("--name", help="Her name: the only thing needed.")],
    character_id: Annotated[str | None, typer.Option("--id", help="Folder name (default: from the name).")] = None,
    card: Annotated[Path | None, typer.Option("--card", help="Start from this card (YAML/JSON/PNG/CHARX).")] = None,
    docs: Annotated[
        list[Path] | None, typer.Option("--doc", help="A document about her (repeat): lore, a wiki page, notes.")
    ] = None,
    language: Annotated[
        str | None, typer.Option("--language", help="zh or en (default: from name and documents).")
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="OpenAI-compatible endpoint that writes (default: the configured llm)."),
    ] = None,
    model: EndpointModelOption = None,
    api_key: EndpointKeyOption = None,
    templates: Annotated[
        Path | None,
        typer.Option("--templates", help="Folder with create_card.md / create_questions.md / create_answer.md."),
    ] = None,
    questions: Annotated[
        int, typer.Option("--questions", min=0, max=25, help="Questions from the built-in bank.")
    ] = 20,
    doc_questions: Annotated[int, typer.Option("--doc-questions", min=0, help="Questions about the documents.")] = 10,
    min_answers: Annotated[int, typer.Option("--min-answers", min=0, help="Fewer usable answers: stop.")] = 8,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=16, help="Longest answer in tokens (the card: 3x).")
    ] = 200,
    steps: Annotated[int, typer.Option("--steps", min=1, help="LoRA training steps.")] = 30,
    base_model: Annotated[str | None, typer.Option("--base-model", help="Model the adapter is trained on.")] = None,
    no_knowledge: Annotated[bool, typer.Option("--no-knowledge", help="Skip the knowledge index.")] = False,
    no_chat: Annotated[bool, typer.Option("--no-chat", help="Do not open a chat at the end (scripts).")] = False,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="At the end, answer this once and exit.")
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Forget earlier progress (and the folder it made).")
    ] = False,
    as_json: ReportJsonOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a character from a name: draft her card, write Q&A in her voice with the configured LLM,
    filter it, train her adapter, index her documents, and chat. Run it again to resume."""
    from companion.cli.train import RichProgress
    from training.create import CreateOptions, Creator, default_id, load_create_templates, reset
    from training.distill.client import client_from_settings

    if language not in (None, "zh", "en"):
        raise typer.BadParameter("--language is zh or en")
    settings = settings_from(config, data_dir)
    if restart:
        reset(settings, character_id or default_id(name))
    options = CreateOptions(
        name=name.strip(),
        character_id=character_id,
        card_file=card,
        documents=list(docs or []),
        language=language,
        bank_questions=questions,
        doc_questions=doc_questions,
        min_answers=min_answers,
        answer_tokens=max_tokens,
        card_tokens=3 * max_tokens,
        steps=steps,
        base_model=base_model,
        build_knowledge=not no_knowledge,
    )
    client = client_from_settings(settings, base_url=base_url, model=model, api_key=api_key)
    creator = Creator(
        options,
        settings,
        client,
        templates=load_create_templates(templates),
        on_status=lambda text: err_console.print(f"[dim]{text}[/]", highlight=False),
        progress=RichProgress(),
    )
    report = creator.run()
    if as_json:
        console.print_json(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        console.print(f"[bold green]{name}[/] is ready: {report.folder}", highlight=False)
        console.print(
            f"card: {report.card_source}; answers kept {report.answers_kept} (dropped: "
            f"{dict(report.answers_dropped) or 'none'}); dataset {report.dataset}; adapter {report.adapter}",
            highlight=False,
        )
        for note in report.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
    if message is not None or not no_chat:
        from companion.cli.chat import chat

        chat(character=creator.id, message=message, config=config, data_dir=data_dir)
