"""From a token stream to speakable sentences: split (zh/en), parse tags out, guess the language.

    "[joy] 欢迎光临！*waves* Hi there, nice to meet you."
      -> Sentence("欢迎光临！", emotion="joy"), Sentence("Hi there, nice to meet you.", actions=["waves"])

Tags are never spoken: `[emotion]` (the card's expression map and common emotions), any other
`[bracketed note]`, `*action*`, and `\\me action` / `/me action` (to the end of the line or sentence).
The splitter never cuts inside an open tag, waits one character past a full stop (so "3.5" and
closing quotes stay whole), merges fragments shorter than `min_chars`, and may cut the first
sentence at a comma so speech starts sooner.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from companion.scripts import CJK_CHAR, HAN_CHAR, HANGUL, KANA

DEFAULT_EMOTIONS = frozenset(
    "joy happy smile sad angry surprise surprised shy blush think thinking neutral fear scared disgust "
    "love excited confused sleepy proud embarrassed worried calm laugh smirk cry".split()
)
TERMINALS = "。！？!?；;…～\n"
CLAUSES = "，,、：:—"
CLOSERS = "」』”\"'’）)】》〉]"
ABBREVIATIONS = ("mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "e.g.", "i.e.", "etc.", "no.", "p.m.", "a.m.")
_TAG = re.compile(
    r"\[([^\[\]\n]{1,40})\]|\*([^*\n]{1,80})\*|(?:^|(?<=[\s。！？!?.，,;；]))[\\/]me\s+([^\n。！？!?]*[^\s\n。！？!?])"
)
_SPACES = re.compile(r"[ \t]+")
_KANA = re.compile(f"[{KANA}]")
_HANGUL = re.compile(f"[{HANGUL}]")


@dataclass
class Sentence:
    text: str
    emotion: str | None = None
    actions: list[str] = field(default_factory=list)


def parse_tags(raw: str, emotions: Iterable[str] = ()) -> Sentence:
    """Split a raw sentence into spoken text, its emotion (the first emotion tag) and actions."""
    known = {e.lower() for e in emotions} | DEFAULT_EMOTIONS
    emotion: str | None = None
    actions: list[str] = []

    def take(match: re.Match[str]) -> str:
        nonlocal emotion
        bracket, star, me = match.groups()
        if bracket is not None:
            name = bracket.strip()
            if name.lower() in known:
                emotion = emotion or name.lower()
            elif name:
                actions.append(name)
        elif star is not None:
            if star.strip():
                actions.append(star.strip())
        elif me:
            actions.append(me.strip())
        return " "

    text = _TAG.sub(take, raw)
    # An unclosed tag at the very end of a reply (generation stopped mid-tag) is not spoken either.
    text = re.sub(r"(\[[^\]]*|\*[^*]*)$", "", text) if re.search(r"(\[[^\]]*|\*[^*]*)$", text) else text
    text = _SPACES.sub(" ", text.replace("\n", " ")).strip()
    text = re.sub(r"\s+([，。！？、,.!?;；:：])", r"\1", text)
    return Sentence(text=text, emotion=emotion, actions=actions)


SYLLABLE_WEIGHT = 3
"""A CJK character is a whole syllable: about as long to say as three letters of English
(Mandarin runs at ~4-5 characters a second, English at ~12-15 letters)."""


def spoken_length(text: str) -> int:
    """How long `text` takes to say, in letters' worth: Latin letters and digits count one, each
    CJK character (Han, kana, hangul) `SYLLABLE_WEIGHT`. Measured this way the same limits suit
    both scripts: counting characters, a Chinese first clause waited for ten syllables (~2 s of
    speech, 12 tokens at the median of Mochi's lines) where an English one waited for two words."""
    return sum(SYLLABLE_WEIGHT if CJK_CHAR.match(ch) else 1 for ch in text if ch.isalnum())


def _open_tag_at(text: str, end: int) -> bool:
    """Whether position `end` lies inside an unclosed [bracket] or *action* (so no cut there)."""
    head = text[:end]
    if head.count("[") > head.count("]"):
        return True
    line = head.rsplit("\n", 1)[-1]
    return line.count("*") % 2 == 1


class SentenceSplitter:
    """Feed text pieces as they stream in; get complete raw sentences (tags still inside) out."""

    def __init__(self, min_chars: int = 4, max_chars: int = 160, first_clause_chars: int | None = 10) -> None:
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.first_clause_chars = first_clause_chars
        self.buffer = ""
        self.emitted = 0

    def feed(self, piece: str) -> list[str]:
        self.buffer += piece
        out: list[str] = []
        while (cut := self._find_cut(final=False)) is not None:
            out.extend(self._take(cut))
        return out

    def flush(self) -> list[str]:
        out = []
        while (cut := self._find_cut(final=True)) is not None:
            out.extend(self._take(cut))
        if self.buffer.strip():
            out.append(self.buffer)
        self.buffer = ""
        return out

    def _take(self, cut: int) -> list[str]:
        raw, self.buffer = self.buffer[:cut], self.buffer[cut:]
        self.emitted += 1
        return [raw] if raw.strip() else []

    def _speakable(self, raw: str) -> int:
        return spoken_length(parse_tags(raw).text)

    def _find_cut(self, final: bool) -> int | None:
        text = self.buffer
        n = len(text)
        i = 0
        clause_ok = self.first_clause_chars is not None and self.emitted == 0
        while i < n:
            ch = text[i]
            is_terminal = ch in TERMINALS or (ch == "." and self._is_full_stop(text, i, final))
            is_clause = (
                clause_ok and ch in CLAUSES and not (ch in ",:" and text[i + 1 : i + 2].isdigit())
            )  # 7:00, 1,000
            if (is_terminal or is_clause) and not _open_tag_at(text, i):
                end = i + 1
                while end < n and (
                    text[end] in TERMINALS.replace("\n", "") or text[end] in ".!?" or text[end] in CLOSERS
                ):
                    end += 1
                if end >= n and not final:
                    return None  # wait: more punctuation or a closing quote may follow
                size = self._speakable(text[:end])
                if ch == "\n" and size == 0:
                    i = end
                    continue  # a line of tags only: keep it with what follows
                if is_terminal and size >= self.min_chars:
                    return end
                if is_clause and not is_terminal and size >= (self.first_clause_chars or 0):
                    return end
                i = end
                continue
            i += 1
        if spoken_length(text) > self.max_chars and not _open_tag_at(text, n):
            space = max(text.rfind(" ", 0, n - 1), text.rfind("，", 0, n - 1), text.rfind(",", 0, n - 1))
            return space + 1 if space > 0 else n
        return None

    @staticmethod
    def _is_full_stop(text: str, i: int, final: bool) -> bool:
        nxt = text[i + 1] if i + 1 < len(text) else None
        if nxt is None:
            return True  # the caller waits for one more character unless this is the end
        if nxt.isdigit() or nxt.isalpha():
            return False  # 3.5, example.com, e.g.
        word = text[max(0, text.rfind(" ", 0, i) + 1) : i + 1].lower()
        return word not in ABBREVIATIONS


_LATIN = re.compile(r"[A-Za-z]")


def detect_language(text: str, default: str = "en") -> str:
    """A script-based guess good enough to route a sentence to a voice: zh, ja, ko or en."""
    if _KANA.search(text):
        return "ja"
    if _HANGUL.search(text):
        return "ko"
    han = len(HAN_CHAR.findall(text))
    if han and han >= len(_LATIN.findall(text)) / 4:
        return "zh"
    if _LATIN.search(text):
        return "en"
    return default


def base_language(code: str | None) -> str | None:
    """'zh-CN' -> 'zh', 'en_US' -> 'en', 'cmn' -> 'zh'."""
    if not code:
        return None
    head = re.split(r"[-_]", code.lower())[0]
    return {"cmn": "zh", "yue": "zh", "zho": "zh", "chi": "zh", "eng": "en", "jpn": "ja", "kor": "ko"}.get(head, head)
