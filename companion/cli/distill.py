"""`companion data distill`: novels -> role-play scripts and interviews through an LLM (registered in data.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

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
from companion.errors import CompanionError


def distill(
    novels: Annotated[list[Path] | None, typer.Argument(help="Novel text files (.txt, any common encoding).")] = None,
    as_: Annotated[
        list[str] | None, typer.Option("--as", help="The character's name (repeat or comma-separate aliases).")
    ] = None,
    character_id: Annotated[
        str | None,
        typer.Option("--character", help="Also write her ShareGPT to <character>/corpus/dialogues/distilled.jsonl."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Working folder (<data dir>/distill/<id>).")] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint (default: the configured llm).")
    ] = None,
    model: EndpointModelOption = None,
    api_key: EndpointKeyOption = None,
    templates: Annotated[Path | None, typer.Option("--templates", help="Folder of edited prompt templates.")] = None,
    write_templates: Annotated[
        Path | None, typer.Option("--write-templates", help="Write the default templates here to edit, and stop.")
    ] = None,
    chunk_chars: Annotated[int, typer.Option("--chunk-chars", min=200, help="Characters per novel chunk.")] = 1200,
    max_chunks: Annotated[int | None, typer.Option("--max-chunks", min=1, help="Stop after this many chunks.")] = None,
    all_chunks: Annotated[
        bool, typer.Option("--all-chunks", help="Also chunks without dialogue or without her.")
    ] = False,
    questions: Annotated[int, typer.Option("--questions", min=0, help="Interview questions per chunk (0: none).")] = 3,
    no_roleplay: Annotated[bool, typer.Option("--no-roleplay", help="Interviews only.")] = False,
    attempts: Annotated[int, typer.Option("--attempts", min=1, help="Tries per item on malformed output.")] = 3,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=16, help="Longest role-play output (tokens).")] = 1024,
    rpm: Annotated[float, typer.Option("--rpm", min=0, help="Requests per minute at most (0: no limit).")] = 0.0,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Requests in flight at once.")] = 2,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries of a failed request (429, 5xx).")] = 3,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds per request.")] = 120.0,
    language: Annotated[str | None, typer.Option("--language", help="Output language (default: the novel's).")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Forget earlier progress in the working folder.")] = False,
    as_json: ReportJsonOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Distil novels into role-play scripts (【narration】, 角色：台词, \\me actions, \\emoji moods) and
    interviews with the character, through any OpenAI-compatible endpoint. Resumable: run it again."""
    from companion.character import find_character
    from training.dataset import public_text, split_names
    from training.distill.client import client_from_settings
    from training.distill.pipeline import DistillOptions
    from training.distill.pipeline import distill as run
    from training.distill.templates import load_templates
    from training.distill.templates import write_templates as dump_templates

    if write_templates is not None:
        for path in dump_templates(write_templates):
            err_console.print(f"wrote {path}", highlight=False)
        err_console.print(f"edit them, then pass --templates {write_templates}", highlight=False)
        return
    if not novels:
        raise typer.BadParameter("give one or more novel files (or --write-templates DIR)")
    for path in novels:
        if not path.is_file():
            raise CompanionError(f"{path}: no such file")
    settings = settings_from(config, data_dir)
    names = split_names(as_ or [])
    character = find_character(character_id, settings.character_search_path) if character_id else None
    if character is not None and not names:
        names = tuple(n for n in (character.card.name, character.card.nickname) if n)
    label = character.id if character else (names[0] if names else novels[0].stem)
    folder = out or settings.data_dir / "distill" / label
    if restart and folder.exists():
        shutil.rmtree(folder)
    options = DistillOptions(
        names=names,
        chunk_chars=chunk_chars,
        max_chunks=max_chunks,
        all_chunks=all_chunks,
        roleplay=not no_roleplay,
        questions=questions,
        attempts=attempts,
        max_tokens=max_tokens,
        answer_tokens=min(256, max_tokens),
        language=language,
        public_text=public_text(character.folder, character.card) if character else "",
    )
    client = client_from_settings(
        settings,
        base_url=base_url,
        model=model,
        api_key=api_key,
        **({"rpm": rpm, "concurrency": concurrency, "retries": retries, "timeout": timeout} if base_url else {}),
    )
    if not base_url and hasattr(client, "rpm"):  # the configured openai plugin: same HTTP knobs
        client.rpm, client.retries, client.timeout = rpm, retries, timeout
    err_console.print(f"distilling with {client.describe()} into {folder}", highlight=False)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} chunks"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("distilling", total=None)
        report, target = run(
            list(novels),
            folder,
            client,
            load_templates(templates),
            options,
            concurrency=concurrency,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if character is not None and target is not None:
        from companion import atomic

        dest = character.corpus_dir / "dialogues" / "distilled.jsonl"
        atomic.write_bytes(dest, target.read_bytes())
        err_console.print(f"{report.sharegpt} conversations -> {dest}", highlight=False)
    if as_json:
        console.print_json(json.dumps(report.to_json(), ensure_ascii=False))
        return
    err_console.print(report.to_markdown(), highlight=False)
    if target is not None:
        err_console.print(f"ShareGPT: {target}", highlight=False)
