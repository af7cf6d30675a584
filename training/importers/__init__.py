"""Importers: one module per format family, found by name or by auto-detection.

`detect(path)` asks every importer how sure it is the file is its format (a cheap look at the
name and the first bytes) and takes the surest; `read_paths` walks files and folders and
yields each file's conversations with what was detected. Third-party importers register
under the `companion.plugins` entry-point group as `importer.<name>`, pointing at a class
with `name`, `description`, `detect(path)` and `read(path, options)` (see `base.Importer`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from companion.errors import CompanionError, InputFileError
from training.conversation import Conversation
from training.importers.base import BaseImporter, Importer, ReadOptions
from training.importers.chats import HaruhiJSONL, SceneScript, SillyTavernChat
from training.importers.kirikiri import KiriKiri
from training.importers.novel import Novel
from training.importers.qa import CommunityQA
from training.importers.qq import QQText
from training.importers.renpy import RenPy
from training.importers.sft import Alpaca, LlamaFactoryInfo, OpenAIMessages, ShareGPT
from training.importers.wechat import (
    ChatlogExport,
    MemoTraceAITXT,
    MemoTraceCSV,
    MemoTraceJSON,
    MemoTraceTXT,
    PyWxDumpCSV,
)

__all__ = ["BaseImporter", "Detection", "Importer", "ReadOptions", "detect", "get", "importers", "read_paths"]

BUILTIN: tuple[type[BaseImporter], ...] = (
    MemoTraceJSON,
    MemoTraceCSV,
    MemoTraceTXT,
    MemoTraceAITXT,
    PyWxDumpCSV,
    ChatlogExport,
    QQText,
    ShareGPT,
    OpenAIMessages,
    Alpaca,
    LlamaFactoryInfo,
    SillyTavernChat,
    HaruhiJSONL,
    SceneScript,
    RenPy,
    KiriKiri,
    Novel,
    CommunityQA,
)
MIN_CONFIDENCE = 0.3
BINARY_EXTENSIONS = {
    ".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".heic", ".mp4", ".mov", ".avi", ".mp3", ".wav", ".flac",
    ".ogg", ".opus", ".amr", ".silk", ".m4a", ".pdf", ".zip", ".rar", ".7z", ".gz", ".db", ".sqlite", ".dat", ".exe",
    ".dll", ".so", ".ttf", ".otf", ".woff", ".woff2", ".psd", ".safetensors", ".bin", ".pt", ".gguf", ".npy",
}  # fmt: skip
SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "SOURCE.txt", "README.md", "README_zh.md"}


@cache
def importers() -> tuple[Importer, ...]:
    found: list[Importer] = [cls() for cls in BUILTIN]
    names = {imp.name for imp in found}
    for ep in entry_points(group="companion.plugins"):
        kind, _, name = ep.name.partition(".")
        if kind != "importer" or name in names:
            continue
        try:
            found.append(ep.load()())
        except Exception as error:  # a broken third-party plugin must not break the built-ins
            raise CompanionError(f"importer plugin {ep.name} failed to load: {error}") from error
    return tuple(found)


def get(name: str) -> Importer:
    for importer in importers():
        if importer.name == name:
            return importer
    raise CompanionError(f"no importer named {name!r}; choose one of: {', '.join(i.name for i in importers())}")


@dataclass(frozen=True)
class Detection:
    path: Path
    importer: Importer
    confidence: float
    candidates: tuple[tuple[str, float], ...] = field(default=())

    def describe(self) -> str:
        others = ", ".join(f"{n} {c:.2f}" for n, c in self.candidates[1:3] if c > 0)
        return f"{self.importer.name} ({self.confidence:.2f}{'; also ' + others if others else ''})"


def detect(path: Path) -> Detection:
    if not path.exists():
        raise InputFileError(path, "no such file or folder")
    scores = []
    for importer in importers():
        try:
            score = float(importer.detect(path))
        except OSError:
            score = 0.0
        scores.append((importer, score))
    scores.sort(key=lambda item: -item[1])
    best, confidence = scores[0]
    candidates = tuple((imp.name, round(score, 2)) for imp, score in scores)
    if confidence < MIN_CONFIDENCE:
        tried = ", ".join(imp.name for imp, _ in scores)
        raise InputFileError(
            path, f"unknown format: no importer recognised it (tried {tried}); name one with --format NAME"
        )
    return Detection(path, best, confidence, candidates)


def expand(paths: Iterable[Path]) -> Iterator[tuple[Path, bool]]:
    """(file, named by the user) to import: folders are walked unless an importer claims the
    whole folder (a Ren'Py game)."""
    for path in paths:
        if not path.exists():
            raise InputFileError(path, "no such file or folder")
        if path.is_dir():
            claimers = [i for i in importers() if getattr(i, "claims_directories", False) and i.detect(path) >= 0.5]
            if claimers:
                yield path, True
                continue
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                media = child.suffix.lower() in BINARY_EXTENSIONS  # exports keep images and voice beside the text
                if child.is_file() and not hidden and not media and child.name not in SKIP_NAMES:
                    yield child, False
        else:
            yield path, True


def read_paths(
    paths: Iterable[Path],
    options: ReadOptions | None = None,
    fmt: str | None = None,
    *,
    skipped: list[tuple[Path, str]] | None = None,
) -> Iterator[tuple[Detection, Iterator[Conversation]]]:
    """Each file's detection and its conversations. Files found by walking a folder that no
    importer recognises are skipped (and listed in `skipped`); a file named by the user must
    be recognised."""
    options = options or ReadOptions()
    forced = get(fmt) if fmt else None
    for path, explicit in expand(paths):
        if forced is not None:
            detection = Detection(path, forced, 1.0, ((forced.name, 1.0),))
        else:
            try:
                detection = detect(path)
            except InputFileError as error:
                if explicit:
                    raise
                if skipped is not None:
                    skipped.append((path, error.problem))
                continue
        yield detection, detection.importer.read(path, options)
