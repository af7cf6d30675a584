"""Frontend fixtures: test characters on the session's real model, speech that speaks tones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from companion.character import new_character
from companion.config import Settings
from companion.frontends.hub import CompanionHub
from companion.frontends.speech import Speech
from companion.session import Companion, _shared, build_companion
from tests.frontends.scripted import ScriptedLLM, tone_processor


class ToneSpeech(Speech):
    """Speech that 'speaks' a tone per sentence: the audio path without the voice extra."""

    @property
    def tts_available(self) -> bool:
        return True

    def speech_processors(self, companion: Companion):
        return [*self.text_processors(companion), tone_processor]


@pytest.fixture
def frontend_settings(settings: Settings, tmp_path: Path) -> Settings:
    chars = tmp_path / "chars"
    tester = new_character(chars, "tester", "Tester")
    card = tester.card
    settings_c = tester.settings.model_copy(update={"expressions": {"joy": "smile", "sad": "tears"}, "language": "en"})
    tester.save_card(card.with_companion(settings_c))
    scripted = new_character(chars, "scripted", "Scripty")
    scripted.save_card(scripted.card.with_companion(settings_c))
    settings.characters_dir = chars
    settings.serve.default_character = "tester"
    return settings


@pytest.fixture
def scripted_llm() -> ScriptedLLM:
    return ScriptedLLM()


@pytest.fixture
def make_hub(frontend_settings: Settings, local_llm, scripted_llm) -> Callable[..., CompanionHub]:
    """Hubs over 'tester' (the real embedded model) and 'scripted' (a fixed reply)."""

    def factory(character_id: str, settings: Settings) -> Companion:
        # Whatever build_companion wires to the LLM gets the session's loaded model, not a new one.
        _shared[("llm", settings.llm.model_dump_json(), str(settings.data_dir))] = local_llm
        companion = build_companion(character_id, settings)
        companion.llm = scripted_llm if character_id == "scripted" else local_llm
        return companion

    def make(speech: Speech | None = None, settings: Settings | None = None) -> CompanionHub:
        s = settings or frontend_settings
        return CompanionHub(s, characters=["tester", "scripted"], factory=factory, speech=speech)

    return make


@pytest.fixture
def hub(make_hub) -> CompanionHub:
    return make_hub()
