"""Reading users' files: encoding fallback, JSON with positions, JSON Lines, CSV.

Encodings are tried in a fixed order (a byte-order mark first, then UTF-8, GB18030, UTF-16)
and a file none of them fits is an `InputFileError` naming each encoding tried and where it
failed. Errors in JSON name the file, the line, the column and the character offset, and say
"ends early" when the text stops mid-value (a truncated download or export).
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from companion.errors import InputFileError
from companion.utf16 import utf16_from_nuls

DEFAULT_ENCODINGS = ("utf-8", "gb18030", "utf-16")
SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str


def _looks_utf16(data: bytes) -> str | None:
    """UTF-16 without a BOM: many NUL bytes on one side of each pair (in the first 4 KiB)."""
    return utf16_from_nuls(data[:4096])


def _plausible(text: str, encoding: str = "utf-8") -> bool:
    """Reject decodings full of control characters (binary read as text), and Shift-JIS
    readings of Chinese text (which come out as runs of half-width katakana)."""
    sample = text[:20000]
    if not sample:
        return True
    bad = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f\x1b") + sample.count("\ufffd")
    if encoding in ("cp932", "shift_jis"):
        bad += sum(1 for ch in sample if "\uff61" <= ch <= "\uff9f")
    return bad <= max(2, len(sample) // 200)


def decode_bytes(data: bytes, path: str | Path, encodings: tuple[str, ...] = DEFAULT_ENCODINGS) -> Decoded:
    if data.startswith(codecs.BOM_UTF8):
        return Decoded(data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="strict"), "utf-8-sig")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return Decoded(data.decode("utf-16"), "utf-16")
        except UnicodeDecodeError as error:
            raise InputFileError(
                path, f"starts with a UTF-16 byte-order mark but byte {error.start} is invalid"
            ) from None
    failures = []
    utf16 = _looks_utf16(data)
    order = list(encodings)
    if utf16 and "utf-16" in order:
        order.remove("utf-16")
        order.insert(0, utf16)
    for encoding in order:
        if encoding == "utf-16" and not utf16:
            failures.append("UTF-16 (no byte-order mark and no NUL pattern)")
            continue
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as error:
            failures.append(f"{encoding.upper()} (invalid byte 0x{data[error.start]:02x} at offset {error.start})")
            continue
        if not _plausible(text, encoding):
            failures.append(f"{encoding.upper()} (decodes to control characters: binary?)")
            continue
        return Decoded(text, encoding)
    raise InputFileError(path, "cannot decode the text; tried UTF-8, UTF-8 with BOM, " + ", ".join(failures))


def read_text(path: Path, encodings: tuple[str, ...] = DEFAULT_ENCODINGS) -> Decoded:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputFileError(path, f"cannot read: {error.strerror or error}") from None
    decoded = decode_bytes(data, path, encodings)
    text = decoded.text
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return Decoded(text, decoded.encoding)


def sniff_text(path: Path, size: int = SNIFF_BYTES) -> str:
    """The first `size` bytes decoded leniently, for format detection; '' if unreadable.
    Cached per file version, since every importer looks at the same head."""
    try:
        stat = path.stat()
    except OSError:
        return ""
    return _sniff(str(path), stat.st_size, stat.st_mtime_ns, size)


@functools.lru_cache(maxsize=256)
def _sniff(name: str, _size: int, _mtime: int, size: int) -> str:
    try:
        with open(name, "rb") as handle:
            data = handle.read(size)
    except OSError:
        return ""
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _looks_utf16(data):
        encoding = "utf-16" if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else _looks_utf16(data)
        text = data[: len(data) // 2 * 2].decode(encoding or "utf-16", errors="ignore")
        return text.lstrip("\ufeff").replace("\r\n", "\n")
    for encoding in ("utf-8", "gb18030"):
        try:
            return data.decode(encoding).replace("\r\n", "\n")
        except UnicodeDecodeError as error:
            if error.start > len(data) - 4:  # cut mid-character at the sniff boundary
                return data[: error.start].decode(encoding, errors="ignore").replace("\r\n", "\n")
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


def json_error(path: Path, text: str, error: json.JSONDecodeError, line_offset: int = 0) -> InputFileError:
    rest = text[error.pos :].strip()
    where = f"line {error.lineno + line_offset}, column {error.colno} (character {error.pos})"
    if not rest or error.msg.startswith("Unterminated string"):
        return InputFileError(path, f"JSON ends early at {where}: the file looks truncated ({error.msg})")
    return InputFileError(path, f"invalid JSON at {where}: {error.msg}")


def load_json(path: Path) -> Any:
    decoded = read_text(path)
    try:
        return json.loads(decoded.text)
    except json.JSONDecodeError as error:
        raise json_error(path, decoded.text, error) from None


STREAM_ABOVE = 32 * 1024 * 1024  # bytes: bigger line-based files are decoded as they are read


def iter_lines(path: Path, keepends: bool = False) -> Iterator[str]:
    """The file's lines. Files over `STREAM_ABOVE` bytes are streamed: the encoding is chosen
    from their first megabyte, and a later undecodable byte is an error naming the line;
    smaller files are decoded whole, with the full encoding fallback. Line ends are \\n."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InputFileError(path, f"cannot read: {error.strerror or error}") from None
    if size <= STREAM_ABOVE:
        text = read_text(path).text
        lines = io.StringIO(text, newline="\n") if keepends else iter(text.split("\n"))
        yield from lines
        return
    with path.open("rb") as handle:
        head = handle.read(1024 * 1024)
    cut = head.rfind(b"\n") + 1 or len(head)
    encoding = decode_bytes(head[:cut], path).encoding
    number = 0
    try:
        with path.open("r", encoding=encoding, newline=None) as handle:
            for number, line in enumerate(handle, start=1):  # noqa: B007
                yield line if keepends else line.rstrip("\n")
    except UnicodeDecodeError:
        raise InputFileError(path, f"not valid {encoding.upper()} after line {number}: mixed encodings?") from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line; a bad line names its line and column."""
    for number, line in enumerate(iter_lines(path), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise json_error(path, line, error, line_offset=number - 1) from None


def iter_json_array(path: Path, chunk: int = 4 * 1024 * 1024) -> Iterator[tuple[int, Any]]:
    """(index, item) of a top-level JSON array. Files over `STREAM_ABOVE` bytes are parsed
    item by item from a sliding buffer, so a multi-gigabyte export never sits in memory whole;
    errors name the character offset and say when the file ends early."""
    if path.stat().st_size <= STREAM_ABOVE:
        data = load_json(path)
        if not isinstance(data, list):
            raise InputFileError(path, "expected a JSON array")
        yield from enumerate(data)
        return
    with path.open("rb") as handle:
        head = handle.read(1024 * 1024)
    encoding = decode_bytes(head[: head.rfind(b"\n") + 1 or len(head)], path).encoding
    decoder = json.JSONDecoder()
    with path.open("r", encoding=encoding) as handle:
        buffer, offset, pos, index, eof = handle.read(chunk).lstrip("\ufeff"), 0, 0, 0, False

        def skip() -> None:
            nonlocal pos
            while pos < len(buffer) and buffer[pos] in " \t\r\n":
                pos += 1

        def more() -> bool:
            nonlocal buffer, offset, pos, eof
            data = handle.read(chunk)
            if not data:
                eof = True
                return False
            buffer, offset, pos = buffer[pos:] + data, offset + pos, 0
            return True

        skip()
        if not buffer[pos : pos + 1] == "[":
            raise InputFileError(path, f"expected a JSON array at character {offset + pos}")
        pos += 1
        while True:
            skip()
            if pos >= len(buffer) and not more():
                raise InputFileError(path, f"JSON ends early at character {offset + pos}: the file looks truncated")
            if buffer[pos] == "]":
                return
            if buffer[pos] == "," and index:
                pos += 1
                continue
            try:
                item, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError as error:
                if not eof and more():
                    continue
                at = offset + error.pos
                if error.pos >= len(buffer.rstrip()) - 1 or error.msg.startswith("Unterminated"):
                    raise InputFileError(path, f"JSON ends early at character {at}: the file looks truncated") from None
                raise InputFileError(path, f"invalid JSON at character {at}: {error.msg}") from None
            yield index, item
            index += 1
            pos = end
            if pos > chunk:
                buffer, offset, pos = buffer[pos:], offset + pos, 0


def iter_csv(path: Path) -> Iterator[dict[str, str]]:
    lines = iter_lines(path, keepends=True)
    first = next(lines, "")
    reader = csv.DictReader(itertools.chain([first.lstrip("\ufeff")], lines))
    try:
        for row in reader:
            yield {(k or "").strip(): (v if isinstance(v, str) else "") for k, v in row.items()}
    except csv.Error as error:
        raise InputFileError(path, f"malformed CSV at line {reader.line_num}: {error}") from None


def csv_header(path: Path) -> list[str]:
    first = sniff_text(path, 8192).lstrip("\ufeff").split("\n", 1)[0]
    try:
        return [cell.strip() for cell in next(csv.reader([first]))]
    except (StopIteration, csv.Error):
        return []
