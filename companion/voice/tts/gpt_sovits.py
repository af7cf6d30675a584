"""`tts.gpt-sovits`: a client for a GPT-SoVITS server (`api_v2.py`), the voice-cloning TTS
companion users run locally or on a GPU box.

The character's `voice/` folder holds the reference clip and its text (`reference_audio`,
`reference_text` in the card). The server reads the clip from its own disk: for a server on
this machine the absolute path is sent; for a remote one set `ref_audio_path` to the path
there. Audio streams back (`streaming_mode`): a WAV header, then 16-bit PCM as it is made.

Server: `python api_v2.py -a 127.0.0.1 -p 9880 -c GPT_SoVITS/configs/tts_infer.yaml`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from companion.errors import CompanionError
from companion.plugins import PluginContext
from companion.voice.audio import Audio, from_int16
from companion.voice.text import base_language, detect_language
from companion.voice.tts.base import TTSSettings

LANGUAGES = {"zh", "en", "ja", "ko", "yue"}


class GPTSoVITSSettings(TTSSettings):
    base_url: str = "http://127.0.0.1:9880"
    ref_audio_path: str | None = None
    """The reference clip's path on the server (default: reference_audio, for a local server)."""
    prompt_lang: str | None = None
    """Language of reference_text (default: guessed from it)."""
    streaming_mode: bool | int = True
    text_split_method: str = "cut0"
    """We send one sentence at a time already; cut0 keeps it whole."""
    media_type: str = "wav"
    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    timeout_s: float = 60.0
    min_chunk_ms: int = 100
    """Yield streamed audio in pieces of at least this length."""


class GPTSoVITSTTS:
    Settings = GPTSoVITSSettings

    def __init__(self, settings: GPTSoVITSSettings, context: PluginContext | None = None) -> None:
        self.settings = settings
        reference = settings.ref_audio_path or settings.reference_audio
        if not reference:
            raise CompanionError(
                "the gpt-sovits voice needs a reference clip: put one in the character's voice/ folder and set "
                "voice.reference_audio (and voice.reference_text, what is said in it) in card.yaml"
            )
        if not settings.ref_audio_path and not Path(reference).is_file():
            raise CompanionError(f"gpt-sovits reference clip not found: {reference}")
        self.reference = str(Path(reference).resolve()) if not settings.ref_audio_path else reference
        self.client = httpx.Client(base_url=settings.base_url, timeout=httpx.Timeout(settings.timeout_s, connect=5.0))

    def languages(self) -> set[str] | None:
        return LANGUAGES

    def request_body(self, text: str, language: str | None) -> dict:
        s = self.settings
        prompt_text = s.reference_text or ""
        return {
            "text": text,
            "text_lang": base_language(language) or detect_language(text),
            "ref_audio_path": self.reference,
            "prompt_text": prompt_text,
            "prompt_lang": base_language(s.prompt_lang) or detect_language(prompt_text, default="zh"),
            "text_split_method": s.text_split_method,
            "batch_size": 1,
            "speed_factor": s.speed,
            "media_type": s.media_type,
            "streaming_mode": s.streaming_mode,
            "top_k": s.top_k,
            "top_p": s.top_p,
            "temperature": s.temperature,
        }

    def synthesize(self, text: str, language: str | None = None) -> Iterator[Audio]:
        body = self.request_body(text, language)
        try:
            with self.client.stream("POST", "/tts", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise CompanionError(f"GPT-SoVITS server at {self.settings.base_url}: {_error_message(response)}")
                yield from WavStreamParser(self.settings.min_chunk_ms).feed_all(response.iter_bytes())
        except httpx.HTTPError as error:
            raise CompanionError(
                f"cannot reach the GPT-SoVITS server at {self.settings.base_url} ({error}). Start it with "
                "`python api_v2.py -a 127.0.0.1 -p 9880` in the GPT-SoVITS folder, or set tts.base_url"
            ) from None

    def close(self) -> None:
        self.client.close()


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.json())
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"


class WavStreamParser:
    """PCM out of a streamed WAV: a header (its data size may be 0 or wrong, as streaming servers
    write it before they know the length), then 16-bit samples split at any byte."""

    def __init__(self, min_chunk_ms: int = 100) -> None:
        self.min_chunk_ms = min_chunk_ms
        self.buffer = b""
        self.rate: int | None = None
        self.channels = 1
        self.width = 2

    def feed_all(self, pieces: Iterator[bytes]) -> Iterator[Audio]:
        for piece in pieces:
            yield from self.feed(piece)
        yield from self.finish()

    def feed(self, piece: bytes) -> Iterator[Audio]:
        self.buffer += piece
        if self.rate is None and not self._read_header():
            return
        assert self.rate is not None
        frame = self.width * self.channels
        need = max(frame, int(self.rate * self.min_chunk_ms / 1000) * frame)
        if len(self.buffer) >= need:
            usable = len(self.buffer) - len(self.buffer) % frame
            data, self.buffer = self.buffer[:usable], self.buffer[usable:]
            yield self._audio(data)

    def finish(self) -> Iterator[Audio]:
        if self.rate is None:
            if self.buffer:
                raise CompanionError("GPT-SoVITS server sent audio that is not WAV (set media_type: wav)")
            return
        frame = self.width * self.channels
        usable = len(self.buffer) - len(self.buffer) % frame
        if usable:
            yield self._audio(self.buffer[:usable])
        self.buffer = b""

    def _audio(self, data: bytes) -> Audio:
        if self.width != 2:
            raise CompanionError(f"GPT-SoVITS sent {self.width * 8}-bit audio; expected 16-bit")
        samples = from_int16(data)
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1).astype(np.float32)
        return Audio(samples, self.rate or 32000)

    def _read_header(self) -> bool:
        data = self.buffer
        if len(data) < 12:
            return False
        if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
            raise CompanionError("GPT-SoVITS server sent audio that is not WAV (set media_type: wav)")
        pos = 12
        while pos + 8 <= len(data):
            chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
            if chunk_id == b"fmt ":
                if pos + 8 + 16 > len(data):
                    return False
                _fmt, self.channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[pos + 8 : pos + 24])
                self._rate_pending = rate
                self.width = bits // 8
                pos += 8 + size + (size & 1)
            elif chunk_id == b"data":
                self.rate = getattr(self, "_rate_pending", None) or 32000
                self.buffer = data[pos + 8 :]
                return True
            else:
                pos += 8 + size + (size & 1)
        return False
