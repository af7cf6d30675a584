"""Corpus files in the encodings people actually have, binaries, and files too big to load."""

from __future__ import annotations

import codecs
import tracemalloc
from pathlib import Path

import pytest

from knowledge.chunking import chunk_lore
from knowledge.textio import NotText, file_hash, open_text

TEXT = "糯米说：「今天的红豆包烤好了！」\nThe oven is warm.\n第二行：海棠街27号。\n"


@pytest.mark.parametrize(
    ("encoding", "prefix"),
    [
        ("utf-8", b""),
        ("utf-8", codecs.BOM_UTF8),
        ("gbk", b""),
        ("gb18030", b""),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-16-le", b""),  # no BOM: told apart by the NUL pattern
    ],
)
def test_encodings_decode_to_the_same_text(tmp_path: Path, encoding: str, prefix: bytes) -> None:
    path = tmp_path / "lore.txt"
    path.write_bytes(prefix + TEXT.encode(encoding))
    lines = list(open_text(path).lines())
    assert lines == TEXT.rstrip("\n").split("\n")


def test_crlf_and_gbk_with_long_text(tmp_path: Path) -> None:
    path = tmp_path / "win.txt"
    path.write_bytes(("外婆的葱油饼\r\n" * 20000).encode("gbk"))  # longer than the sniffed block
    text = open_text(path)
    assert text.encoding == "gb18030"
    lines = list(text.lines())
    assert len(lines) == 20000 and set(lines) == {"外婆的葱油饼"}


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,
        b"\x00\x01\x02\x03" * 1000,
        bytes([0x81, 0x20, 0xFF, 0x20]) * 1000,  # neither UTF-8 nor GB18030
    ],
)
def test_binary_and_undecodable_files_are_not_text(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "thing.bin"
    path.write_bytes(data)
    with pytest.raises(NotText):
        open_text(path)


def test_huge_file_is_streamed_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "huge.md"
    paragraph = ("海风吹过灯塔，糯米在阁楼上数星星。" * 6 + "\n\n").encode("utf-8")
    with path.open("wb") as handle:
        for _ in range(40_000):
            handle.write(paragraph)
    size = path.stat().st_size
    assert size > 12_000_000
    tracemalloc.start()
    try:
        chunks = 0
        for chunk in chunk_lore(open_text(path).lines(), count=len, max_tokens=400, overlap=0):
            chunks += 1
            assert len(chunk.text) <= 400
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert chunks >= 10_000
    assert peak < 2_000_000, f"peak {peak} bytes for a {size}-byte file: not streamed"
    assert len(file_hash(path)) == 64
