"""`companion character ...`: scaffold, inspect, import and export character folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from companion.character import (
    export_card,
    find_character,
    import_card,
    list_characters,
    new_character,
    summarize,
)
from companion.cli.common import ConfigOption, DataDirOption, console, settings_from

app = typer.Typer(help="Create, inspect, import and export character folders.", no_args_is_help=True)

DirOption = Annotated[
    Path | None, typer.Option("--dir", help="Folder that holds character folders (default: <data-dir>/characters).")
]


@app.command("new")
def new(
    character_id: Annotated[str, typer.Argument(help="Folder name, e.g. 'mochi'.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    directory: DirOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Scaffold a character folder with a card.yaml to fill in."""
    settings = settings_from(config, data_dir)
    character = new_character(directory or settings.user_characters_dir, character_id, name)
    console.print(f"created {character.folder}")


@app.command("info")
def info(
    character_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Validate a character folder and summarise it."""
    settings = settings_from(config, data_dir)
    summary = summarize(find_character(character_id, settings.character_search_path))
    if as_json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return
    for key, value in summary.items():
        console.print(f"[bold]{key}[/]: {value}", highlight=False)


@app.command("list")
def list_(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """List the characters that can be chatted with."""
    settings = settings_from(config, data_dir)
    for folder in list_characters(settings.character_search_path):
        console.print(f"{folder.name}\t{folder}", highlight=False)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A card: .json, .png or .charx (V1, V2 or V3).")],
    character_id: Annotated[
        str | None, typer.Option("--id", help="Folder name (default: from the card's name).")
    ] = None,
    directory: DirOption = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an existing folder of that id.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Make a character folder from a SillyTavern card. Prints the new id."""
    settings = settings_from(config, data_dir)
    character = import_card(file, directory or settings.user_characters_dir, character_id, replace=replace)
    print(character.id)


@app.command("export")
def export(
    character_id: str,
    out: Annotated[Path, typer.Option("--out", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="png, json or charx.")] = "png",
    version: Annotated[str, typer.Option(help="Card version for JSON: v1, v2 or v3.")] = "v3",
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Write the character as a SillyTavern card (PNG with both chunks, JSON or CHARX)."""
    if fmt not in ("png", "json", "charx") or version not in ("v1", "v2", "v3"):
        raise typer.BadParameter("--format is png, json or charx; --version is v1, v2 or v3")
    settings = settings_from(config, data_dir)
    character = find_character(character_id, settings.character_search_path)
    console.print(f"wrote {export_card(character, fmt, out, version)}")  # type: ignore[arg-type]
