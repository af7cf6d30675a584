"""`tts.coqui`: Coqui TTS (the `TTS` package: VITS, XTTS v2, YourTTS...), an optional extra for users
with a GPU: `pip install 'companion[coqui]'`.

Not part of the default install: `import TTS` needs torchaudio and torchcodec, whose PyPI wheels
are CUDA builds (they do not load on a CPU-only torch), and XTTS weights are a 1.8 GB download.

Settings: `model` (a model name such as "tts_models/multilingual/multi-dataset/xtts_v2", or a
fine-tuned checkpoint folder with config.json), `reference_audio` (speaker clip for XTTS/YourTTS
voice cloning: the character's `voice/reference.wav`), `language`, `speed`, `device`.

Fine-tuning a character voice (XTTS v2, on a GPU, ~10-30 minutes of clean speech):
1. Cut the character's lines into 3-12 s clips (`voice/clips/*.wav`, 22.05 kHz mono) with a
   `metadata.csv` in LJSpeech layout (`file_id|text|text`); `companion voice` can transcribe
   clips for you (`--input clips/ --output transcripts/`) to draft the texts, then fix them by hand.
2. `pip install 'companion[coqui]'` on the GPU machine, then run Coqui's recipe
   `recipes/ljspeech/xtts_v2/train_gpt_xtts.py` with `config_dataset.path` pointing at the clips
   folder, `language` set to the character's language, and `BATCH_SIZE`/`GRAD_ACUMM_STEPS` sized
   to the GPU (3 x 84 fits 24 GB). A few epochs (until eval loss stops falling) is enough.
3. Copy the run folder's `best_model.pth`, `config.json`, `vocab.json` and `speakers_xtts.pth`
   into the character's `voice/xtts/`, and set in card.yaml:
   `voice: {plugin: coqui, model: voice/xtts, reference_audio: voice/reference.wav, language: zh}`.
A plain VITS voice trains the same way with `recipes/ljspeech/vits_tts/train_vits.py`; it needs
more data (1-2 h) but runs ~2x faster than XTTS at inference.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from companion.errors import CompanionError
from companion.plugins import PluginContext, require
from companion.voice.audio import Audio
from companion.voice.text import base_language
from companion.voice.tts.base import TTSSettings


class CoquiSettings(TTSSettings):
    model: str = "tts_models/multilingual/multi-dataset/xtts_v2"
    device: str = "auto"
    speaker: str | None = None


class CoquiTTS:
    Settings = CoquiSettings

    def __init__(self, settings: CoquiSettings, context: PluginContext) -> None:
        self.settings = settings
        self.context = context
        require("TTS", feature="Speech synthesis with Coqui TTS", extra="coqui")
        self._tts = None
        self._lock = threading.Lock()

    def load(self):
        with self._lock:
            if self._tts is None:
                from TTS.api import TTS as CoquiAPI

                device = self.settings.device
                if device == "auto":
                    import torch

                    device = "cuda" if torch.cuda.is_available() else "cpu"
                model = Path(self.settings.model).expanduser()
                try:
                    if model.is_dir():
                        checkpoint = next(iter(sorted(model.glob("*.pth"))), None)
                        self._tts = CoquiAPI(
                            model_path=str(model if checkpoint is None else checkpoint),
                            config_path=str(model / "config.json"),
                        ).to(device)
                    else:
                        self._tts = CoquiAPI(self.settings.model).to(device)
                except Exception as error:  # Coqui raises many kinds
                    raise CompanionError(f"cannot load Coqui model {self.settings.model!r}: {error}") from None
        return self._tts

    def languages(self) -> set[str] | None:
        language = base_language(self.settings.language)
        tts = self._tts
        if tts is not None and getattr(tts, "is_multi_lingual", False):
            return {base_language(x) or x for x in (tts.languages or [])} or None
        return {language} if language else None

    def synthesize(self, text: str, language: str | None = None) -> Iterator[Audio]:
        tts = self.load()
        kwargs = {}
        if getattr(tts, "is_multi_lingual", False):
            lang = base_language(language) or base_language(self.settings.language) or "en"
            kwargs["language"] = "zh-cn" if lang == "zh" else lang
        if self.settings.reference_audio:
            kwargs["speaker_wav"] = self.settings.reference_audio
        elif self.settings.speaker:
            kwargs["speaker"] = self.settings.speaker
        samples = np.asarray(tts.tts(text=text, speed=self.settings.speed, **kwargs), dtype=np.float32)
        yield Audio(samples, int(tts.synthesizer.output_sample_rate))
