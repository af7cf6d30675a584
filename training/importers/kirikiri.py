"""KiriKiri / KAG3 and TyranoScript scenario files (.ks).

- `#name` (TyranoScript, KAG with the common `#` macro; `#name:face` too) sets the speaker,
  a bare `#` returns to narration; `【name】「...」` lines name their speaker inline.
- A message runs until `[p]` (page), `[cm]`/`[er]` (clear) or the next speaker line;
  `[l]` and `[r]` only pause or break the line.
- Tags are stripped; `[ruby text="かん"]漢` keeps the base text 漢; `[[` is a literal `[`.
- `;` comments, `*label` lines, `@command` lines and `[iscript]...[endscript]` /
  `[macro]...[endmacro]` blocks are skipped. Speech in 「」 loses its outer brackets.
Files are often Shift-JIS, so CP932 is tried after UTF-8 (and rejected when it reads as
half-width katakana, the sign of GBK text).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from training.conversation import Conversation, Message
from training.importers.base import BaseImporter, ReadOptions, source_label
from training.textio import read_text, sniff_text

KS_ENCODINGS = ("utf-8", "cp932", "gb18030", "utf-16")
TAG = re.compile(r"\[(\w+)((?:[^\]\"']|\"[^\"]*\"|'[^']*')*)\]")
RUBY = re.compile(r"\[ruby\s+text\s*=\s*(?:\"[^\"]*\"|'[^']*'|\S+?)\s*\]")
INLINE_SPEAKER = re.compile(r"^【([^】]{1,20})】\s*(.*)$")
SKIP_BLOCKS = {"iscript": "endscript", "macro": "endmacro", "html": "endhtml"}
MESSAGE_END = {"p", "cm", "er", "ct"}


def strip_tags(text: str) -> tuple[str, bool]:
    """(plain text, whether the line ended the message with [p]/[cm]/[er])."""
    text = text.replace("[[", "\x00")
    text = RUBY.sub("", text)
    ended = False

    def tag(match: re.Match[str]) -> str:
        nonlocal ended
        name = match.group(1).lower()
        if name in MESSAGE_END:
            ended = True
        return "\n" if name == "r" else ""

    text = TAG.sub(tag, text).replace("\x00", "[")
    return text, ended


def unbracket(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] in "「『" and text[-1] in "」』":
        return text[1:-1].strip()
    return text


class KiriKiri(BaseImporter):
    name = "kirikiri"
    description = "KiriKiri/KAG3 and TyranoScript .ks scenarios (#name lines, [p]/[r] tags, ruby)"
    extensions = (".ks",)

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        head = sniff_text(path, 8192)
        return 0.95 if re.search(r"\[(p|r|l|cm)\]|^[#@*;]", head, re.M) else 0.7

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        text = read_text(path, KS_ENCODINGS).text
        messages: list[Message] = []
        speaker: str | None = None
        buffer: list[str] = []
        start = 0
        skip_until: str | None = None

        def flush() -> None:
            nonlocal buffer
            said = re.sub(r"\n{2,}", "\n", "".join(buffer)).strip()
            buffer = []
            if not said:
                return
            if speaker:
                messages.append(Message(speaker=speaker, text=unbracket(said), source=source_label(path, start)))
            else:
                messages.append(Message(text=said, kind="narration", source=source_label(path, start)))

        for number, raw in enumerate(text.split("\n"), start=1):
            line = raw.strip()
            if skip_until:
                if re.match(rf"^[\[@]{skip_until}\b", line):
                    skip_until = None
                continue
            block = re.match(r"^[\[@](iscript|macro|html)\b", line)
            if block:
                skip_until = SKIP_BLOCKS[block.group(1)]
                continue
            if not line or line.startswith((";", "*", "@")):
                continue
            if line.startswith("#"):
                flush()
                name = line[1:].split(":", 1)[0].strip()
                speaker = name or None
                continue
            inline = INLINE_SPEAKER.match(line)
            if inline:
                flush()
                speaker, line = inline.group(1).strip(), inline.group(2)
            plain, ended = strip_tags(line)
            if not buffer:
                start = number
            buffer.append(plain)
            if ended:
                flush()
                if inline:
                    speaker = None
        flush()
        yield Conversation(messages=messages, source=path.name, meta={"format": self.name})
