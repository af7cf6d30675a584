"""`companion character ...`: scaffold, inspect, import and export character folders."""

# No `from __future__ import annotations`: see `with_opened`.
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
from companion.cli.common import console, print_fields, with_settings
from companion.config import Settings

app = typer.Typer(help="Create, inspect, import and export character folders.", no_args_is_help=True)

DirOption = Annotated[
    Path | None, typer.Option("--dir", help="Folder that holds character folders (default: <data-dir>/characters).")
]


@app.command("new")
@with_settings
def new(
    settings: Settings,
    character_id: Annotated[str, typer.Argument(help="Folder name, e.g. 'mochi'.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    directory: DirOption = None,
) -> None:
    """Scaffold a character folder with a card.yaml to fill in."""
    character = new_character(directory or settings.user_characters_dir, character_id, name)
    console.print(f"created {character.folder}")


@app.command("info")
@with_settings
def info(
    settings: Settings,
    character_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Validate a character folder and summarise it."""
    print_fields(summarize(find_character(character_id, settings.character_search_path)), as_json=as_json)


@app.command("list")
@with_settings
def list_(settings: Settings) -> None:
    """List the characters that can be chatted with."""
    for folder in list_characters(settings.character_search_path):
        console.print(f"{folder.name}\t{folder}", highlight=False)


@app.command("import")
@with_settings
def import_(
    settings: Settings,
    file: Annotated[Path, typer.Argument(help="A card: .json, .png or .charx (V1, V2 or V3).")],
    character_id: Annotated[
        str | None, typer.Option("--id", help="Folder name (default: from the card's name).")
    ] = None,
    directory: DirOption = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an existing folder of that id.")] = False,
) -> None:
    """Make a character folder from a SillyTavern card. Prints the new id."""
    character = import_card(file, directory or settings.user_characters_dir, character_id, replace=replace)
    print(character.id)


@app.command("export")
@with_settings
def export(
    settings: Settings,
    character_id: str,
    out: Annotated[Path, typer.Option("--out", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="png, json or charx.")] = "png",
    version: Annotated[str, typer.Option(help="Card version for JSON: v1, v2 or v3.")] = "v3",
) -> None:
    """Write the character as a SillyTavern card (PNG with both chunks, JSON or CHARX)."""
    if fmt not in ("png", "json", "charx") or version not in ("v1", "v2", "v3"):
        raise typer.BadParameter("--format is png, json or charx; --version is v1, v2 or v3")
    character = find_character(character_id, settings.character_search_path)
    console.print(f"wrote {export_card(character, fmt, out, version)}")  # type: ignore[arg-type]
