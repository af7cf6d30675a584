"""What an importer is: a name, `detect(path) -> confidence` and `read(path, options)`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from training.conversation import Conversation


@dataclass(frozen=True)
class ReadOptions:
    """Settings an importer may use; each ignores what does not apply to it."""

    lang: str | None = None  # a translation to read instead of the original (Ren'Py tl/ folders)
    names: tuple[str, ...] = ()  # known speaker names (novels: help attribution)
    variables: dict[str, str] = field(default_factory=dict)  # {{name}} -> value (LLaMA-Factory identity.json)
    datasets: tuple[str, ...] = ()  # which entries of a dataset_info.json to read (default: all local files)


@runtime_checkable
class Importer(Protocol):
    name: str
    description: str

    def detect(self, path: Path) -> float:
        """0.0 (not mine) .. 1.0 (certainly mine); must be cheap: look at the name and the first bytes."""
        ...

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]: ...


class BaseImporter:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    extensions: ClassVar[tuple[str, ...]] = ()
    claims_directories: ClassVar[bool] = False

    def detect(self, path: Path) -> float:
        raise NotImplementedError

    def read(self, path: Path, options: ReadOptions) -> Iterator[Conversation]:
        raise NotImplementedError

    def has_extension(self, path: Path) -> bool:
        return path.name.lower().endswith(self.extensions)

    def __repr__(self) -> str:
        return f"<importer {self.name}>"


def source_label(path: Path, where: int | str | None = None) -> str:
    return f"{path.name}:{where}" if where is not None else path.name
