"""The live loop on real speech: a turn per utterance, silence is no turn, and barge-in stops her
and leaves in history what the listener heard."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import pytest

from companion.events import AudioEvent, InterruptedEvent, TranscriptEvent
from companion.voice.asr import Transcript
from companion.voice.audio import decode_audio
from companion.voice.loop import IncrementalTranscript, LiveLoop, VirtualPlayer, VoiceAgent
from companion.voice.metrics import wer
from companion.voice.pipeline import SpeechStage, TextStage
from companion.voice.vad import Endpointer, SileroVAD, VadEvent
from tests.voice.conftest import ScriptedLLM

pytestmark = pytest.mark.slow
STORY = " ".join(f"On night {n} the baker who loved the stars climbed to the roof again." for n in range(1, 13)) + " "


async def feed(loop: LiveLoop, samples: np.ndarray, realtime: bool) -> None:
    step = 320  # 20 ms
    for i in range(0, len(samples), step):
        await loop.feed(samples[i : i + step])
        await asyncio.sleep(0.02 if realtime else 0)


def make_loop(make_companion, whisper, piper, llm, events, **kwargs):
    companion = make_companion(llm, [TextStage(), SpeechStage(piper)])
    agent = VoiceAgent(companion, whisper, companion.key(channel="voice"), languages=["en"])
    player = VirtualPlayer()
    loop = LiveLoop(agent, Endpointer(SileroVAD(), silence_ms=400), player, events.append, **kwargs)
    return loop, companion, player


def test_barge_in_stops_her_and_history_keeps_what_was_heard(make_companion, whisper, piper, jfk, speech_dir):
    events: list = []
    llm = ScriptedLLM(STORY, delay=0.04)
    loop, companion, player = make_loop(make_companion, whisper, piper, llm, events, barge_in_ms=200)
    first_phrase = jfk[: int(16000 * 2.3)]
    # the user cuts in with 2 s of continuous speech (JFK's "ask not" is 0.5 s and then a pause: the
    # VAD heard it or not depending on how the frames fell)
    second_phrase = decode_audio(speech_dir / "librispeech-1995-1837-0001.wav").samples[: 16000 * 2]
    silence = np.zeros(16000, dtype=np.float32)

    silenced: list[bool] = []

    async def scenario():
        await feed(loop, np.concatenate([silence[:8000], first_phrase, silence[:9600]]), realtime=False)
        for _ in range(3000):  # she starts talking (a minute at most: CI machines are slow and shared)
            await feed(loop, silence[:320], realtime=True)
            if player.playing:
                break
        assert player.playing, "she never started talking"
        await feed(loop, np.concatenate([silence, silence]), realtime=True)  # two seconds of her voice
        await feed(loop, second_phrase, realtime=True)  # the user cuts in...
        silenced.append(not player.playing)  # (her answer to the cut-in may start playing later)
        await feed(loop, silence, realtime=True)  # ...and stops: that is the next turn
        await loop.close()

    asyncio.run(scenario())
    transcripts = [e.text for e in events if isinstance(e, TranscriptEvent)]
    assert transcripts and "fellow Americans" in transcripts[0]
    interrupted = [e for e in events if isinstance(e, InterruptedEvent)]
    assert len(interrupted) == 1
    heard = interrupted[0].heard_text
    assert heard and STORY.startswith(heard.rstrip("—").rstrip())
    assert len(heard) < len(STORY) / 2
    assert llm.cancelled.is_set()  # generation stopped too
    assert silenced == [True]
    rows = companion.history.export_user("local")
    assert [r["role"] for r in rows[:3]] == ["user", "assistant", "user"]
    assert rows[1]["content"] == heard and rows[1]["interrupted"] == 1
    assert "first" in rows[2]["content"].lower()  # what the user said when cutting in is the next turn
    assert loop.timings[0].transcript is not None and loop.timings[0].first_audio is not None


def test_silence_and_noise_start_no_turn(make_companion, whisper, piper):
    events: list = []
    llm = ScriptedLLM("Hi.", delay=0)
    loop, _, _ = make_loop(make_companion, whisper, piper, llm, events)
    rng = np.random.default_rng(3)
    quiet = np.concatenate([np.zeros(16000 * 2), rng.normal(0, 0.005, 16000 * 2)]).astype(np.float32)

    async def scenario():
        await feed(loop, quiet, realtime=False)
        for event in loop.endpointer.flush():
            await loop._handle(event)
        await loop.close()

    asyncio.run(scenario())
    assert events == [] and llm.requests == []


def test_a_whole_turn_is_heard_and_spoken(make_companion, whisper, piper, jfk):
    events: list = []
    llm = ScriptedLLM("[joy] Thank you! That was a fine speech.", delay=0.01)
    loop, companion, player = make_loop(make_companion, whisper, piper, llm, events)
    player.speed = 50.0  # play fast: this test is about the flow, not the clock

    async def frames():
        for chunk in np.array_split(np.concatenate([jfk[: int(16000 * 2.3)], np.zeros(16000, np.float32)]), 100):
            yield chunk

    asyncio.run(loop.run(frames()))
    kinds = [e.type for e in events]
    assert kinds[0] == "transcript" and "audio" in kinds and kinds[-1] == "turn_end"
    assert [e.text for e in events if isinstance(e, AudioEvent)] == ["Thank you!", "That was a fine speech."]
    assert companion.history.load(companion.key(channel="voice"))[-1].content.endswith("fine speech.")


@dataclass
class Heard:
    transcript: Transcript
    tail: int  # samples left to transcribe when the utterance ended
    kept_before_end: int
    cuts: list[int]  # where kept pieces ended, in utterance samples
    pauses: int


def hear(endpointer: Endpointer, incremental: IncrementalTranscript, speech: np.ndarray) -> Heard:
    """One utterance through the endpointer as the live loop hears it: pauses, resumes, its end."""

    async def scenario() -> Heard:
        cuts, pauses = [], 0
        padded = np.concatenate([speech, np.zeros(16000 * 3, dtype=np.float32)])
        for i in range(0, len(padded), 320):
            for event in endpointer.feed(padded[i : i + 320]):
                if event.kind == "pause":
                    pauses += 1
                    incremental.pause(event)
                elif event.kind == "resume":
                    incremental.resume(event.time)
                    cuts.append(incremental.kept_end)
                elif event.kind == "end":
                    kept = len(incremental.kept)
                    transcript = await incremental.finish(event)
                    tail = len(event.audio) - incremental.kept_end
                    return Heard(transcript, tail, kept, sorted(set(cuts) - {0}), pauses)
            await asyncio.sleep(0)
        raise AssertionError("the utterance never ended")

    return asyncio.run(scenario())


def test_speech_is_transcribed_in_pieces_while_the_user_speaks(whisper, jfk):
    """JFK pauses between phrases: the phrases before the last pause are transcribed during the
    speech, only the tail is left at the end, and the joined transcript is still exact."""
    agent = VoiceAgent(None, whisper, None, languages=["en", "zh"])
    endpointer = Endpointer(SileroVAD(), silence_ms=2000)  # one utterance with pauses inside
    heard = hear(endpointer, IncrementalTranscript(agent, min_piece_s=1.0), jfk)
    reference = (
        "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
    )
    assert heard.kept_before_end >= 1
    assert heard.tail < len(jfk) / 2  # most of the speech was transcribed before it ended
    assert heard.transcript.language == "en"
    assert wer(reference, heard.transcript.text) <= 0.05


def test_early_pauses_start_work_but_cut_pieces_only_at_long_ones(whisper, speech_dir):
    """The speculative work starts at a short pause (`pause_ms`), but speech is kept as a piece only
    at a pause of `piece_pause_ms`: the same pieces as an endpointer that pauses only then."""
    agent = VoiceAgent(None, whisper, None, languages=["en"])
    speech = decode_audio(speech_dir / "fw_stereo_diarization.wav", channel=0).samples  # one 96-160 ms gap

    def cuts(pause_ms: int, min_pause_s: float) -> Heard:
        endpointer = Endpointer(SileroVAD(), silence_ms=2000, pause_ms=pause_ms)
        return hear(endpointer, IncrementalTranscript(agent, min_piece_s=1.0, min_pause_s=min_pause_s), speech)

    early, late = cuts(96, 0.16), cuts(160, 0.0)
    assert early.pauses > late.pauses  # the short gap starts work only
    # the same pauses cut the pieces (each cut lies in its pause's silence, 96 or 160 ms into it)
    assert early.cuts and len(early.cuts) == len(late.cuts)
    assert all(0 <= b - a <= 0.07 * 16000 for a, b in zip(early.cuts, late.cuts, strict=True))


def test_a_piece_not_kept_is_given_up(whisper, jfk):
    """When the user goes on after a short pause, the pause's transcription is cancelled (the ASR
    then skips what it has not started), so it never holds up the next pause's."""
    agent = VoiceAgent(None, whisper, None, languages=["en"])
    speech = jfk[: 16000 * 2]

    async def scenario() -> tuple[bool, bool]:
        incremental = IncrementalTranscript(agent, min_piece_s=1.0, min_pause_s=0.16)
        incremental.pause(VadEvent("pause", 2.0, speech))
        short = incremental.pending[2]
        incremental.resume(2.1)  # a 0.1 s gap: between words
        incremental.pause(VadEvent("pause", 2.5, speech))
        long = incremental.pending[2]
        incremental.resume(2.8)  # a 0.3 s pause after 2 s of speech: kept
        await asyncio.gather(short, long, return_exceptions=True)
        return short.cancelled(), long.cancelled()

    assert asyncio.run(scenario()) == (True, False)


