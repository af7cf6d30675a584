"""faster-whisper with the embedded Whisper base: accuracy on real speech, language restriction."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from companion.errors import CompanionError
from companion.voice.asr import FasterWhisperASR, FasterWhisperSettings, _loops, _repeated_whole, embedded_whisper_dir
from companion.voice.audio import decode_audio
from companion.voice.metrics import cer, wer
from companion.voice.vad import Endpointer, SileroVAD

pytestmark = pytest.mark.slow
JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def spoken(espeak, text: str, language: str) -> np.ndarray:
    """`text` read by the espeak-ng voice plugin, at Whisper's 16 kHz."""
    return np.concatenate([a.resampled(16000).samples for a in espeak.synthesize(text, language)])


def test_embedded_model_is_joined_once(model_data_dir, whisper):
    folder = embedded_whisper_dir(model_data_dir)
    assert (folder / "model.bin").stat().st_size > 140_000_000
    stamp = (folder / "model.bin").stat().st_mtime_ns
    assert embedded_whisper_dir(model_data_dir) == folder
    assert (folder / "model.bin").stat().st_mtime_ns == stamp


def test_english_is_transcribed_exactly(whisper, speech_dir):
    jfk = decode_audio(speech_dir / "jfk.flac").samples
    transcript = whisper.transcribe(jfk, languages=["en"])
    assert wer(JFK, transcript.text) <= 0.05
    assert transcript.language == "en"


def test_detection_is_restricted_to_the_configured_languages(whisper, speech_dir):
    chinese = decode_audio(speech_dir / "aishell-BAC009S0724W0121.wav").samples
    english = decode_audio(speech_dir / "fw_stereo_diarization.wav", channel=1).samples
    zh = whisper.transcribe(chinese, languages=["zh", "en"])
    en = whisper.transcribe(english, languages=["zh-CN", "en_US"])
    assert (zh.language, en.language) == ("zh", "en")
    assert cer("广州市房地产中介协会分析", zh.text) <= 0.2  # Whisper base; bigger models do better
    assert "廣" not in zh.text  # simplified script
    assert wer("The horizon seems extremely distant.", en.text) <= 0.05
    forced = whisper.transcribe(english, languages=["zh"])  # one language: no detection at all
    assert forced.language == "zh"


def test_silence_gives_an_empty_transcript(whisper):
    assert whisper.transcribe(np.zeros(16000 * 2, dtype=np.float32)).empty
    assert whisper.transcribe(np.zeros(100, dtype=np.float32)).empty


def test_other_models_by_path_or_name(context, tmp_path):
    with pytest.raises(CompanionError, match="not a CTranslate2"):
        FasterWhisperASR(FasterWhisperSettings(model=str(tmp_path)), context).load()


def test_short_window_encodes_the_speech_plus_padding(context, jfk):
    """window_padding_s: the encoder sees the audio plus the padding (not Whisper's 30 s), and
    clean English stays exact; audio longer than a window keeps the full windows."""
    asr = FasterWhisperASR(FasterWhisperSettings(window_padding_s=2.0), context)
    model = asr.load()
    assert asr._window_frames(model, 3.0) == 500  # (3 s + 2 s) at 100 mel frames per second
    assert asr._window_frames(model, 29.0) == model.feature_extractor.nb_max_frames
    assert asr._window_frames(model, 31.0) is None
    assert FasterWhisperASR(FasterWhisperSettings(window_padding_s=None), context)._window_frames(model, 3.0) is None
    assert wer(JFK, asr.transcribe(jfk, languages=["en", "zh"]).text) <= 0.05
    assert "encode" not in model.__dict__  # the shortened encoder does not outlive the call


@pytest.mark.parametrize(
    ("text", "loops"),
    [
        # what Whisper wrote for espeak-ng clips on a speech + 2 s window (bench/voice_latency.py --asr-sweep)
        ("Are you scared under storms? Are you scared under storms?", True),
        ("Tell me about your tailless crop. Tell me about your tailles", True),
        ("早上7点了,约组统统统统统统统,海统统", True),
        # real transcripts
        (JFK, False),
        ("IT WAS THE FIRST GREAT SORROW OF HIS LIFE IT WAS NOT SO MUCH THE LOSS OF THE COTTON ITSELF", False),
        ("广州市房地产中介协会分析", False),
        ("哈哈哈, no no no, very very very good", False),
    ],
)
def test_loops_of_a_short_window_are_recognised(text, loops):
    assert _loops(text) is loops


