"""Lorebook (SillyTavern World Info) activation, and World Info JSON import.

Semantics follow SillyTavern's `checkWorldInfo` (public/scripts/world-info.js) so a book
written and tested there behaves the same here:

- entries are considered highest `insertion_order` first; constant entries always activate;
  disabled entries never do; `@@activate` / `@@dont_activate` decorators are honoured
- primary keys: plain text (substring; optionally case-sensitive and whole-word) or regex,
  either `/pattern/flags` keys or every key when `use_regex` is set (CCv3)
- secondary keys with `selectiveLogic`: 0 AND ANY, 1 NOT ALL, 2 NOT ANY, 3 AND ALL
- whole-word matching uses Latin word boundaries only: inside Chinese or Japanese text
  (no spaces between words) a key matches as a substring, as in SillyTavern
- scan depth: the newest N messages (book setting, per-entry `scan_depth` override)
- recursion: activated entries' content is scanned for further keys (unless
  `prevent_recursion`); `exclude_recursion` entries only match the chat itself;
  `delay_until_recursion` entries only activate in a recursive pass (levels supported)
- probability (`useProbability`/`probability`), inclusion groups (`group`, `group_override`,
  `group_weight`, group scoring) and `delay` (minimum chat length)
- token budget: entries are admitted in priority order until the next would overflow; the
  prompt gets them per position in ascending `insertion_order`
Not implemented: `sticky` and `cooldown` (they need state across turns), min activations,
vectorized entries, character filters.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from companion.card.macros import substitute
from companion.card.model import Lorebook, LorebookEntry
from companion.errors import InputFileError
from companion.scripts import CJK, CJK_CHAR, FULLWIDTH
from knowledge.settings import KnowledgeSettings

log = logging.getLogger(__name__)

AND_ANY, NOT_ALL, NOT_ANY, AND_ALL = 0, 1, 2, 3
POSITIONS = {0: "before_char", 1: "after_char", 2: "an_top", 3: "an_bottom", 4: "at_depth", 5: "em_top", 6: "em_bottom"}
DEFAULT_WEIGHT = 100
DEFAULT_DEPTH = 4
_REGEX_KEY = re.compile(r"^/([\w\W]+?)/([gimsuyd]*)$")
# Word characters that are not CJK: whole-word boundaries only exist next to something else.
_LATIN_WORD = f"[^\\W{CJK}\u3000-\u303f{FULLWIDTH}]"
_DECORATORS = ("@@activate", "@@dont_activate")

TokenCounter = Callable[[str], int]


@dataclass
class WorldEntry:
    """One entry in SillyTavern's own terms (what `convertCharacterBook` makes of a card's book)."""

    uid: Any
    keys: list[str]
    content: str
    secondary: list[str] = field(default_factory=list)
    selective: bool = False
    logic: int = AND_ANY
    comment: str = ""
    constant: bool = False
    enabled: bool = True
    order: int = 100
    position: int = 1
    use_regex: bool = False
    case_sensitive: bool | None = None
    match_whole_words: bool | None = None
    scan_depth: int | None = None
    exclude_recursion: bool = False
    prevent_recursion: bool = False
    delay_until_recursion: int = 0
    probability: float = 100
    use_probability: bool = True
    group: str = ""
    group_override: bool = False
    group_weight: float = DEFAULT_WEIGHT
    use_group_scoring: bool | None = None
    delay: int | None = None
    depth: int = DEFAULT_DEPTH
    decorators: list[str] = field(default_factory=list)
    index: int = 0

    @property
    def label(self) -> str:
        first = self.keys[0] if self.keys else ""
        return self.comment or first or f"entry {self.uid}"

    @property
    def position_name(self) -> str:
        return POSITIONS.get(self.position, str(self.position))


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def entries_from_lorebook(book: Lorebook) -> list[WorldEntry]:
    """A card's character_book as World Info entries (SillyTavern's field mapping)."""
    out = []
    for index, entry in enumerate(book.entries):
        ext = entry.extensions or {}
        decorators, content = parse_decorators(entry.content or "")
        position = ext.get("position")
        if position is None:
            position = 0 if entry.position == "before_char" else 1
        delay_rec = ext.get("delay_until_recursion", False)
        out.append(
            WorldEntry(
                uid=entry.id if entry.id is not None else index,
                keys=[k for k in entry.keys if isinstance(k, str) and k.strip()],
                secondary=[k for k in entry.secondary_keys if isinstance(k, str) and k.strip()],
                selective=bool(entry.selective),
                logic=_int(ext.get("selectiveLogic"), AND_ANY),
                content=content,
                comment=entry.comment or entry.name or "",
                constant=bool(entry.constant),
                enabled=entry.enabled and not ext.get("disable", False),
                order=_int(entry.insertion_order, 100),
                position=_int(position, 1),
                use_regex=bool(entry.use_regex),
                case_sensitive=_first(ext.get("case_sensitive"), entry.case_sensitive),
                match_whole_words=ext.get("match_whole_words"),
                scan_depth=None if ext.get("scan_depth") is None else _int(ext.get("scan_depth"), 0),
                exclude_recursion=bool(ext.get("exclude_recursion", False)),
                prevent_recursion=bool(ext.get("prevent_recursion", False)),
                delay_until_recursion=1 if delay_rec is True else _int(delay_rec, 0),
                probability=float(ext.get("probability", 100) if ext.get("probability") is not None else 100),
                use_probability=bool(ext.get("useProbability", True)),
                group=str(ext.get("group") or ""),
                group_override=bool(ext.get("group_override", False)),
                group_weight=float(ext.get("group_weight") or DEFAULT_WEIGHT),
                use_group_scoring=ext.get("use_group_scoring"),
                delay=None if not ext.get("delay") else _int(ext.get("delay"), 0),
                depth=_int(ext.get("depth"), DEFAULT_DEPTH),
                decorators=decorators,
                index=_int(ext.get("display_index"), index),
            )
        )
    return out


def _first(*values):
    return next((v for v in values if v is not None), None)


def parse_decorators(content: str) -> tuple[list[str], str]:
    """Leading `@@activate` / `@@dont_activate` lines (SillyTavern's subset of CCv3 decorators)."""
    if not content.startswith("@@"):
        return [], content
    decorators = []
    lines = content.split("\n")
    for i, line in enumerate(lines):
        if not line.startswith("@@"):
            return decorators, "\n".join(lines[i:])
        name = line[1:] if line.startswith("@@@") else line
        if name.startswith(_DECORATORS):
            decorators.append(name.strip())
    return decorators, ""


def parse_regex_key(key: str) -> re.Pattern | None:
    """A `/pattern/flags` key as a compiled regex (JavaScript flags mapped), else None."""
    match = _REGEX_KEY.match(key)
    if not match:
        return None
    pattern, flags = match.groups()
    if re.search(r"(^|[^\\])/", pattern):
        return None
    return _compile(pattern.replace("\\/", "/"), flags)


def _compile(pattern: str, flags: str = "") -> re.Pattern | None:
    value = 0
    value |= re.IGNORECASE if "i" in flags else 0
    value |= re.MULTILINE if "m" in flags else 0
    value |= re.DOTALL if "s" in flags else 0
    try:
        return re.compile(pattern, value)
    except re.error as error:
        log.warning("lorebook: invalid regex key /%s/: %s", pattern, error)
        return None


@dataclass
class Activation:
    entry: WorldEntry
    reason: str
    tokens: int = 0


class WorldInfo:
    """The activation engine for one book."""

    def __init__(
        self,
        entries: Sequence[WorldEntry],
        *,
        scan_depth: int = 2,
        recursive: bool = False,
        max_recursion_steps: int = 0,
        case_sensitive: bool = False,
        match_whole_words: bool = False,
        char: str = "",
        user: str = "",
        rng: random.Random | None = None,
    ) -> None:
        # SillyTavern's sortFn: highest order first; stable by display index
        self.entries = sorted(entries, key=lambda e: (-e.order, e.index))
        self.scan_depth = scan_depth
        self.recursive = recursive
        self.max_recursion_steps = max_recursion_steps
        self.case_sensitive = case_sensitive
        self.match_whole_words = match_whole_words
        self.char = char
        self.user = user
        self.rng = rng or random.Random()
        self._patterns: dict[tuple[str, bool, bool, bool], re.Pattern | None] = {}

    @classmethod
    def from_book(cls, book: Lorebook | None, settings: KnowledgeSettings | None = None, **kwargs: Any) -> WorldInfo:
        settings = settings or KnowledgeSettings()
        book = book or Lorebook()
        return cls(
            entries_from_lorebook(book),
            scan_depth=book.scan_depth if book.scan_depth is not None else settings.scan_depth,
            recursive=book.recursive_scanning if book.recursive_scanning is not None else settings.recursive_scanning,
            max_recursion_steps=settings.max_recursion_steps,
            case_sensitive=settings.case_sensitive,
            match_whole_words=settings.match_whole_words,
            **kwargs,
        )

    def __len__(self) -> int:
        return len(self.entries)

    # ------------------------------------------------------------ matching

    def _macros(self, text: str) -> str:
        return substitute(text, char=self.char, user=self.user) if "{{" in text or "<" in text else text

    def match_key(self, haystack: str, key: str, entry: WorldEntry) -> bool:
        key = self._macros(key).strip()
        if not key:
            return False
        case_sensitive = entry.case_sensitive if entry.case_sensitive is not None else self.case_sensitive
        whole = entry.match_whole_words if entry.match_whole_words is not None else self.match_whole_words
        cache_key = (key, entry.use_regex, case_sensitive, whole)
        if cache_key not in self._patterns:
            self._patterns[cache_key] = self._pattern(key, entry.use_regex, case_sensitive, whole)
        pattern = self._patterns[cache_key]
        if pattern is not None:
            return pattern.search(haystack) is not None
        if not case_sensitive:
            return key.lower() in haystack.lower()
        return key in haystack

    @staticmethod
    def _pattern(key: str, use_regex: bool, case_sensitive: bool, whole: bool) -> re.Pattern | None:
        """A compiled matcher, or None for a plain substring test."""
        regex = parse_regex_key(key)
        if regex is not None:
            return regex  # a regex key overrides case and whole-word settings, as in SillyTavern
        if use_regex:
            return _compile(key, "" if case_sensitive else "i")
        if not whole or CJK_CHAR.search(key):
            return None
        flags = 0 if case_sensitive else re.IGNORECASE
        return re.compile(rf"(?<!{_LATIN_WORD}){re.escape(key)}(?!{_LATIN_WORD})", flags)

    def _score(self, entry: WorldEntry, text: str) -> int:
        """SillyTavern's group score: primary matches, plus secondary for AND ANY / AND ALL."""
        if not entry.keys:
            return 0
        primary = sum(1 for k in entry.keys if self.match_key(text, k, entry))
        secondary = sum(1 for k in entry.secondary if self.match_key(text, k, entry))
        if entry.secondary:
            if entry.logic == AND_ANY:
                return primary + secondary
            if entry.logic == AND_ALL:
                return primary + secondary if secondary == len(entry.secondary) else primary
        return primary

    # ------------------------------------------------------------ scanning

    def scan(
        self,
        messages: Sequence[str],
        *,
        budget_tokens: int | None = None,
        count_tokens: TokenCounter = lambda text: len(text) // 3 + 1,
        chat_length: int | None = None,
        user: str | None = None,
    ) -> list[Activation]:
        """Activated entries for a chat (oldest message first, the user's new turn last), in
        prompt order: position, then ascending insertion order. `user` fills {{user}} in keys."""
        engine = self
        if user is not None and user != self.user:
            engine = copy.copy(self)  # shares the compiled-pattern cache; safe across threads
            engine.user = user
        return engine._scan(messages, budget_tokens, count_tokens, chat_length)

    def _scan(self, messages, budget_tokens, count_tokens, chat_length) -> list[Activation]:
        newest_first = [m.strip() for m in reversed(messages)]
        chat_length = len(messages) if chat_length is None else chat_length
        recurse: list[str] = []
        activated: dict[int, Activation] = {}
        failed_probability: set[int] = set()
        used_tokens = 0
        overflowed = False
        delay_levels = sorted({e.delay_until_recursion for e in self.entries if e.delay_until_recursion})
        level = delay_levels.pop(0) if delay_levels else 0
        state = "initial"
        steps = 0

        while state:
            if self.max_recursion_steps and steps >= self.max_recursion_steps:
                break
            steps += 1
            next_state = ""
            found: list[tuple[WorldEntry, str]] = []
            for entry in self.entries:
                if id(entry) in activated or id(entry) in failed_probability or not entry.enabled:
                    continue
                if entry.delay and chat_length < entry.delay:
                    continue
                if state != "recursion" and entry.delay_until_recursion:
                    continue
                if state == "recursion" and entry.delay_until_recursion > level:
                    continue
                if state == "recursion" and entry.exclude_recursion:
                    continue
                if "@@activate" in entry.decorators:
                    found.append((entry, "@@activate"))
                    continue
                if "@@dont_activate" in entry.decorators:
                    continue
                if entry.constant:
                    found.append((entry, "constant"))
                    continue
                if not entry.keys:
                    continue
                text = self._buffer(entry, newest_first, recurse)
                key = next((k for k in entry.keys if self.match_key(text, k, entry)), None)
                if key is None:
                    continue
                if entry.selective and entry.secondary:
                    if not self._secondary(entry, text):
                        continue
                    found.append((entry, f"key {key!r} + secondary"))
                else:
                    found.append((entry, f"key {key!r}" + (" (recursion)" if state == "recursion" else "")))

            entries = [e for e, _ in found]
            reasons = {id(e): r for e, r in found}
            entries = self._filter_groups(entries, activated, newest_first, recurse)

            admitted: list[WorldEntry] = []
            for entry in entries:
                if entry.use_probability and entry.probability < 100 and self.rng.random() * 100 > entry.probability:
                    failed_probability.add(id(entry))
                    continue
                content = self._macros(entry.content)
                tokens = count_tokens(content) if content.strip() else 0
                if budget_tokens is not None and used_tokens + tokens > budget_tokens:
                    overflowed = True
                    break
                used_tokens += tokens
                activated[id(entry)] = Activation(entry, reasons[id(entry)], tokens)
                admitted.append(entry)

            for_recursion = [e for e in admitted if not e.prevent_recursion]
            if self.recursive and not overflowed and for_recursion:
                next_state = "recursion"
            if not next_state and delay_levels and not overflowed:
                next_state = "recursion"
                level = delay_levels.pop(0)
            if next_state:
                text = "\n".join(self._macros(e.content) for e in for_recursion)
                if text:
                    recurse.append(text)
            state = next_state

        ordered = sorted(activated.values(), key=lambda a: (a.entry.position, a.entry.order, a.entry.index))
        return [a for a in ordered if a.entry.content.strip()]

    def _buffer(self, entry: WorldEntry, newest_first: Sequence[str], recurse: Sequence[str]) -> str:
        depth = entry.scan_depth if entry.scan_depth is not None else self.scan_depth
        parts = list(newest_first[: max(0, depth)])
        parts += recurse
        return "\n".join(parts)

    def _secondary(self, entry: WorldEntry, text: str) -> bool:
        any_match = False
        all_match = True
        for key in entry.secondary:
            hit = self.match_key(text, key, entry)
            any_match |= hit
            all_match &= hit
            if entry.logic == AND_ANY and hit:
                return True
            if entry.logic == NOT_ALL and not hit:
                return True
        if entry.logic == NOT_ANY and not any_match:
            return True
        return entry.logic == AND_ALL and all_match

    def _filter_groups(
        self,
        entries: list[WorldEntry],
        activated: dict[int, Activation],
        newest_first: Sequence[str],
        recurse: Sequence[str],
    ) -> list[WorldEntry]:
        """Inclusion groups: one winner per group (override first, then weighted random)."""
        groups: dict[str, list[WorldEntry]] = {}
        for entry in entries:
            for name in (g.strip() for g in entry.group.split(",")):
                if name:
                    groups.setdefault(name, []).append(entry)
        if not groups:
            return entries
        removed: set[int] = set()
        active_groups = {g.strip() for a in activated.values() for g in a.entry.group.split(",") if g.strip()}
        for name, group in groups.items():
            group = [e for e in group if id(e) not in removed]
            if any(e.use_group_scoring for e in group):
                scores = [self._score(e, self._buffer(e, newest_first, recurse)) for e in group]
                best = max(scores, default=0)
                for entry, score in zip(group, scores, strict=True):
                    if entry.use_group_scoring and score < best:
                        removed.add(id(entry))
                group = [e for e in group if id(e) not in removed]
            if name in active_groups:
                removed.update(id(e) for e in group)
                continue
            if len(group) <= 1:
                continue
            overrides = sorted((e for e in group if e.group_override), key=lambda e: -e.order)
            if overrides:
                winner = overrides[0]
            else:
                total = sum(e.group_weight for e in group)
                roll = self.rng.random() * total
                winner, acc = group[-1], 0.0
                for entry in group:
                    acc += entry.group_weight
                    if roll <= acc:
                        winner = entry
                        break
            removed.update(id(e) for e in group if e is not winner)
        return [e for e in entries if id(e) not in removed]


# ---------------------------------------------------------------- import


def lorebook_from_world_info(data: dict[str, Any], *, name: str | None = None) -> Lorebook:
    """A SillyTavern World Info export (`{"entries": {"0": {...}}}`) as a card character_book,
    keeping every SillyTavern field under `extensions` so nothing is lost on the way back."""
    raw_entries = data.get("entries")
    if isinstance(raw_entries, dict):
        raw = list(raw_entries.values())
    elif isinstance(raw_entries, list):
        raw = raw_entries
    else:
        raise ValueError("no 'entries' in the World Info file")
    if raw and all(isinstance(e, dict) and "keys" in e and "key" not in e for e in raw):
        return Lorebook.model_validate({**data, "entries": raw, "name": data.get("name") or name})
    entries = []
    for i, e in enumerate(raw):
        if not isinstance(e, dict):
            continue
        position = _int(e.get("position"), 0)
        ext = {
            "position": position,
            "exclude_recursion": bool(e.get("excludeRecursion", False)),
            "prevent_recursion": bool(e.get("preventRecursion", False)),
            "delay_until_recursion": e.get("delayUntilRecursion", False),
            "display_index": e.get("displayIndex", i),
            "probability": e.get("probability", 100),
            "useProbability": e.get("useProbability", True),
            "depth": e.get("depth", DEFAULT_DEPTH),
            "selectiveLogic": e.get("selectiveLogic", AND_ANY),
            "group": e.get("group", ""),
            "group_override": e.get("groupOverride", False),
            "group_weight": e.get("groupWeight", DEFAULT_WEIGHT),
            "scan_depth": e.get("scanDepth"),
            "case_sensitive": e.get("caseSensitive"),
            "match_whole_words": e.get("matchWholeWords"),
            "use_group_scoring": e.get("useGroupScoring"),
            "automation_id": e.get("automationId", ""),
            "role": e.get("role", 0),
            "vectorized": e.get("vectorized", False),
            "sticky": e.get("sticky"),
            "cooldown": e.get("cooldown"),
            "delay": e.get("delay"),
        }
        entries.append(
            LorebookEntry(
                id=e.get("uid", i),
                keys=_strings(e.get("key", e.get("keys"))),
                secondary_keys=_strings(e.get("keysecondary", e.get("secondary_keys"))),
                comment=e.get("comment") or "",
                content=e.get("content") or "",
                constant=bool(e.get("constant", False)),
                selective=bool(e.get("selective", True)),
                insertion_order=_int(e.get("order", e.get("insertion_order")), 100),
                enabled=not e.get("disable", False),
                position="before_char" if position == 0 else "after_char",
                case_sensitive=e.get("caseSensitive"),
                extensions=ext,
            )
        )
    return Lorebook(name=data.get("name") or name, entries=entries)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    return [str(k) for k in value or [] if str(k).strip()]


def load_world_info(path: Path) -> Lorebook:
    """A lorebook from a SillyTavern World Info JSON, a bare character_book, or a card JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except UnicodeDecodeError:
        raise InputFileError(path, "not UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise InputFileError(path, f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    if not isinstance(data, dict):
        raise InputFileError(path, "expected a JSON object with 'entries'")
    card_data = data.get("data") if isinstance(data.get("data"), dict) else data
    if "entries" not in data and isinstance(card_data.get("character_book"), dict):
        data = card_data["character_book"]
    try:
        return lorebook_from_world_info(data, name=path.stem)
    except ValueError as error:
        raise InputFileError(path, str(error)) from None


def merge_lorebooks(base: Lorebook | None, extra: Lorebook) -> Lorebook:
    """`extra`'s entries appended to `base` (ids renumbered where they collide)."""
    if base is None:
        return extra
    taken = {e.id for e in base.entries if e.id is not None}
    next_id = max([i for i in taken if isinstance(i, int)], default=-1) + 1
    added = []
    for entry in extra.entries:
        if entry.id is None or entry.id in taken:
            entry = entry.model_copy(update={"id": next_id})
            next_id += 1
        taken.add(entry.id)
        added.append(entry)
    return base.model_copy(update={"entries": [*base.entries, *added]})
