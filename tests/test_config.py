"""Settings come from defaults, a TOML file, the environment and flags, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from companion.config import PluginSpec, load_settings
from companion.errors import CompanionError, InputFileError, PluginNotFoundError
from companion.plugins import PluginContext, create, plugin_class, require


def test_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'user_name = "FromFile"\nmax_new_tokens = 50\n'
        'llm = { plugin = "openai", base_url = "http://127.0.0.1:1234/v1", model = "mochi" }\n',
        encoding="utf-8",
    )
    settings = load_settings(config)
    assert settings.user_name == "FromFile" and settings.max_new_tokens == 50
    assert settings.llm.plugin == "openai" and settings.llm.options["model"] == "mochi"

    monkeypatch.setenv("COMPANION_MAX_NEW_TOKENS", "70")
    monkeypatch.setenv("COMPANION_USER_NAME", "FromEnv")
    settings = load_settings(config, user_name="FromFlag", data_dir=None)
    assert (settings.user_name, settings.max_new_tokens) == ("FromFlag", 70)


def test_a_table_without_plugin_sets_the_default_plugins_options(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[llm]\nmodel = "smollm2-135m"\n', encoding="utf-8")
    settings = load_settings(config)
    assert settings.llm.plugin == "llamacpp" and settings.llm.options == {"model": "smollm2-135m"}
    monkeypatch.setenv("COMPANION_LLM__CACHED_CONVERSATIONS_MB", "130")  # merged into the file's table
    assert load_settings(config).llm.options == {"model": "smollm2-135m", "cached_conversations_mb": "130"}
    config.write_text('llm = { plugin = "openai", model = "mochi" }\n', encoding="utf-8")
    assert load_settings(config).llm.options == {"model": "mochi", "cached_conversations_mb": "130"}
    monkeypatch.setenv("COMPANION_MAX_NEW_TOKENS", "many")
    with pytest.raises(CompanionError, match=r"(?s)config\.toml, COMPANION_\* environment.*max_new_tokens"):
        load_settings(config)


def test_bad_config_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("user_name = \n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"broken\.toml: invalid TOML"):
        load_settings(config)
    with pytest.raises(InputFileError, match="config file not found"):
        load_settings(tmp_path / "missing.toml")


def test_plugin_spec_merge() -> None:
    base = PluginSpec(plugin="openai", base_url="http://x/v1", model="a")
    assert base.merged({"model": "mochi", "plugin": None}).options == {"base_url": "http://x/v1", "model": "mochi"}
    assert base.merged({"plugin": "local", "model": "smollm2-135m"}).options == {"model": "smollm2-135m"}


def test_plugins_by_name_and_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PluginNotFoundError, match=r"no llm plugin named 'nope' \(available: .*local"):
        plugin_class("llm", "nope")
    # A package:Class reference works without an entry point.
    assert plugin_class("llm", "companion.llm.local:LocalLLM").__name__ == "LocalLLM"
    with pytest.raises(CompanionError, match="settings for llm plugin 'local'"):
        create("llm", PluginSpec(plugin="local", threads="many"), PluginContext(tmp_path))
    with pytest.raises(CompanionError, match=r"pip install 'companion\[voice\]'"):
        require("surely_not_installed_module", feature="Speech recognition", extra="voice")
