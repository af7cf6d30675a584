"""Reading corpus files as text: encoding detection, binary detection, streaming.

Corpora come from everywhere: Windows Notepad (UTF-16 or UTF-8 with a BOM), Chinese
Windows editors (GBK/GB18030), scraped dumps that are megabytes long. Files are sniffed
from their first block and then streamed line by line, so a huge file never sits in memory.
"""

from __future__ import annotations

import codecs
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from companion.utf16 import utf16_from_nuls

SNIFF_BYTES = 64 * 1024
HASH_BLOCK = 1024 * 1024

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Control characters that do not occur in text (tab, newline, CR, form feed and ESC do).
_BINARY_CONTROLS = set(range(0x00, 0x09)) | {0x0B} | set(range(0x0E, 0x1B)) | set(range(0x1C, 0x20))


class NotText(Exception):
    """A file that is binary or in no encoding we can read; the message says which."""


@dataclass(frozen=True)
class TextFile:
    path: Path
    encoding: str

    def lines(self) -> Iterator[str]:
        """The file's lines without line endings, decoded as they are read.

        Bytes that are invalid despite a good sniff (a corrupt tail) become U+FFFD rather than
        aborting a long build."""
        with self.path.open("rb") as raw:
            reader = io.TextIOWrapper(raw, encoding=self.encoding, errors="replace", newline=None)
            for line in reader:
                yield line.rstrip("\n")


def sniff_encoding(head: bytes, *, at_eof: bool) -> str:
    """The encoding of a file that starts with `head`, or NotText."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            if not _decodes(head, encoding, at_eof=at_eof):
                raise NotText(f"starts with a {encoding} byte-order mark but is not {encoding} text")
            return encoding
    if not head:
        return "utf-8"
    utf16 = _utf16_without_bom(head)
    if utf16:
        return utf16
    if b"\x00" in head:
        raise NotText("binary file (contains NUL bytes)")
    controls = sum(1 for b in head if b in _BINARY_CONTROLS)
    if controls > max(2, len(head) // 200):
        raise NotText("binary file (control bytes)")
    for encoding in ("utf-8", "gb18030"):
        if _decodes(head, encoding, at_eof=at_eof):
            return encoding
    raise NotText("not text in UTF-8, UTF-16 or GB18030/GBK")


def _utf16_without_bom(head: bytes) -> str | None:
    """UTF-16 without a BOM shows as NUL in every other byte for ASCII-heavy text."""
    sample = head[: 4096 - (len(head[:4096]) % 2)]
    encoding = utf16_from_nuls(sample)
    return encoding if encoding and _decodes(sample, encoding, at_eof=False) else None


def _decodes(data: bytes, encoding: str, *, at_eof: bool) -> bool:
    """`data` is valid in `encoding` and reads as text (few control characters)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        text = decoder.decode(data, final=at_eof)
    except UnicodeDecodeError:
        return False
    controls = sum(1 for ch in text if ord(ch) in _BINARY_CONTROLS)
    return controls <= max(2, len(text) // 200)


def open_text(path: Path) -> TextFile:
    """Sniff `path`; raise NotText for binary or undecodable files."""
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
        at_eof = not handle.read(1)
    if not at_eof:
        head = _trim_partial_line(head)
    return TextFile(path=path, encoding=sniff_encoding(head, at_eof=at_eof))


def _trim_partial_line(head: bytes) -> bytes:
    """Cut a sniff block at its last newline so a multi-byte character is never split."""
    cut = head.rfind(b"\n")
    return head[: cut + 1] if cut > len(head) // 2 else head


def read_text(path: Path) -> str:
    """A whole small file as text (card imports, World Info JSON); NotText if it is not text."""
    return "\n".join(open_text(path).lines())


def file_hash(path: Path) -> str:
    """sha256 of the file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()
