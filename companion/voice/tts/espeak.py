"""`tts.espeak-ng`: the no-download fallback for languages without a voice (robotic, intelligible).

Runs the `espeak-ng` program (Debian/Ubuntu: `apt-get install espeak-ng`; macOS: `brew install
espeak-ng`). Mandarin uses the `cmn-latn-pinyin` voice (plain `cmn` reads tone digits aloud);
espeak-ng 1.51+ reads hanzi with it directly, which Whisper understands better than our own
pinyin (measured); `pinyin: true` converts hanzi with pypinyin first, for espeak builds without
the Mandarin dictionary. Numbers become Chinese numerals either way.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

from companion.errors import CompanionError
from companion.foreground import FOREGROUND
from companion.plugins import PluginContext
from companion.scripts import HAN_CHAR
from companion.voice.audio import Audio, decode_audio
from companion.voice.text import base_language, detect_language
from companion.voice.tts.base import TTSSettings

DEFAULT_VOICES = {"zh": "cmn-latn-pinyin", "en": "en-us", "ja": "ja", "ko": "ko", "yue": "yue"}
INSTALL_HINT = "install espeak-ng (Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng)"
_PUNCT = str.maketrans({"，": ", ", "。": ". ", "！": "! ", "？": "? ", "；": "; ", "：": ": ", "、": ", ", "～": ". "})


class EspeakSettings(TTSSettings):
    words_per_minute: int = 165
    pitch: int | None = None
    executable: str = "espeak-ng"
    pinyin: bool = False


class EspeakTTS:
    Settings = EspeakSettings

    def __init__(self, settings: EspeakSettings, context: PluginContext | None = None) -> None:
        self.settings = settings
        self.executable = shutil.which(settings.executable)

    def languages(self) -> set[str] | None:
        return None

    def voice_for(self, language: str | None) -> str:
        if self.settings.voice:
            return self.settings.voice
        code = base_language(language) or base_language(self.settings.language) or "en"
        return DEFAULT_VOICES.get(code, code)

    def synthesize(self, text: str, language: str | None = None) -> Iterator[Audio]:
        if self.executable is None:
            raise CompanionError(f"the espeak-ng TTS needs the espeak-ng program: {INSTALL_HINT}")
        language = language or self.settings.language or detect_language(text)
        voice = self.voice_for(language)
        spoken = text
        if voice.startswith("cmn"):
            spoken = to_pinyin(text) if self.settings.pinyin else chinese_numbers(text)
        speed = max(80, int(self.settings.words_per_minute * (self.settings.speed or 1.0)))
        command = [self.executable, "-v", voice, "-s", str(speed), "--stdout"]
        if self.settings.pitch is not None:
            command += ["-p", str(self.settings.pitch)]
        try:
            with FOREGROUND.hold():
                result = subprocess.run([*command, "--", spoken], capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise CompanionError(f"espeak-ng failed: {error}") from None
        if result.returncode != 0 or not result.stdout:
            message = result.stderr.decode("utf-8", "replace").strip() or f"exit code {result.returncode}"
            raise CompanionError(f"espeak-ng could not speak with voice {voice!r}: {message}")
        yield decode_audio(result.stdout, sample_rate=None)


_DIGITS = "零一二三四五六七八九"


def number_to_chinese(number: str) -> str:
    """'1200' -> '一千二百', '3.5' -> '三点五', '2024' read as a number (一 千 ...)."""
    whole, _, frac = number.partition(".")
    value = int(whole) if whole else 0
    out = _integer_to_chinese(value)
    if frac:
        out += "点" + "".join(_DIGITS[int(d)] for d in frac)
    return out


def _integer_to_chinese(value: int) -> str:
    if value == 0:
        return "零"
    if value >= 10**8:
        return "".join(_DIGITS[int(d)] for d in str(value))
    units = [(10**4, "万"), (1000, "千"), (100, "百"), (10, "十")]
    out, zero = "", False
    for size, name in units:
        digit, value = divmod(value, size)
        if size == 10**4:
            if digit:
                out += _integer_to_chinese(digit) + name
            continue
        if digit:
            if zero and out:
                out += "零"
            out += ("" if (digit == 1 and size == 10 and not out) else _DIGITS[digit]) + name
            zero = False
        elif out:
            zero = True
    if value:
        if zero and out:
            out += "零"
        out += _DIGITS[value]
    return out


def chinese_numbers(text: str) -> str:
    if not HAN_CHAR.search(text):
        return text
    return re.sub(r"\d+(?:\.\d+)?", lambda m: number_to_chinese(m.group()), text)


def to_pinyin(text: str) -> str:
    """Hanzi to tone-numbered pinyin for espeak-ng's cmn-latn-pinyin voice; other text kept."""
    chinese = HAN_CHAR.search(text) is not None
    text = re.sub(r"\d+(?:\.\d+)?", lambda m: number_to_chinese(m.group()) if chinese else m.group(), text)
    if not HAN_CHAR.search(text):
        return text.translate(_PUNCT)
    try:
        from pypinyin import Style, lazy_pinyin
    except ImportError:
        raise CompanionError(
            "speaking Chinese with espeak-ng needs the 'pypinyin' package. "
            "Install it with: pip install 'companion[voice]'"
        ) from None
    syllables = lazy_pinyin(
        text, style=Style.TONE3, neutral_tone_with_five=True, v_to_u=True, errors=lambda chars: [chars]
    )
    return re.sub(r"\s+", " ", " ".join(syllables).translate(_PUNCT)).strip()
