"""TTS plugins: Piper (bundled voice, any voice folder), espeak-ng (Mandarin), GPT-SoVITS over HTTP,
Coqui's missing extra, routing by language."""

from __future__ import annotations

import http.server
import io
import json
import math
import shutil
import struct
import threading
import wave
from typing import ClassVar

import numpy as np
import pytest

from companion import plugins
from companion.config import PluginSpec
from companion.errors import CompanionError, InputFileError, MissingExtraError
from companion.voice.asr import Transcript
from companion.voice.audio import resample
from companion.voice.metrics import wer
from companion.voice.tts.base import VoiceRouter
from companion.voice.tts.espeak import number_to_chinese
from companion.voice.tts.gpt_sovits import GPTSoVITSSettings, GPTSoVITSTTS, WavStreamParser
from companion.voice.tts.piper import PiperSettings, PiperTTS


def speak(tts, text, language=None):
    chunks = list(tts.synthesize(text, language))
    assert chunks
    rate = chunks[0].sample_rate
    return np.concatenate([c.samples for c in chunks]), rate


@pytest.mark.slow
def test_piper_speaks_english_that_whisper_understands(piper, whisper):
    text = "The red bean buns come out again at three, so you are just in time."
    audio, rate = speak(piper, text)
    assert rate == 22050 and piper.languages() == {"en"}
    heard: Transcript = whisper.transcribe(resample(audio, rate, 16000), languages=["en"])
    assert wer(text, heard.text) <= 0.15


def test_piper_threads_sleep_between_sentences(piper, tmp_path):
    # spinning ONNX Runtime threads slowed the LLM writing her next sentence (foreground.py)
    options = piper.load().session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    broken.with_name("broken.onnx.json").write_text(
        piper.model_path.with_name(piper.model_path.name + ".json").read_text(encoding="utf-8"), encoding="utf-8"
    )
    with pytest.raises(InputFileError, match=r"broken\.onnx.*cannot load this Piper voice"):
        PiperTTS(PiperSettings(voice=str(broken), warm_up=True), piper.context).load()


@pytest.mark.slow
def test_piper_speed_and_voice_folder(piper, context, tmp_path):
    normal, _ = speak(piper, "Good morning, welcome to the bakery.")
    fast_tts = PiperTTS(PiperSettings(speed=1.5, warm_up=False), context)
    fast, _ = speak(fast_tts, "Good morning, welcome to the bakery.")
    assert len(fast) < 0.8 * len(normal)
    folder = tmp_path / "voice"
    folder.mkdir()
    for source in (piper.model_path, piper.model_path.with_name(piper.model_path.name + ".json")):
        (folder / source.name).symlink_to(source)
    assert PiperTTS(PiperSettings(voice=str(folder)), context).model_path.parent == folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no Piper voice"):
        PiperTTS(PiperSettings(voice=str(tmp_path / "empty")), context)
    with pytest.raises(CompanionError, match="zh_CN-huayan"):
        PiperTTS(PiperSettings(voice="zh_CN-huayan-medium"), context)


def test_espeak_speaks_mandarin(espeak):
    audio, rate = speak(espeak, "织女星是我用望舒找到的第一颗星星，花了1200块。", "zh")
    assert len(audio) / rate > 2.0
    assert espeak.voice_for("zh") == "cmn-latn-pinyin"
    assert espeak.languages() is None
    assert number_to_chinese("1200") == "一千二百"
    assert number_to_chinese("10086") == "一万零八十六"
    assert number_to_chinese("3.5") == "三点五"


def test_espeak_missing_program_says_how_to_install(monkeypatch):
    from companion.voice.tts.espeak import EspeakSettings, EspeakTTS

    tts = EspeakTTS(EspeakSettings(executable="no-such-espeak"))
    with pytest.raises(CompanionError, match="apt-get install espeak-ng"):
        list(tts.synthesize("hello"))


def test_router_sends_other_languages_to_the_fallback():
    class Voice:
        def __init__(self, langs):
            self.langs, self.said = langs, []

        def languages(self):
            return self.langs

        def synthesize(self, text, language=None):
            self.said.append((text, language))
            yield from ()

    english, anything = Voice({"en"}), Voice(None)
    router = VoiceRouter(english, anything, default_language="zh")
    list(router.synthesize("Hello there."))
    list(router.synthesize("你好呀。"))
    assert english.said == [("Hello there.", "en")]
    assert anything.said == [("你好呀。", "zh")]
    assert VoiceRouter(english, None).pick("你好")[0] is english


