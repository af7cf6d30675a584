"""CHARX: a zip with `card.json` (V3) and the card's embedded assets."""

from __future__ import annotations

import io
import json
import posixpath
import zipfile
from typing import Any

EMBEDDED_PREFIX = "embeded://"  # sic: the spelling the CCv3 spec uses


class CharxError(ValueError):
    pass


def safe_member_path(name: str) -> str:
    """A zip member name as a relative POSIX path, refusing anything that escapes the folder."""
    normal = posixpath.normpath(name.replace("\\", "/"))
    if normal.startswith(("/", "../")) or normal == ".." or ":" in normal.split("/")[0]:
        raise CharxError(f"refusing archive path that escapes the target folder: {name!r}")
    return normal


def read_charx(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The card JSON and its embedded assets keyed by their path inside the archive."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise CharxError(f"not a CHARX/zip archive ({error})") from None
    with archive:
        names = {info.filename for info in archive.infolist() if not info.is_dir()}
        if "card.json" not in names:
            raise CharxError("archive has no card.json at its root")
        try:
            card = json.loads(archive.read("card.json").decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CharxError(f"card.json is not valid JSON ({error})") from None
        assets = {}
        for name in sorted(names - {"card.json"}):
            assets[safe_member_path(name)] = archive.read(name)
    return card, assets


def write_charx(card: dict[str, Any], assets: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", json.dumps(card, ensure_ascii=False, indent=2))
        for path, content in sorted(assets.items()):
            archive.writestr(safe_member_path(path), content)
    return buffer.getvalue()
