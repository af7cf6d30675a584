"""The character card: a superset of Character Card V3, our settings under `extensions.companion`.

Every model keeps unknown keys (`extra="allow"`) so that a card from another tool survives a
round trip through our folder unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

COMPANION_EXTENSION = "companion"


class _Open(BaseModel):
    """Keeps unknown keys, so foreign fields survive import and export."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class LorebookEntry(_Open):
    keys: list[str] = Field(default_factory=list)
    content: str = ""
    extensions: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    insertion_order: int = 100
    case_sensitive: bool | None = None
    use_regex: bool = False
    constant: bool | None = None
    name: str | None = None
    priority: int | None = None
    id: int | str | None = None
    comment: str | None = None
    selective: bool | None = None
    secondary_keys: list[str] = Field(default_factory=list)
    position: Literal["before_char", "after_char"] | None = None


class Lorebook(_Open):
    name: str | None = None
    description: str | None = None
    scan_depth: int | None = None
    token_budget: int | None = None
    recursive_scanning: bool | None = None
    extensions: dict[str, Any] = Field(default_factory=dict)
    entries: list[LorebookEntry] = Field(default_factory=list)


class Asset(_Open):
    type: str
    uri: str
    name: str
    ext: str


class PluginChoice(_Open):
    """A plugin picked by name, with its settings as extra keys: `{plugin: openai, model: mochi}`."""

    plugin: str | None = None


class VoiceSettings(PluginChoice):
    voice: str | None = None
    speed: float = 1.0
    language: str | None = None
    reference_audio: str | None = None
    reference_text: str | None = None


class CompanionSettings(_Open):
    """Our own settings, stored in the card under `extensions.companion`."""

    language: str = "zh"
    llm: PluginChoice = Field(default_factory=PluginChoice)
    adapter: str = "adapter"
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    expressions: dict[str, str | int] = Field(default_factory=dict)
    live2d_model: str | None = None


class CardData(_Open):
    """The `data` object of a V3 card; also the layout of `card.yaml`."""

    name: str
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    creator: str = ""
    character_version: str = ""
    mes_example: str = ""
    extensions: dict[str, Any] = Field(default_factory=dict)
    system_prompt: str = ""
    post_history_instructions: str = ""
    first_mes: str = ""
    alternate_greetings: list[str] = Field(default_factory=list)
    personality: str = ""
    scenario: str = ""
    creator_notes: str = ""
    character_book: Lorebook | None = None
    # V3 additions
    assets: list[Asset] | None = None
    nickname: str | None = None
    creator_notes_multilingual: dict[str, str] | None = None
    source: list[str] | None = None
    group_only_greetings: list[str] = Field(default_factory=list)
    creation_date: int | None = None
    modification_date: int | None = None

    @property
    def companion(self) -> CompanionSettings:
        return CompanionSettings.model_validate(self.extensions.get(COMPANION_EXTENSION) or {})

    def with_companion(self, settings: CompanionSettings) -> CardData:
        extensions = dict(self.extensions)
        extensions[COMPANION_EXTENSION] = settings.model_dump(exclude_none=True)
        return self.model_copy(update={"extensions": extensions})

    @property
    def display_name(self) -> str:
        return self.nickname or self.name

    def to_plain(self) -> dict[str, Any]:
        """The card as JSON-ready data: exactly the fields that were set (imported or written),
        so a foreign card comes back out as it came in."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)