@pytest.mark.parametrize(
    ("text", "once"),
    [
        # what Whisper base wrote for espeak-ng questions on a speech + 3 s window
        ("Which star do you like best? Which star do you like best?", "Which star do you like best?"),
        (" Tell me about my telly scope.  Tell me about my telly scope. Tell me", "Tell me about my telly scope."),
        ("广州市房地产中介协会分析广州市房地产中介协会分析", "广州市房地产中介协会分析"),
        # not one utterance written over again
        ("早上7点了,约组统统统统统统统,海统统", None),
        ("no no no no", None),  # too short to be a whole utterance repeated
        (JFK, None),
    ],
)
def test_an_utterance_written_twice_is_kept_once(text, once):
    assert _repeated_whole(text) == once


def test_a_question_written_twice_on_the_short_window_is_kept_once(context, espeak):
    """espeak-ng's "What is the name of your cat?" as the endpointer cuts it at the pause: Whisper
    base writes it twice on the speech + 3 s window; decoding again on the full window (the old
    way) cost ~0.9 s and heard "What is the aim of your cat?"."""
    question = spoken(espeak, "What is the name of your cat?", "en")
    stream = np.concatenate([np.zeros(8000, np.float32), question, np.zeros(16000, np.float32)])
    endpointer = Endpointer(SileroVAD())
    pauses = [e for i in range(0, len(stream), 320) for e in endpointer.feed(stream[i : i + 320]) if e.kind == "pause"]
    asr = FasterWhisperASR(FasterWhisperSettings(window_padding_s=3.0), context)
    heard = asr.transcribe(pauses[0].audio, languages=["zh", "en"])
    assert heard.text == "What is the name of your cat?"
    assert heard.passes == 1
    assert [s["text"] for s in heard.segments] == ["What is the name of your cat?"]  # one copy there too


@pytest.fixture(scope="module")
def jfk_ask(jfk) -> np.ndarray:
    """JFK's "ask" before the pause inside "ask not", as an endpointer pausing at 96 ms cuts it:
    on the speech + 3 s window Whisper base doubts what it hears (a log-probability below -1)."""
    endpointer = Endpointer(SileroVAD(), pause_ms=96)
    stream = np.concatenate([jfk, np.zeros(16000, np.float32)])
    pauses = [e for i in range(0, len(stream), 320) for e in endpointer.feed(stream[i : i + 320]) if e.kind == "pause"]
    return next(p.audio for p in pauses if 3.6 < p.time < 3.9)


@pytest.fixture(scope="module")
def robotic_mandarin(espeak) -> np.ndarray:
    """espeak-ng reading a Mandarin sentence: on the short window Whisper base doubts its (poor)
    transcript without writing it twice, so it is decoded again on the full window."""
    return spoken(espeak, "早上七点那批月兔红豆包刚出炉，还烫手呢。", "zh")


def test_a_doubtful_short_window_is_decoded_again_on_the_full_window(context, robotic_mandarin, jfk_ask):
    asr = FasterWhisperASR(FasterWhisperSettings(window_padding_s=3.0), context)
    assert asr.transcribe(robotic_mandarin, languages=["zh", "en"]).passes == 2  # short pass, then 30 s window
    whole = FasterWhisperASR(FasterWhisperSettings(window_padding_s=None), context)
    assert whole.transcribe(robotic_mandarin, languages=["zh", "en"]).passes == 1  # never decoded twice
    # About a second of speech: the full window cost ~0.8 s and was never better; the first result stays
    assert len(jfk_ask) < 16000 * 1.5 and asr.transcribe(jfk_ask, languages=["en"]).passes == 1


def test_a_transcription_nobody_wants_stops_early(context, robotic_mandarin):
    """The live loop gives up a pause's transcription when the user goes on: one still waiting for
    the model returns at once, and one under way skips the second, full-window decode (~0.8 s)."""
    asr = FasterWhisperASR(FasterWhisperSettings(window_padding_s=3.0), context)
    given_up = threading.Event()
    given_up.set()
    assert asr.transcribe(robotic_mandarin, languages=["zh", "en"], cancel=given_up).passes == 0
    during = threading.Event()
    threading.Timer(0.02, during.set).start()  # while the first decode runs (it takes ~0.4 s)
    assert asr.transcribe(robotic_mandarin, languages=["zh", "en"], cancel=during).passes == 1