def test_coqui_without_its_extra_names_the_extra(context):
    spec = PluginSpec(plugin="coqui")
    try:
        import TTS  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r"companion\[coqui\]"):
            plugins.create("tts", spec, context)
    else:  # pragma: no cover - only where the extra is installed
        pytest.skip("coqui-tts is installed here")


# -- GPT-SoVITS: a real HTTP server on loopback that speaks api_v2's shape ------------------


def _tone(seconds: float, rate: int = 32000) -> bytes:
    n = int(seconds * rate)
    return b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 220 * i / rate))) for i in range(n))


class _SoVITSHandler(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        for field in ("text", "text_lang", "ref_audio_path", "prompt_lang"):
            if not body.get(field):
                return self._json(400, {"message": f"{field} is required"})
        pcm = _tone(0.5)
        if body.get("streaming_mode"):
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            header = io.BytesIO()
            with wave.open(header, "wb") as w:  # as api_v2 does: a header with no frames, then raw PCM
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(32000)
            for piece in [header.getvalue(), pcm[:1001], pcm[1001:20000], pcm[20000:]]:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        else:
            out = io.BytesIO()
            with wave.open(out, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(32000)
                w.writeframes(pcm)
            data = out.getvalue()
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def _json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def sovits_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SoVITSHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("streaming", [True, False])
def test_gpt_sovits_client(sovits_server, tmp_path, streaming):
    clip = tmp_path / "reference.wav"
    clip.write_bytes(b"RIFF")
    settings = GPTSoVITSSettings(
        base_url=sovits_server,
        reference_audio=str(clip),
        reference_text="希望你以后能够做的比我还好呦。",
        streaming_mode=streaming,
        speed=1.2,
    )
    tts = GPTSoVITSTTS(settings)
    chunks = list(tts.synthesize("Hello there, nice to meet you.", "en"))
    audio = np.concatenate([c.samples for c in chunks])
    assert {c.sample_rate for c in chunks} == {32000}
    assert len(audio) == 16000
    assert np.abs(audio).max() == pytest.approx(8000 / 32768, abs=1e-3)
    sent = _SoVITSHandler.requests[-1]
    assert sent["ref_audio_path"] == str(clip.resolve())
    assert (sent["text_lang"], sent["prompt_lang"], sent["prompt_text"]) == ("en", "zh", settings.reference_text)
    assert sent["speed_factor"] == 1.2 and sent["text_split_method"] == "cut0"
    if streaming:
        assert len(chunks) >= 2  # streamed pieces, not one blob


def test_gpt_sovits_errors(sovits_server, tmp_path):
    with pytest.raises(CompanionError, match="reference clip"):
        GPTSoVITSTTS(GPTSoVITSSettings(base_url=sovits_server))
    remote = GPTSoVITSTTS(GPTSoVITSSettings(base_url=sovits_server, ref_audio_path="/srv/ref.wav"))
    body = remote.request_body("你好", None)
    assert body["ref_audio_path"] == "/srv/ref.wav" and body["text_lang"] == "zh"
    body_missing = GPTSoVITSTTS(GPTSoVITSSettings(base_url=sovits_server, ref_audio_path="/srv/ref.wav"))
    body_missing.request_body = lambda text, language: {"text": text}  # the server answers 400 + message
    with pytest.raises(CompanionError, match="text_lang is required"):
        list(body_missing.synthesize("hi"))
    down = GPTSoVITSTTS(GPTSoVITSSettings(base_url="http://127.0.0.1:9", ref_audio_path="/srv/ref.wav"))
    with pytest.raises(CompanionError, match=r"api_v2\.py"):
        list(down.synthesize("hi"))


def test_wav_stream_parser_handles_any_split():
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(np.arange(2000, dtype="<i2").tobytes())
    data = out.getvalue()
    parser = WavStreamParser(min_chunk_ms=10)
    pieces = [data[i : i + 7] for i in range(0, len(data), 7)]
    chunks = list(parser.feed_all(iter(pieces)))
    audio = np.concatenate([c.samples for c in chunks])
    assert chunks[0].sample_rate == 24000 and len(audio) == 1000
    with pytest.raises(CompanionError, match="not WAV"):
        list(WavStreamParser().feed_all(iter([b"OggS" + b"\0" * 20])))


def test_shutil_which_is_used_for_espeak():
    assert shutil.which("sh")
