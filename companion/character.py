"""A character is a folder: card.yaml, corpus/, adapter/, voice/, avatar.png."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from companion import atomic
from companion.card.files import CardFile, CardFileFormat, read_card_file, render_card_file
from companion.card.formats import describe_validation_error
from companion.card.model import CardData, CompanionSettings
from companion.errors import CharacterNotFoundError, CompanionError, InputFileError

CARD_FILE = "card.yaml"
AVATAR_FILE = "avatar.png"
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Character:
    folder: Path
    card: CardData

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def settings(self) -> CompanionSettings:
        return self.card.companion

    @property
    def corpus_dir(self) -> Path:
        return self.folder / "corpus"

    @property
    def adapter_dir(self) -> Path:
        return self.folder / self.settings.adapter

    @property
    def voice_dir(self) -> Path:
        return self.folder / "voice"

    @property
    def avatar_path(self) -> Path | None:
        path = self.folder / AVATAR_FILE
        return path if path.is_file() else None

    def has_adapter(self) -> bool:
        return (self.adapter_dir / "adapter_config.json").is_file()

    @classmethod
    def load(cls, folder: Path) -> Character:
        return cls(folder=folder, card=load_card_yaml(folder / CARD_FILE))

    def save_card(self, card: CardData) -> Character:
        atomic.write_text(self.folder / CARD_FILE, dump_card_yaml(card))
        return Character(folder=self.folder, card=card)


def validate_id(character_id: str) -> str:
    if not _ID_PATTERN.match(character_id):
        raise CompanionError(
            f"invalid character id {character_id!r}: use letters, digits, '-', '_' or '.', up to 64 characters"
        )
    return character_id


def load_card_yaml(path: Path) -> CardData:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputFileError(path, "no card.yaml: not a character folder") from None
    except UnicodeDecodeError as error:
        raise InputFileError(path, f"not UTF-8 text (byte {error.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise InputFileError(path, f"invalid YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise InputFileError(path, "card.yaml must be a mapping of card fields (name, description, ...)")
    try:
        card = CardData.model_validate(data)
        _ = card.companion  # validates extensions.companion too
    except ValidationError as error:
        prefix = "extensions.companion" if error.title == "CompanionSettings" else ""
        raise InputFileError(path, describe_validation_error(error, prefix=prefix)) from None
    return card


class _BlockDumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def dump_card_yaml(card: CardData) -> str:
    return yaml.dump(card.to_plain(), Dumper=_BlockDumper, allow_unicode=True, sort_keys=False, width=100)


def find_character(character_id: str, search_dirs: Iterable[Path]) -> Character:
    dirs = list(search_dirs)
    for root in dirs:
        folder = root / character_id
        if (folder / CARD_FILE).is_file():
            return Character.load(folder)
    looked = ", ".join(str(d) for d in dirs)
    raise CharacterNotFoundError(f"no character {character_id!r} (looked in {looked})")


def list_characters(search_dirs: Iterable[Path]) -> list[Path]:
    seen: dict[str, Path] = {}
    for root in search_dirs:
        if root.is_dir():
            for folder in sorted(root.iterdir()):
                if (folder / CARD_FILE).is_file():
                    seen.setdefault(folder.name, folder)
    return list(seen.values())


def new_character(root: Path, character_id: str, name: str | None = None) -> Character:
    validate_id(character_id)
    name = name or character_id.capitalize()
    card = CardData(
        name=name,
        description=f"{{{{char}}}} is ... (describe {name}'s appearance and background here).",
        personality="",
        scenario="",
        first_mes=f"Hi, I'm {name}.",
        mes_example="<START>\n{{user}}: Hello!\n{{char}}: Hi there!",
        system_prompt="{{original}}",
        extensions={"companion": CompanionSettings().model_dump(exclude_none=True)},
    )
    folder = root / character_id
    with atomic.staged_dir(folder) as staging:
        (staging / "corpus").mkdir()
        (staging / "voice").mkdir()
        (staging / CARD_FILE).write_text(dump_card_yaml(card), encoding="utf-8")
    return Character.load(folder)


def import_card(path: Path, root: Path, character_id: str | None = None, *, replace: bool = False) -> Character:
    """Make a character folder from a card file. Nothing existing is touched unless the whole
    new folder was written; without `replace`, an existing folder is an error."""
    card_file = read_card_file(path)
    character_id = validate_id(character_id or slugify(card_file.card.name) or slugify(path.stem) or "character")
    folder = root / character_id
    if folder.exists() and not replace:
        raise CompanionError(f"{folder} already exists: choose another --id or pass --replace")
    with atomic.staged_dir(folder, replace=replace) as staging:
        (staging / CARD_FILE).write_text(dump_card_yaml(card_file.card), encoding="utf-8")
        if card_file.avatar is not None:
            (staging / AVATAR_FILE).write_bytes(card_file.avatar)
        for relative, content in card_file.assets.items():
            target = (staging / relative).resolve()
            if not target.is_relative_to(staging.resolve()):
                raise InputFileError(path, f"asset path escapes the character folder: {relative!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    return Character.load(folder)


def export_card(character: Character, fmt: CardFileFormat, out: Path, version: str = "v3") -> Path:
    assets = {}
    assets_dir = character.folder / "assets"
    if assets_dir.is_dir():
        for file in sorted(assets_dir.rglob("*")):
            if file.is_file():
                assets[file.relative_to(character.folder).as_posix()] = file.read_bytes()
    avatar = character.avatar_path.read_bytes() if character.avatar_path else None
    data = render_card_file(CardFile(card=character.card, avatar=avatar, assets=assets), fmt, version)  # type: ignore[arg-type]
    atomic.write_bytes(out, data)
    return out


def slugify(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.").lower()
    return slug[:64]


def summarize(character: Character) -> dict[str, Any]:
    card = character.card
    book = card.character_book
    corpus_files = [p for p in character.corpus_dir.rglob("*") if p.is_file()] if character.corpus_dir.is_dir() else []
    return {
        "id": character.id,
        "name": card.name,
        "nickname": card.nickname,
        "folder": str(character.folder),
        "greetings": 1 + len(card.alternate_greetings) if card.first_mes else len(card.alternate_greetings),
        "example_blocks": card.mes_example.upper().count("<START>"),
        "lorebook_entries": len(book.entries) if book else 0,
        "corpus_files": len(corpus_files),
        "adapter": str(character.adapter_dir) if character.has_adapter() else None,
        "avatar": bool(character.avatar_path),
        "language": character.settings.language,
        "tags": card.tags,
    }
