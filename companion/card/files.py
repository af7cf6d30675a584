"""Card files on disk (JSON, PNG, CHARX): read any of them, write any of them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from companion.card.charx import EMBEDDED_PREFIX, CharxError, read_charx, write_charx
from companion.card.formats import CardFormatError, CardVersion, card_from_json, card_to_json
from companion.card.model import CardData
from companion.card.png import PngCardError, placeholder_png, read_png_card, write_png_card
from companion.errors import InputFileError

CardFileFormat = Literal["json", "png", "charx"]
MAIN_ICON_PATH = "assets/icon/images/main.png"


@dataclass
class CardFile:
    """A card with the files that travel with it: the avatar image and embedded assets."""

    card: CardData
    avatar: bytes | None = None
    assets: dict[str, bytes] = field(default_factory=dict)


def detect_format(path: Path, data: bytes) -> CardFileFormat:
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"PK\x03\x04"):
        return "charx"
    if path.suffix.lower() in (".json", ".card") or data.lstrip()[:1] == b"{":
        return "json"
    raise InputFileError(path, "unknown card format: expected a JSON, PNG or CHARX card")


def read_card_file(path: Path) -> CardFile:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputFileError(path, f"cannot read ({error.strerror})") from None
    kind = detect_format(path, data)
    try:
        if kind == "png":
            return CardFile(card=card_from_json(read_png_card(data)), avatar=data)
        if kind == "charx":
            obj, assets = read_charx(data)
            card = card_from_json(obj)
            return CardFile(card=card, avatar=_main_icon(card, assets), assets=assets)
        try:
            obj = json.loads(data.decode("utf-8-sig"))
        except json.JSONDecodeError as error:
            raise InputFileError(
                path, f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
            ) from None
        except UnicodeDecodeError:
            raise InputFileError(path, "card JSON is not UTF-8 text") from None
        return CardFile(card=card_from_json(obj))
    except (CardFormatError, PngCardError, CharxError) as error:
        raise InputFileError(path, str(error)) from None


def _main_icon(card: CardData, assets: dict[str, bytes]) -> bytes | None:
    for asset in card.assets or []:
        if asset.type == "icon" and asset.name == "main" and asset.uri.startswith(EMBEDDED_PREFIX):
            return assets.get(asset.uri.removeprefix(EMBEDDED_PREFIX))
    return None


def render_card_file(card_file: CardFile, fmt: CardFileFormat, version: CardVersion = "v3") -> bytes:
    card = card_file.card
    if fmt == "json":
        return json.dumps(card_to_json(card, version), ensure_ascii=False, indent=2).encode("utf-8")
    if fmt == "png":
        image = card_file.avatar or placeholder_png()
        return write_png_card(image, chara=card_to_json(card, "v2"), ccv3=card_to_json(card, "v3"))
    assets = dict(card_file.assets)
    if card_file.avatar is not None and not _main_icon(card, assets):
        assets[MAIN_ICON_PATH] = card_file.avatar
        icon = {"type": "icon", "uri": EMBEDDED_PREFIX + MAIN_ICON_PATH, "name": "main", "ext": "png"}
        plain = card.to_plain()
        card = CardData.model_validate({**plain, "assets": [*plain.get("assets", []), icon]})
    return write_charx(card_to_json(card, "v3"), assets)
