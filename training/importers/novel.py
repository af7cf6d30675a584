"""Novels: quoted speech with speaker attribution, Chinese and English.

Quotes: `“…”`, `「…」`, `『…』` and ASCII `"…"`, mixed freely (a `“` may close with `"`, as in
old transcriptions): `“`/`「` always open, `”`/`」` always close, and `"` opens outside a quote and
closes inside one. A quote left open at the end of a paragraph closes there.

Which quotes are speech: those after a colon cue (`X笑道：“…”`), those followed by a cue
(`“…”张三说。`, `"…," said Tom`), and dialogue paragraphs that open with a full sentence in
quotes. Short terms in quotes (`"通灵"`, `都称“千岁大王”`, inscriptions after 镌着/上书/题曰,
proverbs after 古云/俗话说/诗曰) are not.

Who speaks (Chinese): names are learned from the book itself, as the longest frequent opening
of the clauses that introduce speech (士隐 in 士隐笑道/士隐因说道, 贾雨村 when 贾雨 is always
followed by 村), plus any names given (`ReadOptions.names`, `--as`). In the cue sentence the
subject is the name that opens a comma segment (connectives like 又/便/却说 allowed before it),
searching from the segment nearest the colon backwards; names after 向/对/与/问/见/将... are
objects and skipped. A speaker the book never names often enough is read off the cue itself
(袭人亦含羞笑问道 -> 袭人, 内中有一老年人说道 -> 老年人). A cue with no subject (因问：, 都道：)
goes to a subject the narration since the previous quote brought on stage (众猴称贺。都道：),
else continues the paragraph's last speaker, else the subject of an earlier sentence. A
whole-paragraph quote with no cue after two alternating speakers goes to the one whose turn it
is. English: `said Tom` / `Tom said` / `Mr. Darcy replied` before or after the quote; the second
half of a split quote keeps the speaker; he/she goes to the name opening the paragraph's
narration, if any. Unattributed lines get the speaker "?" and serve as context. Aliases of one
person (悟空/猴王/美猴王) stay separate names: pass them together to `--as`.

Quotes close together form a conversation; a chapter heading or a long stretch of narration
(`SCENE_GAP` characters) starts a new one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from companion.scripts import HAN_CHAR
from training.conversation import Conversation, Message
from training.importers.base import BaseImporter, ReadOptions, source_label
from training.textio import read_text, sniff_text

UNKNOWN = "?"
SCENE_GAP = 400
OPENERS = {"“": "”", "「": "」", "『": "』"}
CLOSERS = {"”", "」", "』"}
ZH_TERMINATORS = "。！？．；…!?"
CHAPTER = re.compile(r"^\s*(第[零一二三四五六七八九十百千\d]+[回章节卷]|chapter\s+[\divxlc]+\b|CHAPTER\s+\w+)", re.I)

ZH_CONNECTIVES = (
    "却说", "话说", "且说", "只见", "当下", "于是", "此时", "正是", "一时", "当时", "少时", "须臾", "后来",
    "次日", "一面", "忽见", "忽然", "谁知", "恰值", "只听得", "又听得", "忽听得", "只听", "忽听", "听得",
    "恰", "又", "便", "因", "即", "却", "只", "忽", "那时", "这里",
    "遂", "乃", "惟", "但", "且", "正", "早", "才", "方", "亦", "也", "还", "就", "再",
)  # fmt: skip
ZH_OBJECT_MARKERS = set("向对与和同跟给问叫把将见望请拉携指替为朝让求称看找教")  # not 被: 被X看见, X acts
ZH_STOP_STARTS = set("因又便忙乃遂只笑也却方才就还都齐亦说问道叹想答回一不这那他她我你们其此二自听见看")
ZH_SURNAMES = set("贾甄林薛王史李刘张赵孙周吴郑冯陈褚卫蒋沈韩杨朱秦尤许何吕施孔曹严华金魏陶姜邢袁柳")
ZH_NOT_NAME_ENDINGS = set("笑忙便又道说问因也听叹冷乃遂却只都齐亦方才就还急连回答见看向对与和同")
ZH_STOP_CANDIDATES = {
    "心下",
    "心中",
    "心内",
    "口内",
    "口中",
    "那些",
    "那个",
    "这个",
    "这些",
    "那里",
    "这里",
    "那边",
    "这边",
    "大家",
    "众人",
    "二人",
    "两人",
    "一人",
    "自己",
    "他们",
    "我们",
}
ZH_NOT_SPEECH_BEFORE = re.compile(
    r"(称|称为|叫做|叫作|唤作|名唤|名曰|名为|号|谓之|写着|镌着|刻着|上书|题曰|书云|题着|真是|正是|古云|古人云|俗云|俗话说|常言道|诗曰|词曰|赋曰|有诗为证|所谓|之说|二字|四字)[：:]?\s*$"
)
ZH_PRONOUNS = {"他", "她", "我", "你", "它", "他们", "她们", "我们"}

EN_VERBS = (
    r"said|says|asked|asks|replied|replies|answered|cried|shouted|whispered|muttered|exclaimed|added|continued|"
    r"called|remarked|observed|returned|began|murmured|screamed|yelled|laughed|sighed|snapped|demanded|insisted|"
    r"explained|agreed|repeated|declared|interrupted|inquired|enquired|responded|thought|went on|told \w+|"
    r"announced|suggested|protested|admitted|warned|pleaded|begged|promised|wondered|whispered|breathed|groaned"
)
EN_NAME = (
    r"(?:(?:Mr|Mrs|Ms|Miss|Dr|Sir|Lady|Lord|Captain|Aunt|Uncle|Professor)\.? )?[A-Z][a-z'’]+(?: [A-Z][a-z'’]+){0,2}"
)
EN_PRONOUNS = {"he", "she", "i", "they", "we", "it", "you"}
EN_AFTER = re.compile(rf"^\s*,?\s*(?:{EN_VERBS})\s+(?P<name>{EN_NAME}|he|she|I|they|we)\b", re.I)
EN_AFTER_NAME_FIRST = re.compile(
    rf"^\s*,?\s*(?P<name>{EN_NAME}|[Hh]e|[Ss]he|I|[Tt]hey|[Ww]e)\s+(?:\w+ly\s+)?(?:{EN_VERBS})\b"
)
EN_BEFORE = re.compile(
    rf"(?P<name>{EN_NAME}|[Hh]e|[Ss]he|I|[Tt]hey|[Ww]e)\s+(?:\w+ly\s+)?(?:{EN_VERBS})(?:\s+\w+)?\s*[,:]\s*$"
)
EN_NOT_NAMES = {"The", "A", "An", "But", "And", "Then", "When", "So", "Yes", "No", "Oh", "Well", "This", "That"}


@dataclass
class Quote:
    text: str
    start: int  # offset of the opening mark in the paragraph
    end: int  # offset just after the closing mark (or paragraph end)


def find_quotes(paragraph: str) -> list[Quote]:
    quotes: list[Quote] = []
    open_at: int | None = None
    closer: str | None = None
    for index, char in enumerate(paragraph):
        if open_at is None:
            if char in OPENERS or char == '"':
                open_at, closer = index, OPENERS.get(char, "")
        elif char in CLOSERS or char == '"' or (closer and char == closer):
            quotes.append(Quote(paragraph[open_at + 1 : index], open_at, index + 1))
            open_at = None
    if open_at is not None:
        quotes.append(Quote(paragraph[open_at + 1 :], open_at, len(paragraph)))
    return [q for q in quotes if q.text.strip()]


def is_chinese(text: str) -> bool:
    sample = text[:5000]
    return len(HAN_CHAR.findall(sample)) > len(sample) * 0.1


def _sentence_tail(text: str) -> str:
    """The part of `text` after its last sentence terminator."""
    cut = max(text.rfind(t) for t in ZH_TERMINATORS)
    return text[cut + 1 :]


def _segments(text: str) -> list[str]:
    return [s for s in re.split(r"[，,、]", text)]


def _strip_connectives(segment: str) -> str:
    changed = True
    while changed:
        changed = False
        for word in ZH_CONNECTIVES:
            if segment.startswith(word) and len(segment) > len(word):
                segment = segment[len(word) :]
                changed = True
                break
    return segment


class NameBook:
    """Speaker names for one book: given names plus names learned from its cue clauses."""

    def __init__(self, names: set[str]) -> None:
        self.names = {n for n in names if n}
        self.pattern = self._compile()

    def _compile(self) -> re.Pattern[str] | None:
        if not self.names:
            return None
        alternatives = sorted(self.names, key=len, reverse=True)
        return re.compile("|".join(re.escape(n) for n in alternatives))

    @classmethod
    def learn(cls, paragraphs: list[str], given: tuple[str, ...] = ()) -> NameBook:
        starts: Counter[str] = Counter()
        for paragraph in paragraphs:
            for quote in find_quotes(paragraph):
                before = paragraph[: quote.start].rstrip()
                if not before.endswith(("：", ":")):
                    continue
                segment = _segments(_sentence_tail(before[:-1]))[-1].strip()
                segment = _strip_connectives(re.sub(r"^[”」』\"\s]+", "", segment))
                if len(segment) < 3 or not HAN_CHAR.match(segment):
                    continue
                for size in (2, 3, 4):
                    if len(segment) > size:
                        starts[segment[:size]] += 1
        names: set[str] = set()
        for gram, count in starts.items():
            if count < 2 or len(gram) != 2 or (gram[0] in ZH_STOP_STARTS and not gram.startswith(("那", "这"))):
                continue
            if gram in ZH_STOP_CANDIDATES or not all(HAN_CHAR.match(ch) for ch in gram):
                continue
            best = gram
            for size in (3, 4):  # a longer name when the longer opening is nearly as frequent
                longer = [g for g in starts if len(g) == size and g.startswith(best)]
                if not longer:
                    break
                top = max(longer, key=lambda g: starts[g])
                if top[-1] in ZH_NOT_NAME_ENDINGS:
                    break
                if starts[top] >= 0.75 * starts[best] and starts[top] >= 2:
                    best = top
                else:
                    break
            names.add(best)
        return cls(names | set(given))

    def find(self, text: str) -> list[tuple[int, str]]:
        if self.pattern is None:
            return []
        return [(m.start(), m.group(0)) for m in self.pattern.finditer(text)]

    def subject(self, clause: str, strict: bool = False) -> str | None:
        """The speaking subject of a cue clause (text before the colon), or None. A name opening
        a comma segment wins (nearest the colon first); unless `strict`, then the first name that
        is not an object (after 向/对/与/见...)."""
        for segment in reversed(_segments(clause)):
            stripped = _strip_connectives(segment.strip())
            for position, name in self.find(stripped):
                if position == 0 or (position == 1 and stripped[0] in ZH_SURNAMES):
                    return name
                break
        if strict:
            return None
        for position, name in self.find(clause):
            if position > 0 and clause[position - 1] in ZH_OBJECT_MARKERS:
                continue
            if position > 1 and clause[position - 2 : position] in ("看见", "听见", "问了", "告诉"):
                continue
            return name
        return None


ZH_GUESS = re.compile(
    r"^(?:内中|其中|外面|里面)?(?:有)?(?:一个|一位|几个|两个|一|个)?([\u4e00-\u9fff]{2,4}?)"
    r"(?:亦|也|又|便|忙|连忙|因|乃|遂|方|才|只得|一旁|接口|接声|含羞|含笑|冷笑|陪笑|笑着|笑|回来|出来|进来|上来|"
    r"听了|说着|听说|一面|半日|大|高声|低声|急|罕|慌|齐|都|回头|开口|走来|过来|来)*"
    r"(?:说道|笑道|问道|答道|回道|叫道|喝道|叹道|骂道|说|道|问|叫|喊|答|回|嚷|叹|曰)$"
)


ZH_GUESS_SUBJECT = re.compile(
    r"^(?:这|那)?([\u4e00-\u9fff]{2,4}?)(?:忙|便|又|也|乃|却|亦|都|齐|听了|见了|听说|听见|看了|一面|笑着|含笑|称贺|闻言|闻说)"
)


def guess_subject(clause: str, subject_only: bool = False) -> str | None:
    """A speaker not in the name book, read off the cue itself: 袭人亦含羞笑问道 -> 袭人, or
    the subject opening an earlier segment: 这丫鬟忙转身回避，心下乃想 -> 丫鬟."""
    segments = _segments(clause)
    if subject_only:  # a narration sentence: its opening subject, if it has one
        for segment in segments[:1]:
            match = ZH_GUESS_SUBJECT.match(_strip_connectives(segment.strip()))
            if match:
                return _plausible_name(match.group(1))
        return None
    for segment in reversed(segments[:-1]):  # an explicit subject before the verb segment wins
        match = ZH_GUESS_SUBJECT.match(_strip_connectives(segment.strip()))
        if match and _plausible_name(match.group(1)):
            return _plausible_name(match.group(1))
    match = ZH_GUESS.match(_strip_connectives(segments[-1].strip()))
    return _plausible_name(match.group(1)) if match else None


def _plausible_name(name: str) -> str | None:
    if name in ZH_PRONOUNS or name in ZH_STOP_CANDIDATES or "了" in name or "有" in name:
        return None
    if (
        (name[0] in ZH_STOP_STARTS and name[0] != "道")
        or name[0] in ZH_OBJECT_MARKERS
        or name[0] in "半得正方再将些个位会接人着"
    ):
        return None
    if name[-1] in "着了来去过得":
        return None
    return name


@dataclass
class Line:
    speaker: str
    text: str
    offset: int  # character offset of the paragraph start in the chapter
    paragraph: int
    line: int


class NovelReader:
    def __init__(self, text: str, names: tuple[str, ...] = ()) -> None:
        self.text = text
        self.chinese = is_chinese(text)
        paragraphs = [p.strip() for p in text.split("\n") if p.strip()]
        self.names = NameBook.learn(paragraphs, names) if self.chinese else NameBook(set(names))

    def chapters(self) -> Iterator[tuple[str, list[tuple[int, str]]]]:
        title = ""
        paragraphs: list[tuple[int, str]] = []
        for number, raw in enumerate(self.text.split("\n"), start=1):
            line = raw.strip()
            if not line:
                continue
            if CHAPTER.match(line) and len(line) < 80:
                if paragraphs:
                    yield title, paragraphs
                title, paragraphs = line, []
                continue
            paragraphs.append((number, line))
        if paragraphs:
            yield title, paragraphs

    def lines(self, paragraphs: list[tuple[int, str]]) -> Iterator[tuple[Line, int]]:
        """(line, narration characters since the previous line)."""
        previous_speakers: list[str] = []
        gap = 0
        last_was_dialogue_paragraph = False
        for index, (number, paragraph) in enumerate(paragraphs):
            quotes = find_quotes(paragraph)
            speech = [(q, self.attribute(paragraph, q, quotes, i)) for i, q in enumerate(quotes)]
            speech = [(q, s) for q, s in speech if s is not None]
            if not speech:
                gap += len(paragraph)
                last_was_dialogue_paragraph = False
                continue
            paragraph_speaker: str | None = None
            cursor = 0
            whole_paragraph_quote = len(speech) == 1 and speech[0][0].start == 0
            for quote, speaker in speech:
                gap += len(paragraph[cursor : quote.start])
                cursor = quote.end
                if speaker == "" and paragraph_speaker:
                    speaker = paragraph_speaker  # 因问：“…” continues the paragraph's speaker
                turns = [name for i, name in enumerate(previous_speakers) if i == 0 or name != previous_speakers[i - 1]]
                if speaker == "" and whole_paragraph_quote and last_was_dialogue_paragraph and len(turns) >= 2:
                    speaker = turns[-2]  # alternating two-person dialogue
                speaker = speaker or UNKNOWN
                if speaker != UNKNOWN:
                    paragraph_speaker = speaker
                    previous_speakers.append(speaker)
                yield Line(speaker, quote.text.strip(), 0, index, number), gap
                gap = 0
            gap += len(paragraph[cursor:])
            last_was_dialogue_paragraph = True

    def attribute(self, paragraph: str, quote: Quote, quotes: list[Quote], index: int) -> str | None:
        """The speaker; '' for speech of unknown speaker; None when the quote is not speech."""
        previous_end = quotes[index - 1].end if index else 0
        before = paragraph[previous_end : quote.start]
        next_start = quotes[index + 1].start if index + 1 < len(quotes) else len(paragraph)
        after = paragraph[quote.end : next_start]
        if self.chinese:
            return self._attribute_zh(paragraph, quote, before, after)
        return self._attribute_en(paragraph, quote, quotes, index, before, after)

    def _attribute_zh(self, paragraph: str, quote: Quote, before: str, after: str) -> str | None:
        stripped = before.rstrip()
        has_colon = stripped.endswith(("：", ":"))
        clause = _sentence_tail(stripped[:-1] if has_colon else stripped)
        if not has_colon:
            if ZH_NOT_SPEECH_BEFORE.search(stripped):
                return None
            post = re.match(
                r"^\s*([^。！？．，,；]{1,12}?)(?:笑|忙|又|便|也|冷笑|叹)?(?:说|道|问|答|叫|喊|笑道|回答)", after
            )
            if post:
                for position, name in self.names.find(post.group(1)):
                    if position == 0:
                        return name
            sentence_like = quote.text.rstrip()[-1:] in "。！？…．!?~～" or len(quote.text) >= 12
            starts_paragraph = not before.strip()
            if not (sentence_like and (starts_paragraph or len(quote.text) >= 12)):
                return None
            return ""
        if ZH_NOT_SPEECH_BEFORE.search(clause):
            return None
        subject = self.names.subject(clause) or guess_subject(clause)
        if subject:
            return subject
        # No subject in the cue. Narration since the previous quote may bring one on stage
        # (众猴称贺。都道：): its subject speaks. Otherwise the paragraph's last speaker goes on.
        narration = [s for s in re.split(f"[{ZH_TERMINATORS}]", before.strip())[:-1] if s.strip()]
        for sentence in reversed(narration):
            found = self.names.subject(sentence, strict=True) or guess_subject(sentence, subject_only=True)
            if found:
                return found
        if quote.start > len(before):
            return ""
        earlier = paragraph[: quote.start - len(before)] if len(before) < quote.start else ""
        whole = earlier + (stripped[:-1] if has_colon else stripped)
        sentences = [s for s in re.split(f"[{ZH_TERMINATORS}]", whole)[:-1] if s.strip()]
        for sentence in reversed(sentences):  # the subject of an earlier sentence in the paragraph
            found = self.names.subject(sentence, strict=True)
            if found:
                return found
        return ""

    def _attribute_en(
        self, paragraph: str, quote: Quote, quotes: list[Quote], index: int, before: str, after: str
    ) -> str | None:
        def name_of(found: str) -> str:
            if found.lower() not in EN_PRONOUNS:
                return found
            return self._paragraph_subject_en(paragraph, quotes) if found.lower() in ("he", "she") else ""

        match = EN_AFTER.match(after) or EN_AFTER_NAME_FIRST.match(after)
        if match and match.group("name") not in EN_NOT_NAMES:
            return name_of(match.group("name"))
        match = EN_BEFORE.search(before)
        if match and match.group("name") not in EN_NOT_NAMES:
            return name_of(match.group("name"))
        if index > 0 and not re.search(r"[.!?]\s", before) and len(before) < 60:
            prior = quotes[index - 1]
            previous_before = paragraph[quotes[index - 2].end if index > 1 else 0 : prior.start]
            match = EN_AFTER.match(before) or EN_AFTER_NAME_FIRST.match(before) or EN_BEFORE.search(previous_before)
            if match:
                return name_of(match.group("name"))
        words = quote.text.split()
        if len(words) < 3 and not quote.text.rstrip().endswith(("!", "?", ".", ",")):
            return None  # a term in quotes
        return ""

    def _paragraph_subject_en(self, paragraph: str, quotes: list[Quote]) -> str:
        """he/she: the name opening a narration sentence of the same paragraph (Tom folded the
        paper. "..." he replied), else unknown."""
        narration = paragraph
        for quote in reversed(quotes):
            narration = narration[: quote.start] + " | " + narration[quote.end :]
        for sentence in re.split(r"(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)[.!?|]\s*", narration):
            match = re.match(rf"\s*({EN_NAME})\b", sentence)
            if match and match.group(1).split()[0] not in EN_NOT_NAMES:
                return match.group(1)
        return ""


class Novel(BaseImporter):
    name = "novel"
    description = "Novels (.txt): quoted speech with speaker attribution (zh cues 道/说/问/笑道, en 'said X')"
    extensions = (".txt",)

    def detect(self, path: Path) -> float:
        if not self.has_extension(path):
            return 0.0
        head = sniff_text(path, 16384)
        quotes = sum(head.count(q) for q in ("“", "「", '"'))
        chapters = len(re.findall(r"^\s*(第[零一二三四五六七八九十百千\d]+[回章节]|chapter\s+\w+)", head, re.M | re.I))
        paragraphs = [p for p in head.split("\n") if p.strip()]
        long_paragraphs = sum(1 for p in paragraphs if len(p) > 80)
        if chapters and quotes >= 4:
            return 0.8
        if quotes >= 6 and long_paragraphs >= 3:
            return 0.5
        return 0.1 if paragraphs else 0.0

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        reader = NovelReader(read_text(path).text, options.names)
        for title, paragraphs in reader.chapters():
            messages: list[Message] = []
            for line, gap in reader.lines(paragraphs):
                if messages and gap > SCENE_GAP:
                    yield self._conversation(path, title, messages)
                    messages = []
                messages.append(Message(speaker=line.speaker, text=line.text, source=source_label(path, line.line)))
            if messages:
                yield self._conversation(path, title, messages)

    def _conversation(self, path: Path, title: str, messages: list[Message]) -> Conversation:
        return Conversation(messages=messages, source=path.name, meta={"format": self.name, "chapter": title})
