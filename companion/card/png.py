"""Cards embedded in PNG text chunks: `ccv3` (V3) and `chara` (V2, or V3 in newer tools).

Reading and writing chunks is done directly on the PNG byte stream, so the image itself is
passed through untouched.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("ccv3", "chara")


class PngCardError(ValueError):
    pass


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(PNG_SIGNATURE):
        raise PngCardError("not a PNG file (bad signature)")
    chunks = []
    pos = len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise PngCardError(f"truncated PNG chunk header at byte {pos}")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise PngCardError(f"truncated PNG chunk {kind!r} at byte {pos}")
        chunks.append((kind, body))
        pos += 12 + length
        if kind == b"IEND":
            break
    return chunks


def _text_of(kind: bytes, body: bytes) -> tuple[str, str] | None:
    if kind == b"tEXt":
        keyword, _, text = body.partition(b"\0")
        return keyword.decode("latin-1"), text.decode("latin-1")
    if kind == b"zTXt":
        keyword, _, rest = body.partition(b"\0")
        return keyword.decode("latin-1"), zlib.decompress(rest[1:]).decode("latin-1")
    if kind == b"iTXt":
        keyword, _, rest = body.partition(b"\0")
        compressed, _method = rest[0], rest[1]
        _lang, _, rest = rest[2:].partition(b"\0")
        _translated, _, text = rest.partition(b"\0")
        if compressed:
            text = zlib.decompress(text)
        return keyword.decode("latin-1"), text.decode("utf-8")
    return None


def read_card_texts(data: bytes) -> dict[str, str]:
    """The card chunks found in a PNG, by keyword (lower-cased)."""
    found: dict[str, str] = {}
    for kind, body in _chunks(data):
        text = _text_of(kind, body)
        if text and text[0].lower() in CARD_KEYWORDS:
            found.setdefault(text[0].lower(), text[1])
    return found


def decode_card_text(text: str) -> dict[str, Any]:
    try:
        raw = base64.b64decode(text.strip(), validate=False)
        return json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PngCardError(f"card chunk is not base64-encoded JSON ({error})") from None


def read_png_card(data: bytes) -> dict[str, Any]:
    """The best card in the PNG: `ccv3` in preference to `chara`."""
    texts = read_card_texts(data)
    for keyword in CARD_KEYWORDS:
        if keyword in texts:
            return decode_card_text(texts[keyword])
    raise PngCardError("PNG has no character card (no 'ccv3' or 'chara' text chunk)")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _encode(card: dict[str, Any]) -> bytes:
    return base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))


def write_png_card(image: bytes, *, chara: dict[str, Any], ccv3: dict[str, Any]) -> bytes:
    """The image with its old card chunks removed and `chara` and `ccv3` written before IEND."""
    out = [PNG_SIGNATURE]
    for kind, body in _chunks(image):
        text = _text_of(kind, body)
        if text and text[0].lower() in CARD_KEYWORDS:
            continue
        if kind == b"IEND":
            out.append(_chunk(b"tEXt", b"chara\0" + _encode(chara)))
            out.append(_chunk(b"tEXt", b"ccv3\0" + _encode(ccv3)))
        out.append(_chunk(kind, body))
    return b"".join(out)


def placeholder_png(size: int = 64, rgb: tuple[int, int, int] = (0xF4, 0xC2, 0xC2)) -> bytes:
    """A plain square image, for cards exported from a folder without avatar.png."""
    row = b"\0" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(row * size)) + _chunk(b"IEND", b"")
