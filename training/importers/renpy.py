"""Ren'Py scripts (.rpy): character definitions, say statements (ADV and NVL), `extend`,
narration, text tags stripped, and `tl/<language>/` translation blocks paired with the
original lines.

A path may be a game folder (every .rpy under it, `tl/` read as translations) or one .rpy
file (its siblings are read for `define x = Character(...)` only, and a `tl/` folder beside
it for translations). Each `label` becomes one conversation, so branches of a menu stay apart.
Messages keep the character's variable (`s`, `e`) as `speaker_id` and the display name as
`speaker`; every translated line carries `translations[lang]`, and the `translate <lang>
strings` block renames speakers (Sylvie -> 希尔薇). `--lang schinese` reads the translation.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from training.conversation import Conversation, Message
from training.importers.base import BaseImporter, ReadOptions, source_label
from training.textio import read_text, sniff_text

KEYWORDS = {
    "show", "scene", "hide", "play", "stop", "queue", "jump", "call", "return", "with", "window", "pause",
    "menu", "label", "define", "default", "image", "transform", "init", "python", "if", "elif", "else",
    "while", "for", "screen", "style", "translate", "old", "new", "voice", "nvl", "camera", "example",
    "extend", "at", "behind", "onlayer", "zorder", "pass", "centered", "layeredimage", "testcase", "rpy",
    "renpy", "key", "text", "textbutton", "vbox", "hbox", "frame", "add", "use", "has", "imagebutton",
    "viewport", "bar", "null", "fixed", "grid", "side", "timer", "button", "input", "action", "xalign",
}  # fmt: skip
DEFINE = re.compile(
    r"^\s*(?:define\s+|default\s+|\$\s*)?([A-Za-z_]\w*)\s*=\s*(?:Character|DynamicCharacter|ADVCharacter|NVLCharacter)\((.*)$"
)
LABEL = re.compile(r"^\s*label\s+([A-Za-z_][\w.]*)\s*(?:\(.*\))?\s*:")
TL_BLOCK = re.compile(r"^translate\s+(\w+)\s+([\w.]+)\s*:")
STRING = r"(?:\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
SAY = re.compile(
    rf"^(?:(?P<who>[A-Za-z_]\w*|{STRING})(?P<attrs>(?:\s+@?\s*[\w-]+)*?)\s+)?(?P<what>{STRING})(?P<rest>.*)$"
)
PY_SAY = re.compile(rf"^\$\s*([A-Za-z_]\w*)\(\s*(?:_\(\s*)?(?P<what>{STRING})")
TEXT_TAG = re.compile(r"(?<!\{)\{(?!\{)[^{}]*\}")
INTERPOLATION = re.compile(r"(?<!\[)\[(?!\[)[^\[\]]*\]")


def unquote(literal: str) -> str:
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return literal[1:-1]
    return value if isinstance(value, str) else str(value)


def clean_text(text: str) -> str:
    """Strip text tags ({b}, {w}, {a=...}, {color=...}), keep escaped braces and brackets."""
    text = TEXT_TAG.sub("", text)
    text = text.replace("{{", "{").replace("}}", "}").replace("[[", "[").replace("]]", "]")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def character_name(args: str) -> tuple[str | None, bool]:
    """(display name or None for the narrator, is_nvl) from `Character(` arguments."""
    is_nvl = bool(re.search(r"kind\s*=\s*nvl|NVLCharacter", args))
    match = re.match(rf"\s*(?:_\(\s*)?({STRING}|None)", args)
    if not match or match.group(1) == "None":
        return None, is_nvl
    return unquote(match.group(1)), is_nvl


@dataclass
class Say:
    who: str | None  # variable or quoted name; None for narration
    what: str  # the raw string value, tags still in
    extend: bool = False


def parse_say(line: str) -> Say | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    py = PY_SAY.match(stripped)
    if py:
        return Say(who=py.group(1), what=unquote(py.group("what")))
    first = stripped.split(None, 1)[0]
    if first == "extend":
        match = re.match(rf"^extend\s+(?:[\w-]+\s+)*({STRING})", stripped)
        return Say(who=None, what=unquote(match.group(1)), extend=True) if match else None
    if first in KEYWORDS or first.startswith(("$", "@")):
        return None
    match = SAY.match(stripped)
    if not match:
        return None
    rest = match.group("rest").strip()
    if rest.endswith(":") or rest.startswith(("if ", "(")):
        return None  # a menu choice or a statement with a block
    who = match.group("who")
    if who and who in KEYWORDS:
        return None
    if who and who[0] in "\"'":
        who = "=" + unquote(who)  # a literal name: "Guard" "Halt!"
    return Say(who=who, what=unquote(match.group("what")))


@dataclass
class Translations:
    lines: dict[str, dict[tuple[str | None, str], str]] = field(default_factory=dict)  # lang -> (who, what) -> text
    strings: dict[str, dict[str, str]] = field(default_factory=dict)  # lang -> old -> new


def parse_translations(files: list[Path]) -> Translations:
    result = Translations()
    for file in files:
        lang = None
        block = None
        original: Say | None = None
        old: str | None = None
        for raw in read_text(file).text.split("\n"):
            header = TL_BLOCK.match(raw)
            if header:
                lang, block = header.group(1), header.group(2)
                original = None
                continue
            if lang is None:
                continue
            stripped = raw.strip()
            if block == "strings":
                if stripped.startswith("old "):
                    old = unquote(stripped[4:].strip())
                elif stripped.startswith("new ") and old is not None:
                    result.strings.setdefault(lang, {})[old] = unquote(stripped[4:].strip())
                    old = None
                continue
            if stripped.startswith("#"):
                said = parse_say(stripped[1:].strip())
                if said is not None:
                    original = said
                continue
            said = parse_say(stripped)
            if said is not None and original is not None:
                key = (original.who, original.what)
                result.lines.setdefault(lang, {})[key] = said.what
                original = None
    return result


def find_translation_files(root: Path) -> list[Path]:
    tl = root / "tl"
    if not tl.is_dir():
        return []
    return sorted(p for p in tl.rglob("*.rpy") if p.is_file())


class RenPy(BaseImporter):
    name = "renpy"
    description = "Ren'Py scripts (.rpy or a game folder): Character defines, say/NVL lines, tl/ translations"
    extensions = (".rpy",)
    claims_directories = True

    def detect(self, path: Path) -> float:
        if path.is_dir():
            return 0.9 if any(p for p in path.glob("*.rpy")) or any(path.glob("game/*.rpy")) else 0.0
        if not self.has_extension(path):
            return 0.0
        head = sniff_text(path, 8192)
        return 0.98 if ("label " in head or "Character(" in head or "translate " in head) else 0.8

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        if path.is_dir():
            root = path / "game" if (path / "game").is_dir() and not list(path.glob("*.rpy")) else path
            scripts = sorted(p for p in root.rglob("*.rpy") if "tl" not in p.relative_to(root).parts[:1])
            tl_root = root
        else:
            root = path.parent
            scripts, tl_root = [path], root
        defines: dict[str, tuple[str | None, bool]] = {}
        for file in sorted({*scripts, *root.glob("*.rpy")}):
            for line in read_text(file).text.split("\n"):
                match = DEFINE.match(line)
                if match:
                    defines[match.group(1)] = character_name(match.group(2))
        translations = parse_translations(find_translation_files(tl_root))
        for script in scripts:
            yield from self._read_script(script, defines, translations, options)

    def _read_script(
        self,
        path: Path,
        defines: dict[str, tuple[str | None, bool]],
        translations: Translations,
        options: ReadOptions,
    ) -> Iterator[Conversation]:
        label = "(top)"
        messages: list[Message] = []
        speaker_names = {lang: dict(names) for lang, names in translations.strings.items()}

        def conversation() -> Conversation:
            conv = Conversation(
                messages=list(messages),
                source=path.name,
                meta={"format": self.name, "label": label, "speaker_names": speaker_names},
            )
            return conv.in_language(options.lang) if options.lang else conv

        in_tl = False
        for number, raw in enumerate(read_text(path).text.split("\n"), start=1):
            if TL_BLOCK.match(raw):
                in_tl = True
            elif raw and not raw[0].isspace() and not raw.startswith("#"):
                in_tl = False
            if in_tl:
                continue
            match = LABEL.match(raw)
            if match:
                if messages:
                    yield conversation()
                messages.clear()
                label = match.group(1)
                continue
            said = parse_say(raw)
            if said is None or DEFINE.match(raw):
                continue
            text = clean_text(said.what)
            found = {lang: table.get((said.who, said.what)) for lang, table in translations.lines.items()}
            for lang, strings in translations.strings.items():  # menu captions live in the strings block
                if found.get(lang) is None and said.what in strings:
                    found[lang] = strings[said.what]
            found_clean = {lang: clean_text(value) for lang, value in found.items() if value is not None}
            if said.extend and messages:
                last = messages[-1]
                merged = {
                    lang: (last.translations.get(lang, "") + value).strip() for lang, value in found_clean.items()
                }
                messages[-1] = last.model_copy(
                    update={"text": (last.text + " " + text).strip(), "translations": {**last.translations, **merged}}
                )
                continue
            if not text:
                continue
            if said.who is None:
                speaker, variable, kind = "", None, "narration"
            elif said.who.startswith("="):
                speaker, variable, kind = said.who[1:], None, "text"
            else:
                name, _nvl = defines.get(said.who, (said.who, False))
                speaker, variable, kind = (name or ""), said.who, ("text" if name else "narration")
            messages.append(
                Message(
                    speaker=speaker,
                    speaker_id=variable,
                    text=text,
                    kind=kind,  # type: ignore[arg-type]
                    translations=found_clean,
                    source=source_label(path, number),
                )
            )
        if messages:
            yield conversation()