def test_prefill_leaves_only_generation_to_the_turn(make_companion, model_data_dir):
    """With the llama.cpp backend, the shared prefix is evaluated before the user speaks, and the
    whole turn from the transcript at a pause: the turn then evaluates nothing before its first
    token (it samples from the logits the prefill left)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from companion.llm.llamacpp import LlamaCppLLM, LlamaCppSettings
    from companion.plugins import PluginContext

    llm = LlamaCppLLM(LlamaCppSettings(model="gemma3-270m"), PluginContext(data_dir=model_data_dir))
    companion = make_companion(llm)
    agent = VoiceAgent(companion, None, companion.key(channel="voice"))

    async def turn(text: str) -> str:
        return "".join([e.text async for e in agent.turn(text) if e.type == "text_delta"])

    async def scenario():
        assert await agent.prefill()  # before the user speaks: persona and (empty) history
        await turn("Hello there!")
        warm = llm.last_stats
        assert await agent.prefill()  # after the turn: its exchange is now history
        assert await agent.prefill("What do you like to bake?")  # the transcript at a pause
        await turn("What do you like to bake?")
        return warm, llm.last_stats

    warm, spoken = asyncio.run(scenario())
    assert warm.reused_tokens > 20  # the persona was ready
    assert spoken.reused_tokens == spoken.prompt_tokens
