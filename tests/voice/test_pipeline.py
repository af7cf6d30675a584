"""The speaking half of a turn: sentences and expressions out of the stream, speech while the LLM
still writes, failures that keep the text, cancellation that stops the LLM."""

from __future__ import annotations

import asyncio
import time

import pytest

from companion.events import AudioEvent, ErrorEvent, ExpressionEvent, SentenceEvent, TextDeltaEvent, TurnEndEvent
from companion.voice.audio import read_wav_b64
from companion.voice.pipeline import (
    SpeechStage,
    TextStage,
    frontend_processors,
    heard_text,
    speech_processors,
    tts_spec,
)
from tests.voice.conftest import ScriptedLLM, collect

REPLY = "[joy] Welcome to Moon Rabbit Bakery! *waves* The buns come out at three. [sad] Sorry, we close at seven."


def test_text_stage_gives_sentences_and_expressions(make_companion):
    companion = make_companion(ScriptedLLM(REPLY, delay=0), [TextStage({"joy": "smile", "sad": "tears"})])
    events = collect(companion.turn(companion.key(), "hello"))
    sentences = [e for e in events if isinstance(e, SentenceEvent)]
    assert [s.text for s in sentences] == [
        "Welcome to Moon Rabbit Bakery!",
        "The buns come out at three.",
        "Sorry, we close at seven.",
    ]
    assert [s.emotion for s in sentences] == ["joy", None, "sad"]
    assert sentences[1].actions == ["waves"]
    expressions = [(e.emotion, e.expression) for e in events if isinstance(e, ExpressionEvent)]
    assert expressions == [("joy", "smile"), ("sad", "tears")]
    assert isinstance(events[-1], TurnEndEvent)
    assert sum(isinstance(e, TextDeltaEvent) for e in events) > 5  # deltas still flow for live text


@pytest.mark.slow
def test_first_sentence_is_spoken_while_the_llm_still_writes(make_companion, piper):
    story = "And then a long story goes on. A baker wakes at four. She kneads the dough alone. The cat watches her. "
    llm = ScriptedLLM("Hello there, friend. " + story, delay=0.08)
    companion = make_companion(llm, [TextStage(first_clause_chars=None), SpeechStage(piper)])

    async def run():
        first_audio = None
        events = []
        async for event in companion.turn(companion.key(), "hi"):
            if isinstance(event, AudioEvent) and first_audio is None:
                first_audio = time.monotonic()
            events.append(event)
        return first_audio, events

    first_audio, events = asyncio.run(run())
    assert llm.finished_at is not None and first_audio < llm.finished_at  # overlap, not one after the other
    audio = [e for e in events if isinstance(e, AudioEvent)]
    sentences = [e for e in events if isinstance(e, SentenceEvent)]
    assert [a.sentence_index for a in audio] == [s.index for s in sentences]
    first = audio[0]
    clip = read_wav_b64(first.audio_wav_b64)
    assert first.sample_rate == clip.sample_rate == 22050
    assert len(first.volumes) == pytest.approx(clip.duration * 1000 / 20, abs=1.5)
    assert max(first.volumes) == 1.0 and min(first.volumes) >= 0.0
    assert isinstance(events[-1], TurnEndEvent)  # the turn ends after its last audio
    assert events.index(audio[-1]) < len(events) - 1


def test_tts_failure_still_delivers_the_text(make_companion):
    class BrokenTTS:
        def languages(self):
            return None

        def synthesize(self, text, language=None):
            raise RuntimeError("voice model crashed")
            yield

    companion = make_companion(ScriptedLLM(REPLY, delay=0), [TextStage(), SpeechStage(BrokenTTS())])
    events = collect(companion.turn(companion.key(), "hello"))
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and errors[0].code == "tts" and "crashed" in errors[0].message
    assert len([e for e in events if isinstance(e, SentenceEvent)]) == 3
    assert isinstance(events[-1], TurnEndEvent) and "Bakery" in events[-1].text


def test_closing_the_stream_stops_the_llm_and_history_says_interrupted(make_companion):
    class SlowTTS:
        def languages(self):
            return None

        def synthesize(self, text, language=None):
            time.sleep(0.05)
            import numpy as np

            from companion.voice.audio import Audio

            yield Audio(np.full(1600, 0.1, dtype=np.float32), 16000)

    llm = ScriptedLLM(" ".join(f"Count {n}." for n in range(1, 151)), delay=0.02)
    companion = make_companion(llm, [TextStage(), SpeechStage(SlowTTS())])
    key = companion.key()

    async def run():
        stream = companion.turn(key, "count")
        async for event in stream:
            if isinstance(event, AudioEvent):
                break
        await stream.aclose()

    asyncio.run(run())
    assert llm.cancelled.is_set() and not llm.finished.is_set()
    rows = companion.history.export_user(key.user)
    assert [r["role"] for r in rows] == ["user", "assistant"]
    assert rows[1]["interrupted"] == 1
    companion.record_heard(key, "One two—")
    assert companion.history.load(key)[-1].content == "One two—"


def test_heard_text():
    spoken = [("Welcome to the bakery!", 1.0), ("The buns come out at three.", 0.5), ("Bye.", 0.0)]
    assert heard_text(spoken) == "Welcome to the bakery! The buns come—"
    assert heard_text([("欢迎光临！", 1.0), ("红豆包刚出炉呢。", 0.5)]) == "欢迎光临！红豆包刚—"
    assert heard_text([("Hello there.", 0.01)]) == ""
    assert heard_text([]) == ""


def test_the_card_picks_the_voice(character, voice_settings, tmp_path):
    spec = tts_spec(character, voice_settings)
    assert spec.plugin == "piper" and spec.options["speed"] == 1.0
    (character.voice_dir / "mine.onnx").write_bytes(b"")
    assert tts_spec(character, voice_settings).options["voice"].endswith("voice/mine.onnx")
    voice_settings.voice.fallback_tts = None
    stages = speech_processors(character, voice_settings, with_audio=False)
    assert len(stages) == 1 and isinstance(stages[0], TextStage)


def test_frontends_get_both_stages(make_companion, voice_settings):
    companion = make_companion(ScriptedLLM("Hi."))
    stages = frontend_processors(companion, voice_settings)
    assert [type(s) for s in stages] == [TextStage, SpeechStage]
    assert stages[1].tts.primary.languages() == {"en"}


def test_voice_turns_retrieve_within_the_voice_budget(character, voice_settings, tmp_path):
    """What a voice turn retrieves is read after the user stops, so it gets its own (smaller) budget."""
    from companion.history import HistoryStore
    from companion.session import Companion
    from companion.voice.runner import voice_turn_settings

    class RecordingSource:
        def __init__(self) -> None:
            self.budgets: list[int] = []

        async def build(self, text, *, user_id, recent, budget_tokens, count_tokens):
            self.budgets.append(budget_tokens)
            return []

    def budget_of(settings) -> int:
        source = RecordingSource()
        companion = Companion(
            character=character,
            settings=settings,
            llm=ScriptedLLM("Hi."),
            history=HistoryStore(tmp_path / "history.sqlite3"),
            context_sources=[source],
        )
        asyncio.run(companion.build_prompt(companion.key(), "What do you bake?", "Ann"))
        return source.budgets[0]

    assert budget_of(voice_turn_settings(voice_settings)) == voice_settings.voice.context_budget_tokens == 200
    assert voice_settings.context_budget_tokens == 500  # the chat's own budget is untouched
    voice_settings.voice.context_budget_tokens = None
    assert budget_of(voice_turn_settings(voice_settings)) == 500
